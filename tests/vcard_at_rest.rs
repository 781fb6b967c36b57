//! The virtual card's file at rest (issue 11, point 2): created 0600 and kept so across every
//! write, temporary copies 0600 and gone after a killed writer, no secret in the clear after
//! `tessera vcard init` and after `tessera import` (PIN, PUK, management key, EC scalar, RSA
//! primes, searched for in hex and ASCII), format-1 files migrated on their first write, and
//! `tessera doctor` warning about a card file others can read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tessera::card::apdu::{exchange, Command as Apdu};
use tessera::card::Transport;
use tessera::vcard::{CardFile, CardState, VirtualTransport};

const PIN: &str = "123456";
const PUK: &str = "12345678";
const MGMT_HEX: &str = "010203040506070801020304050607080102030405060708";

fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env_remove("TESSERA_VCARD").env("TESSERA_LOG", "off");
    c
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tessera");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Fails when `secret` appears in the file in upper- or lower-case hex, or (for a printable
/// secret) as a JSON string or number of its own.
fn assert_absent(file: &Path, what: &str, secret: &[u8]) {
    let text = std::fs::read_to_string(file).unwrap().to_lowercase();
    let hex = hex::encode(secret);
    assert!(
        !text.contains(&hex),
        "{what} in the clear (hex) in {}",
        file.display()
    );
    if let Ok(ascii) = std::str::from_utf8(secret) {
        for spelled in [
            format!("\"{ascii}\""),
            format!(": {ascii},"),
            format!(": {ascii}\n"),
        ] {
            assert!(!text.contains(&spelled), "{what} in the clear: {spelled}");
        }
    }
}

fn assert_factory_secrets_absent(file: &Path) {
    assert_absent(file, "PIN", PIN.as_bytes());
    assert_absent(file, "PUK", PUK.as_bytes());
    assert_absent(file, "management key", &hex::decode(MGMT_HEX).unwrap());
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".tmp."))
        })
        .collect()
}

/// A key, a self-signed certificate with `usage` and a .p12 of both (by openssl, as users
/// get them).
fn p12(dir: &Path, name: &str, key_pem: &str, usage: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let out = dir.join(format!("{name}.p12"));
    std::fs::write(&key, key_pem).unwrap();
    let status = Command::new("openssl")
        .args(["req", "-x509", "-new", "-days", "30", "-subj"])
        .arg(format!("/CN=At rest {name}"))
        .args(["-addext", &format!("keyUsage=critical,{usage}")])
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:transport"])
        .arg("-inkey")
        .arg(&key)
        .arg("-in")
        .arg(&cert)
        .arg("-out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[test]
fn init_and_import_keep_the_file_0600_and_nothing_secret_in_the_clear() {
    use pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::traits::PrivateKeyParts;

    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.json");
    run_ok(
        tessera()
            .args(["vcard", "init"])
            .arg(&card)
            .args(["--serial", "97531"]),
    );
    assert_eq!(mode(&card), 0o600, "after init");
    assert_factory_secrets_absent(&card);

    let ec = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let ec_p12 = p12(
        dir.path(),
        "ec",
        &ec.to_pkcs8_pem(LineEnding::LF).unwrap(),
        "digitalSignature",
    );
    let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let rsa_p12 = p12(
        dir.path(),
        "rsa",
        &rsa.to_pkcs8_pem(LineEnding::LF).unwrap(),
        "nonRepudiation",
    );
    let (pin, pw) = (dir.path().join("pin"), dir.path().join("pw"));
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    std::fs::write(&pw, "transport\n").unwrap();
    // A card file that others could read (as every file of earlier versions was) becomes 0600
    // on the next write, and so does its lock.
    std::fs::set_permissions(&card, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lock = dir.path().join("card.json.lock");
    if lock.exists() {
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let doctor = tessera()
        .arg("--vcard")
        .arg(&card)
        .arg("doctor")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("card.json") && l.contains("644")),
        "doctor warns about a card file others can read:\n{report}"
    );
    assert!(
        report.contains(&format!("fix: chmod 600 {}", card.display())),
        "{report}"
    );
    for p12 in [&ec_p12, &rsa_p12] {
        run_ok(
            tessera()
                .arg("--vcard")
                .arg(&card)
                .arg("--password-file")
                .arg(&pw)
                .arg("--pin-file")
                .arg(&pin)
                .arg("import")
                .arg(p12)
                .arg("--backup-dir")
                .arg(dir.path().join("backup")),
        );
        assert_eq!(mode(&card), 0o600, "after importing {}", p12.display());
        assert_eq!(mode(&lock), 0o600, "the lock file");
    }
    assert_factory_secrets_absent(&card);
    assert_absent(&card, "EC scalar", &ec.to_bytes());
    for (what, value) in [
        ("RSA p", &rsa.primes()[0]),
        ("RSA q", &rsa.primes()[1]),
        ("RSA d", rsa.d()),
    ] {
        assert_absent(&card, what, &value.to_bytes_be());
    }
    assert!(temporaries(dir.path()).is_empty());
    let doctor = tessera()
        .arg("--vcard")
        .arg(&card)
        .arg("doctor")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(!report.contains("chmod 600"), "{report}");
}

/// The writer the kill loop kills: rewrites a large card as fast as it can until killed. It
/// does nothing unless started by that test.
#[test]
fn at_rest_writer_child() {
    let Some(path) = std::env::var_os("TESSERA_AT_REST_WRITER") else {
        return;
    };
    let mut file = CardFile::open(PathBuf::from(path)).unwrap();
    for n in 0u32.. {
        file.update(|s| {
            s.objects.insert(0x5FC10A, n.to_be_bytes().to_vec());
            ((), true)
        })
        .unwrap();
    }
}

#[test]
fn a_killed_writer_leaves_no_copy_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.json");
    let mut state = CardState::factory(86420);
    // A large card, so that writes take long enough to be cut.
    for tag in 0x5FC10B..0x5FC120u32 {
        state.objects.insert(
            tag,
            tessera::vcard::state::certificate_object(&[0x30; 3000]),
        );
    }
    let mut file = CardFile::create(&card, &state).unwrap();
    let mut leftovers = 0;
    for round in 0..30u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "at_rest_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESSERA_AT_REST_WRITER", &card)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + (round * 7919) % 60));
        child.kill().unwrap();
        child.wait().unwrap();
        for t in temporaries(dir.path()) {
            leftovers += 1;
            assert_eq!(mode(&t), 0o600, "a killed writer's copy {}", t.display());
        }
        assert_eq!(mode(&card), 0o600);
        // The next writer removes what the killed one left.
        file.update(|s| {
            s.serial = 86420;
            s.objects.remove(&0x5FC10A);
            ((), true)
        })
        .unwrap();
        let left = temporaries(dir.path());
        assert!(left.is_empty(), "left after the next write: {left:?}");
    }
    eprintln!("{leftovers} copies left by killed writers, all 0600 and removed");
    CardFile::open(&card).unwrap();
}

