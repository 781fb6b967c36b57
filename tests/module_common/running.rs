//! A long-running PKCS#11 client across a change by another process (issue: every program
//! sees a change): the client reads the card's e-Cert, another process replaces it with
//! `tessera import`, and the client — same module instance, same session — must then find the
//! new certificate by its next C_FindObjectsInit and sign with the matching key.

use super::*;
use sha2::Digest;
use std::process::Command as Process;

/// The new e-Cert for the other process to import: a P-256 key and a self-signed certificate
/// (made with openssl, as a CA would hand it out), as a .p12 with a password file. Returns
/// (the .p12, its password file, the certificate DER).
pub fn new_ecert(dir: &Path, cn: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = Process::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let key = dir.join("new.key.pem");
    let cert = dir.join("new.cert.pem");
    let p12 = dir.join("new.p12");
    let pw = dir.join("new.pw");
    std::fs::write(&pw, "long-running\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-days",
        "30",
        "-subj",
        &format!("/CN={cn}"),
        "-addext",
        "keyUsage=critical,digitalSignature",
    ]);
    run(&[
        "pkcs12",
        "-export",
        "-inkey",
        key.to_str().unwrap(),
        "-in",
        cert.to_str().unwrap(),
        "-out",
        p12.to_str().unwrap(),
        "-passout",
        &format!("file:{}", pw.display()),
    ]);
    let der = run(&["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"]);
    (p12, pw, der)
}

/// Runs `tessera CARD_ARGS import --slot 9a` of `p12` (password file `pw`) with the factory
/// PIN from a file, as another process; panics with its error output when it fails.
pub fn tessera_import(card_args: &[&std::ffi::OsStr], p12: &Path, pw: &Path) {
    let dir = p12.parent().unwrap();
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let out = Process::new(env!("CARGO_BIN_EXE_tessera"))
        .args(card_args)
        .args(["import", "--slot", "9a", "--password-file"])
        .arg(pw)
        .arg("--pin-file")
        .arg(&pin_file)
        .arg(p12)
        .env_remove("TESSERA_VCARD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tessera import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The uncompressed EC point of a P-256 certificate's key.
fn cert_point(der: &[u8]) -> Vec<u8> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

/// Runs the scenario on session `s` (read/write, logged in as the user, on the card that
/// `import` changes). `import(p12, password_file)` runs the other process.
pub fn running_client_sees_an_import(s: &Session, dir: &Path, import: impl FnOnce(&Path, &Path)) {
    // The e-Cert the client starts with: a key generated through this very session.
    let (public, _) = generate_ec(s, 0x01, Curve::P256);
    let before = certificate_for(
        &ec_spki(Curve::P256, &ec_point(s, public)),
        "Before",
        false,
        false,
    );
    create_certificate(s, 0x01, &before);
    let cert = object(s, ObjectClass::CERTIFICATE, 0x01);
    assert_eq!(attr_bytes(s, cert, AttributeType::Value), before);

    let (p12, pw, after) = new_ecert(dir, "After");
    import(&p12, &pw);

    // The same session, its next C_FindObjectsInit: the new certificate, byte for byte.
    let cert = object(s, ObjectClass::CERTIFICATE, 0x01);
    assert_eq!(
        attr_bytes(s, cert, AttributeType::Value),
        after,
        "a running program sees the certificate another process imported"
    );
    let private = object(s, ObjectClass::PRIVATE_KEY, 0x01);
    let message = b"signed after another program replaced the e-Cert";
    let hashed = sha2::Sha256::digest(message);
    let signature = match s.sign(&Mechanism::Ecdsa, private, &hashed) {
        Ok(sig) => sig,
        // Through pcscd the other program logged the card out when it finished (PIV's PIN
        // state belongs to the card): the application asks for the PIN again, as it would.
        Err(Error::Pkcs11(RvError::UserNotLoggedIn, _)) => {
            s.login(cryptoki::session::UserType::User, Some(&pin(PIN)))
                .expect("log in again");
            s.sign(&Mechanism::Ecdsa, private, &hashed).expect("sign")
        }
        Err(e) => panic!("sign after the import: {e}"),
    };
    verify_ecdsa(Curve::P256, &cert_point(&after), &hashed, &signature);
}
