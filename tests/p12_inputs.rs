//! PKCS#12 files as others write them, and as an attacker would: the manager's reader
//! (`tessera::manager::p12`) against fixtures that the openssl CLI makes at test time
//! (every MAC digest, PBES2 cipher and legacy PKCS#12 PBE OpenSSL 3 writes, with its legacy
//! provider) and hostile files assembled here (CA certificates that name each other as issuer,
//! a key bag without localKeyID, truncated, foreign and oversized files). Each test asserts the
//! key and certificates read equal what openssl wrote, or the exact error variant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tessera::manager::p12::{self, P12File, Problem, WriteOptions};

const PASSWORD: &str = "envelope-2468";

/// Runs openssl in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (openssl 3 with its legacy provider) must be installed");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A test CA (P-256) and a holder (RSA-2048 or P-256) whose certificate it issued.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(holder_alg: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("pw"), format!("{PASSWORD}\n")).unwrap();
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=Test CA",
                "-days",
                "30",
                "-out",
                "ca.pem",
            ],
        );
        match holder_alg {
            "rsa" => openssl(d, &["genrsa", "-out", "holder.key", "2048"]),
            _ => openssl(
                d,
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    "holder.key",
                ],
            ),
        };
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                "holder.key",
                "-subj",
                "/CN=Holder",
                "-out",
                "holder.csr",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "holder.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "7",
                "-days",
                "30",
                "-out",
                "holder.pem",
            ],
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn der_of_cert(&self, name: &str) -> Vec<u8> {
        openssl(self.dir.path(), &["x509", "-in", name, "-outform", "DER"])
    }

    fn pkcs8_of_key(&self, name: &str) -> Vec<u8> {
        openssl(
            self.dir.path(),
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", name, "-outform", "DER",
            ],
        )
    }

    /// `openssl pkcs12 -export` of the holder with the CA, with extra options; returns the file.
    fn export(&self, name: &str, options: &[&str]) -> PathBuf {
        let mut args = vec![
            "pkcs12",
            "-export",
            "-inkey",
            "holder.key",
            "-in",
            "holder.pem",
            "-certfile",
            "ca.pem",
            "-passout",
            "file:pw",
            "-out",
            name,
        ];
        args.extend_from_slice(options);
        openssl(self.dir.path(), &args);
        self.path(name)
    }
}

fn problem(r: Result<impl Sized, p12::P12Error>) -> Problem {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            // every message names the file
            assert!(!e.to_string().is_empty());
            e.problem().clone()
        }
    }
}

#[test]
fn every_protection_openssl_writes_opens_to_what_openssl_wrote() {
    let pki = Pki::new("rsa");
    let key = pki.pkcs8_of_key("holder.key");
    let cert = pki.der_of_cert("holder.pem");
    let ca = pki.der_of_cert("ca.pem");
    let variants: &[(&str, &[&str])] = &[
        ("default (PBES2 AES-256, PBKDF2-SHA-256, MAC SHA-256)", &[]),
        ("MAC SHA-1", &["-macalg", "sha1"]),
        ("MAC SHA-224", &["-macalg", "sha224"]),
        ("MAC SHA-384", &["-macalg", "sha384"]),
        ("MAC SHA-512", &["-macalg", "sha512"]),
        ("MAC SHA-512/256", &["-macalg", "sha512-256"]),
        ("MAC MD5", &["-macalg", "md5"]),
        ("legacy: 3DES key, RC2-40 certificates", &["-legacy"]),
        (
            "RC4-128 certificates, 2-key 3DES key",
            &[
                "-legacy",
                "-certpbe",
                "PBE-SHA1-RC4-128",
                "-keypbe",
                "PBE-SHA1-2DES",
            ],
        ),
        (
            "RC4-40 certificates, RC2-40 key",
            &[
                "-legacy",
                "-certpbe",
                "PBE-SHA1-RC4-40",
                "-keypbe",
                "PBE-SHA1-RC2-40",
            ],
        ),
        (
            "RC2-128 certificates, RC4-128 key",
            &[
                "-legacy",
                "-certpbe",
                "PBE-SHA1-RC2-128",
                "-keypbe",
                "PBE-SHA1-RC4-128",
            ],
        ),
        (
            "PBES2 AES-128 key, AES-192 certificates",
            &["-keypbe", "AES-128-CBC", "-certpbe", "AES-192-CBC"],
        ),
        (
            "PBES2 DES-EDE3-CBC key, certificates unencrypted",
            &["-keypbe", "DES-EDE3-CBC", "-certpbe", "NONE"],
        ),
        (
            "nothing encrypted, no MAC",
            &["-keypbe", "NONE", "-certpbe", "NONE", "-nomac"],
        ),
        ("encrypted, no MAC", &["-nomac"]),
        ("one iteration", &["-iter", "1"]),
    ];
    for (n, (what, options)) in variants.iter().enumerate() {
        let file = pki.export(&format!("v{n}.p12"), options);
        let p12 = p12::read(&file, PASSWORD).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(*p12.key, key, "{what}: the key openssl wrote");
        assert_eq!(p12.certificate, cert, "{what}: the holder's certificate");
        assert_eq!(p12.chain, vec![ca.clone()], "{what}: the CA");
    }
}