/// A format-1 file (secrets in plain hex, 0644) works as it is, is migrated on its first write,
/// and its PIN-protected key, sealed at migration without the PIN, signs after VERIFY.
#[test]
fn a_format_1_file_is_migrated_on_its_first_write() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use pkcs8::EncodePrivateKey;

    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("old.json");
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pkcs8 = key.to_pkcs8_der().unwrap();
    let legacy = format!(
        r#"{{
  "serial": 1357,
  "pin": {{ "value": "{pin}", "tries_left": 2, "max_tries": 3 }},
  "puk": {{ "value": "{puk}", "tries_left": 3, "max_tries": 3 }},
  "management_key": {{ "algorithm": "triple-des", "key": "{MGMT_HEX}", "touch_policy": "never" }},
  "objects": {{}},
  "keys": {{
    "9A": {{ "algorithm": "ecc-p256", "private_key": "{key}", "pin_policy": "once",
             "touch_policy": "never", "origin": "imported" }}
  }}
}}"#,
        pin = hex::encode_upper(PIN),
        puk = hex::encode_upper(PUK),
        key = hex::encode_upper(pkcs8.as_bytes()),
    );
    std::fs::write(&card, legacy).unwrap();
    std::fs::set_permissions(&card, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut t = VirtualTransport::open(&card).unwrap();
    let digest = [0x5Au8; 32];
    let mut signature = Vec::new();
    t.transaction(&mut |ch| {
        let select = [0xA0, 0x00, 0x00, 0x03, 0x08];
        assert!(
            exchange(ch, &Apdu::new(0xA4, 0x04, 0x00).with_data(&select))?
                .sw
                .is_success()
        );
        // Reading needs no write: the file stays as it was until something changes.
        let r = exchange(ch, &Apdu::new(0x20, 0x00, 0x80))?;
        assert_eq!(u16::from(r.sw), 0x63C2);
        let mut pin = PIN.as_bytes().to_vec();
        pin.resize(8, 0xFF);
        let r = exchange(ch, &Apdu::new(0x20, 0x00, 0x80).with_data(&pin))?;
        assert!(r.sw.is_success(), "{:?}", r.sw);
        let mut template = vec![0x7C, 0x24, 0x82, 0x00, 0x81, 0x20];
        template.extend_from_slice(&digest);
        let r = exchange(
            ch,
            &Apdu::new(0x87, 0x11, 0x9A)
                .with_data(&template)
                .with_le(Some(256)),
        )?;
        assert!(r.sw.is_success(), "{:?}", r.sw);
        signature = r.data.to_vec();
        Ok(())
    })
    .unwrap();
    // 7C L 82 L DER-signature
    let der = &signature[4..];
    let sig = p256::ecdsa::Signature::from_der(der).unwrap();
    p256::ecdsa::VerifyingKey::from(key.public_key())
        .verify_prehash(&digest, &sig)
        .unwrap();

    // VERIFY restored the PIN's tries: the first write stored the card in format 2, 0600.
    assert_eq!(mode(&card), 0o600);
    let text = std::fs::read_to_string(&card).unwrap();
    assert!(text.contains("\"format\": 2"), "{text}");
    assert_factory_secrets_absent(&card);
    assert_absent(&card, "EC scalar", &key.to_bytes());
    let state = CardFile::open(&card)
        .unwrap()
        .read(|s| (s.clone(), false))
        .unwrap();
    assert_eq!(state.pin.tries_left, 3);
    assert!(state.keys[&0x9A].is_sealed_to_storage());
}