#[test]
fn wrong_password_is_wrong_password_only_when_the_file_says_so() {
    let pki = Pki::new("ec");
    for (name, options) in [
        ("mac.p12", &[][..]),
        ("legacy-mac.p12", &["-legacy"][..]),
        ("aes-nomac.p12", &["-nomac"][..]),
        (
            "rc4-nomac.p12",
            &[
                "-legacy",
                "-certpbe",
                "PBE-SHA1-RC4-128",
                "-keypbe",
                "PBE-SHA1-RC4-40",
                "-nomac",
            ][..],
        ),
    ] {
        let file = pki.export(name, options);
        let opened = P12File::open(&file).unwrap();
        let e = opened.decrypt("not the password").err().unwrap();
        assert!(e.is_wrong_password(), "{name}: {e}");
        assert!(e.to_string().contains("wrong password"), "{name}: {e}");
        // the same object takes the right password afterwards
        assert!(opened.decrypt(PASSWORD).is_ok(), "{name}");
    }
}

#[test]
fn unsupported_algorithms_are_named_before_any_password() {
    let pki = Pki::new("ec");
    for (name, options, named) in [
        (
            "md5des.p12",
            &["-legacy", "-keypbe", "PBE-MD5-DES"][..],
            "pbeWithMD5AndDES-CBC (PKCS#5 v1.5) (1.2.840.113549.1.5.3)",
        ),
        (
            "sha1des.p12",
            &["-legacy", "-keypbe", "PBE-SHA1-DES"][..],
            "pbeWithSHA1AndDES-CBC",
        ),
        (
            "camellia.p12",
            &["-keypbe", "CAMELLIA-256-CBC"][..],
            "CAMELLIA-256-CBC (1.2.392.200011.61.1.1.1.4)",
        ),
        (
            "sha3mac.p12",
            &["-macalg", "sha3-256"][..],
            "SHA3-256 (2.16.840.1.101.3.4.2.8)",
        ),
    ] {
        let file = pki.export(name, options);
        let e = P12File::open(&file)
            .err()
            .unwrap_or_else(|| panic!("{name} opened"));
        match e.problem() {
            Problem::UnsupportedAlgorithm { algorithm } => {
                assert!(algorithm.contains(named), "{name}: {e}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(e.to_string().contains("which Tessera cannot open"), "{e}");
        assert!(
            e.to_string().contains(name),
            "the message names the file: {e}"
        );
    }
}

#[test]
fn damaged_and_foreign_files_are_named_as_such() {
    let pki = Pki::new("ec");
    let good = std::fs::read(pki.export("good.p12", &[])).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = pki.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    for cut in [good.len() / 2, good.len() - 1, 3] {
        let f = write("cut.p12", &good[..cut]);
        match problem(p12::read(&f, PASSWORD)) {
            Problem::Truncated { have, need } => {
                assert_eq!(have, cut);
                assert_eq!(
                    need,
                    (cut > 4).then_some(good.len()),
                    "4 bytes announce the length"
                );
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
        let message = p12::read(&f, PASSWORD).err().unwrap().to_string();
        assert!(
            message.contains("is damaged") && message.contains("truncated"),
            "{message}"
        );
        assert!(!message.contains("password"), "{message}");
    }
    let f = write("empty.p12", b"");
    assert_eq!(problem(p12::read(&f, PASSWORD)), Problem::Empty);
    let pem = std::fs::read(pki.path("holder.pem")).unwrap();
    let f = write("pem.p12", &pem);
    assert!(matches!(
        problem(p12::read(&f, PASSWORD)),
        Problem::NotPkcs12 { .. }
    ));
    let f = write("cert.p12", &pki.der_of_cert("holder.pem"));
    assert!(matches!(
        problem(p12::read(&f, PASSWORD)),
        Problem::NotPkcs12 { .. }
    ));
    let f = write("text.p12", b"hello, this is not a key file\n");
    assert!(matches!(
        problem(p12::read(&f, PASSWORD)),
        Problem::NotPkcs12 { .. }
    ));
    // a well-formed outer structure around garbage: damaged at a named place
    let mut broken = good.clone();
    let len = broken.len();
    broken[len - 60..].fill(0xff);
    let f = write("broken.p12", &broken);
    match problem(p12::read(&f, PASSWORD)) {
        Problem::Damaged { at } => assert!(!at.is_empty()),
        other => panic!("{other:?}"),
    }
    let big = vec![0x30u8; p12::MAX_FILE_BYTES + 1];
    let f = write("big.p12", &big);
    let e = p12::read(&f, PASSWORD).err().unwrap();
    assert_eq!(
        *e.problem(),
        Problem::TooLarge {
            limit: p12::MAX_FILE_BYTES
        }
    );
    assert!(
        e.to_string().contains("big.p12") && e.to_string().contains("1048576"),
        "{e}"
    );
    assert!(matches!(
        problem(p12::read(Path::new("/dev/zero"), PASSWORD)),
        Problem::TooLarge { .. }
    ));
    assert!(matches!(
        problem(p12::read(pki.dir.path(), PASSWORD)),
        Problem::Unreadable { .. }
    ));
    assert!(matches!(
        problem(p12::read(&pki.path("missing.p12"), PASSWORD)),
        Problem::Unreadable { .. }
    ));
}

/// Two CA certificates that name each other as issuer (A issued B, B issued A), and a holder
/// certificate issued by A: the chain builder of the crate Tessera used before looped forever.
fn loop_cas(pki: &Pki) -> (Vec<u8>, Vec<u8>) {
    let d = pki.dir.path();
    for n in ["a", "b"] {
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("loop-{n}.key"),
            ],
        );
    }
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "loop-a.key",
            "-subj",
            "/CN=Loop CA A",
            "-days",
            "30",
            "-out",
            "loop-a0.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "loop-b.key",
            "-subj",
            "/CN=Loop CA B",
            "-out",
            "loop-b.csr",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "loop-b.csr",
            "-CA",
            "loop-a0.pem",
            "-CAkey",
            "loop-a.key",
            "-set_serial",
            "2",
            "-days",
            "30",
            "-out",
            "loop-b.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "loop-a.key",
            "-subj",
            "/CN=Loop CA A",
            "-out",
            "loop-a.csr",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "loop-a.csr",
            "-CA",
            "loop-b.pem",
            "-CAkey",
            "loop-b.key",
            "-set_serial",
            "3",
            "-days",
            "30",
            "-out",
            "loop-a.pem",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "holder.csr",
            "-CA",
            "loop-a.pem",
            "-CAkey",
            "loop-a.key",
            "-set_serial",
            "4",
            "-days",
            "30",
            "-out",
            "loop-holder.pem",
        ],
    );
    (pki.der_of_cert("loop-a.pem"), pki.der_of_cert("loop-b.pem"))
}

#[test]
fn ca_certificates_naming_each_other_end_the_chain() {
    let pki = Pki::new("ec");
    let (a, b) = loop_cas(&pki);
    let key = pki.pkcs8_of_key("holder.key");
    let holder = pki.der_of_cert("loop-holder.pem");
    // as openssl writes it
    std::fs::write(
        pki.path("loop-cas.pem"),
        [
            std::fs::read(pki.path("loop-a.pem")).unwrap(),
            std::fs::read(pki.path("loop-b.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    openssl(
        pki.dir.path(),
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "holder.key",
            "-in",
            "loop-holder.pem",
            "-certfile",
            "loop-cas.pem",
            "-passout",
            "file:pw",
            "-out",
            "loop.p12",
        ],
    );
    // and as Tessera's writer does, CAs in the other order
    let ours = p12::write(
        &key,
        &holder,
        &[b.clone(), a.clone()],
        PASSWORD,
        &WriteOptions::default(),
    )
    .unwrap();
    std::fs::write(pki.path("loop-ours.p12"), ours).unwrap();
    for name in ["loop.p12", "loop-ours.p12"] {
        let start = Instant::now();
        let p12 = p12::read(&pki.path(name), PASSWORD).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            start.elapsed()
        );
        assert_eq!(p12.certificate, holder);
        assert_eq!(
            p12.chain,
            vec![a.clone(), b.clone()],
            "{name}: A then B, then the cycle ends"
        );
        assert_eq!(*p12.key, key);
    }
}

#[test]
fn a_key_bag_without_local_key_id_is_matched_by_public_key() {
    for alg in ["rsa", "ec"] {
        let pki = Pki::new(alg);
        let key = pki.pkcs8_of_key("holder.key");
        let cert = pki.der_of_cert("holder.pem");
        let ca = pki.der_of_cert("ca.pem");
        let options = WriteOptions {
            local_key_id: false,
            ..WriteOptions::default()
        };
        // the CA first, so that "the first certificate" would be the wrong answer
        let bytes = p12::write(&key, &cert, std::slice::from_ref(&ca), PASSWORD, &options).unwrap();
        let file = pki.path("nolocalkeyid.p12");
        std::fs::write(&file, &bytes).unwrap();
        // openssl reads it too (key and certificate)
        let pem = openssl(
            pki.dir.path(),
            &[
                "pkcs12",
                "-in",
                "nolocalkeyid.p12",
                "-passin",
                "file:pw",
                "-nodes",
            ],
        );
        let pem = String::from_utf8_lossy(&pem);
        assert!(
            pem.contains("PRIVATE KEY") && pem.contains("CERTIFICATE"),
            "{pem}"
        );
        assert!(!pem.contains("localKeyID"), "{pem}");
        let p12 = p12::read(&file, PASSWORD).unwrap();
        assert_eq!(*p12.key, key, "{alg}");
        assert_eq!(p12.certificate, cert, "{alg}");
        assert_eq!(p12.chain, vec![ca], "{alg}");
    }
}

#[test]
fn keys_and_certificates_that_do_not_pair() {
    let pki = Pki::new("ec");
    let key = pki.pkcs8_of_key("holder.key");
    let ca = pki.der_of_cert("ca.pem");
    // certificates only
    openssl(
        pki.dir.path(),
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "holder.pem",
            "-certfile",
            "ca.pem",
            "-passout",
            "file:pw",
            "-out",
            "nokey.p12",
        ],
    );
    let e = p12::read(&pki.path("nokey.p12"), PASSWORD).err().unwrap();
    assert_eq!(*e.problem(), Problem::NoPrivateKey);
    assert!(e.to_string().contains("holds no private key"), "{e}");
    // a key with a certificate that is not its own, unpaired: said so
    let options = WriteOptions {
        local_key_id: false,
        ..WriteOptions::default()
    };
    let bytes = p12::write(&key, &ca, &[], PASSWORD, &options).unwrap();
    let file = pki.path("foreign.p12");
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(
        problem(p12::read(&file, PASSWORD)),
        Problem::NoCertificateForKey { certificates: 1 }
    );
    // paired by localKeyID although the keys differ: returned as the file pairs them, for the
    // import to refuse ("do not belong together") with the certificate in hand
    let bytes = p12::write(&key, &ca, &[], PASSWORD, &WriteOptions::default()).unwrap();
    std::fs::write(&file, bytes).unwrap();
    let p12 = p12::read(&file, PASSWORD).unwrap();
    assert_eq!(p12.certificate, ca);
}

#[test]
fn passwords_beyond_ascii_and_empty() {
    let pki = Pki::new("ec");
    let key = pki.pkcs8_of_key("holder.key");
    for (n, password) in ["Grüße, 香港", "emoji 😀 outside the BMP", ""]
        .iter()
        .enumerate()
    {
        std::fs::write(pki.path("pw-u"), password).unwrap();
        // an empty password file is an error to openssl; the empty password is `pass:`
        let passout = if password.is_empty() {
            "pass:"
        } else {
            "file:pw-u"
        };
        for options in [&[][..], &["-legacy"][..]] {
            let name = format!("u{n}.p12");
            let mut args = vec![
                "pkcs12",
                "-export",
                "-inkey",
                "holder.key",
                "-in",
                "holder.pem",
                "-passout",
                passout,
                "-out",
                &name,
            ];
            args.extend_from_slice(options);
            openssl(pki.dir.path(), &args);
            let p12 = p12::read(&pki.path(&name), password)
                .unwrap_or_else(|e| panic!("{password:?} {options:?}: {e}"));
            assert_eq!(*p12.key, key);
            assert!(p12::read(&pki.path(&name), "x")
                .err()
                .unwrap()
                .is_wrong_password());
        }
    }
}

#[test]
fn what_tessera_writes_openssl_reads() {
    let pki = Pki::new("rsa");
    let key = pki.pkcs8_of_key("holder.key");
    let cert = pki.der_of_cert("holder.pem");
    let ca = pki.der_of_cert("ca.pem");
    let bytes = p12::write(&key, &cert, &[ca], PASSWORD, &WriteOptions::default()).unwrap();
    std::fs::write(pki.path("ours.p12"), bytes).unwrap();
    let info = openssl(
        pki.dir.path(),
        &[
            "pkcs12", "-in", "ours.p12", "-passin", "file:pw", "-info", "-nodes",
        ],
    );
    let info = String::from_utf8_lossy(&info);
    assert!(
        info.contains("CN = Holder") || info.contains("CN=Holder"),
        "{info}"
    );
    assert!(info.contains("PRIVATE KEY"), "{info}");
}
