//! Loading a renewed e-Cert from its PKCS#12 file, exporting a certificate, removing an
//! e-Cert. Every refusal (wrong password, key and certificate that do not match, expired
//! certificate, an algorithm the card lacks) happens before the card is touched.

use super::{attr_bytes, attr_ulong, fail, status, with, CardSession, ManagerError, Result};
use crate::applet::piv::KeySlot;
use crate::token::mechanism::{self, PublicKey, VerifyOp};
use crate::token::objects::CertFacts;
use crate::token::{Attr, MechParam, Mechanism, OutBuf};
use cryptoki_sys::*;
use pkcs8::DecodePrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub use super::p12::P12;

/// The private key's template for C_CreateObject, and its public key.
fn key_template(pkcs8: &[u8], slot: KeySlot) -> Result<(Vec<Attr>, PublicKey)> {
    let mut t = vec![
        attr_ulong(CKA_CLASS, CKO_PRIVATE_KEY),
        attr_bytes(CKA_ID, &[slot.cka_id()]),
    ];
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8) {
        let bits = k.size() * 8;
        if !matches!(bits, 2048 | 3072 | 4096) {
            return fail(format!(
                "the card takes RSA keys of 2048, 3072 or 4096 bits, not {bits}"
            ));
        }
        let (Some(p), Some(q), Some(dp), Some(dq), Some(qinv)) = (
            k.primes().first(),
            k.primes().get(1),
            k.dp(),
            k.dq(),
            k.crt_coefficient(),
        ) else {
            return fail("the RSA key lacks its CRT components");
        };
        t.push(attr_ulong(CKA_KEY_TYPE, CKK_RSA));
        for (ty, v) in [
            (CKA_MODULUS, k.n()),
            (CKA_PUBLIC_EXPONENT, k.e()),
            (CKA_PRIVATE_EXPONENT, k.d()),
            (CKA_PRIME_1, p),
            (CKA_PRIME_2, q),
            (CKA_EXPONENT_1, dp),
            (CKA_EXPONENT_2, dq),
            (CKA_COEFFICIENT, &qinv),
        ] {
            t.push(attr_bytes(ty, &Zeroizing::new(v.to_bytes_be())));
        }
        let pk = PublicKey::Rsa(rsa::RsaPublicKey::from(&k));
        return Ok((t, pk));
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(pkcs8) {
        t.push(attr_ulong(CKA_KEY_TYPE, CKK_EC));
        t.push(attr_bytes(
            CKA_EC_PARAMS,
            &mechanism::Curve::P256.ec_params_der(),
        ));
        t.push(attr_bytes(
            CKA_VALUE,
            &Zeroizing::new(k.to_bytes().to_vec()),
        ));
        return Ok((t, PublicKey::P256(k.public_key())));
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_der(pkcs8) {
        t.push(attr_ulong(CKA_KEY_TYPE, CKK_EC));
        t.push(attr_bytes(
            CKA_EC_PARAMS,
            &mechanism::Curve::P384.ec_params_der(),
        ));
        t.push(attr_bytes(
            CKA_VALUE,
            &Zeroizing::new(k.to_bytes().to_vec()),
        ));
        return Ok((t, PublicKey::P384(k.public_key())));
    }
    fail("the key's algorithm is not one the card has (RSA 2048/3072/4096, EC P-256/P-384)")
}

/// The slot an e-Cert belongs in, from its key usage: non-repudiation → signature (9c),
/// encryption only → key management (9d), else authentication (9a).
pub fn slot_for(cert: &CertFacts) -> KeySlot {
    let Some(bits) = cert.key_usage else {
        return KeySlot::AUTHENTICATION;
    };
    let has = |b: u16| bits & (1 << b) != 0;
    if has(1) {
        KeySlot::SIGNATURE
    } else if !has(0) && (has(2) || has(3) || has(4)) {
        KeySlot::KEY_MANAGEMENT
    } else {
        KeySlot::AUTHENTICATION
    }
}

/// Parses a slot name ("9a", "9A", "82").
pub fn parse_slot(s: &str) -> Result<KeySlot> {
    u8::from_str_radix(s.trim_start_matches("0x"), 16)
        .ok()
        .and_then(KeySlot::from_reference)
        .map_or_else(
            || super::fail_usage(format!("{s} is not a PIV key slot (9a, 9c, 9d, 9e, 82–95)")),
            Ok,
        )
}

/// What `tessera import` did.
#[derive(Debug, serde::Serialize)]
pub struct ImportReport {
    /// The slot loaded.
    pub slot: String,
    /// Subject of the loaded certificate.
    pub subject: String,
    /// Where the replaced certificate was saved, if one was replaced.
    pub backup: Option<PathBuf>,
    /// CA certificates stored beside it.
    pub chain: usize,
    /// The new key signed a challenge that the certificate verified.
    pub verified: bool,
}

/// Options of `tessera import`.
pub struct ImportOptions<'a> {
    /// The .p12 file.
    pub file: &'a Path,
    /// Its password.
    pub password: &'a str,
    /// Slot chosen by the user.
    pub slot: Option<KeySlot>,
    /// Load even an expired certificate.
    pub force: bool,
    /// Where to save a replaced certificate.
    pub backup_dir: PathBuf,
}

/// `tessera import FILE.p12`.
pub fn import(card: &CardSession, opts: &ImportOptions<'_>, pin: &[u8]) -> Result<ImportReport> {
    // Everything that can be refused is refused before the card is touched.
    let p12 = super::p12::read(opts.file, opts.password)?;
    let facts = CertFacts::parse(&p12.certificate).ok_or_else(|| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the certificate in the file is not X.509".into(),
    })?;
    let report = status::cert_report(&p12.certificate).ok_or_else(|| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the certificate in the file cannot be read".into(),
    })?;
    if report.state == "expired" && !opts.force {
        return fail(format!(
            "the certificate expired on {} (use --force to load it anyway; the card was not touched)",
            report.not_after
        ));
    }
    let slot = opts.slot.unwrap_or_else(|| slot_for(&facts));
    if slot.retired_number().is_some() {
        return fail(format!(
            "slot {slot} is a retired key slot (Key History keeps old keys there): load an e-Cert into 9a, 9c, 9d or 9e (the card was not touched)"
        ));
    }
    let (template, key_public) = key_template(&p12.key, slot)?;
    let cert_public = PublicKey::from_spki_der(&facts.spki).map_err(|_| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the certificate's public key cannot be read".into(),
    })?;
    if cert_public != key_public {
        return fail("the private key and the certificate in the file do not belong together (the card was not touched)");
    }

    card.login_user(pin)?;
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let backup = match contents.entry(slot).and_then(|e| e.certificate.as_ref()) {
        Some(old) => Some(save_backup(
            &opts.backup_dir,
            &contents.serial,
            slot,
            &old.der,
        )?),
        None => None,
    };
    // Key, certificate and chain as one change: a crash leaves the old e-Cert or the new one.
    let chain: Vec<u8> = p12.chain.concat();
    super::with_card_feature(
        "this card cannot take a new key from a file (it has no key import); your issuer's tool loads renewed certificates (the card was not touched)",
        |lib| lib.load_ecert(card.handle, slot, &template, &p12.certificate, &chain),
    )?;
    let verified = prove_key(card, slot, &cert_public, pin)?;
    Ok(ImportReport {
        slot: slot.to_string(),
        subject: report.subject,
        backup,
        chain: p12.chain.len(),
        verified,
    })
}

/// Saves a copy of a certificate taken off the card (PEM) in `dir`; returns its path.
pub fn save_backup(dir: &Path, serial: &str, slot: KeySlot, der_bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Never overwrite an earlier copy (two replacements within one second get -2, -3, …).
    for n in 1u32.. {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let path = dir.join(format!("tessera-{serial}-{slot}-{stamp}{suffix}.pem"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(pem(der_bytes, "CERTIFICATE").as_bytes())?;
                f.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    fail("no free name for the certificate copy")
}

/// PEM text of DER bytes.
pub fn pem(der_bytes: &[u8], label: &str) -> String {
    use base64ct::{Base64, Encoding};
    let b64 = Base64::encode_string(der_bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The key in `slot` signs a fresh challenge and the certificate's key verifies it.
pub fn prove_key(
    card: &CardSession,
    slot: KeySlot,
    public: &PublicKey,
    pin: &[u8],
) -> Result<bool> {
    let key = card
        .find(&[
            attr_ulong(CKA_CLASS, CKO_PRIVATE_KEY),
            attr_bytes(CKA_ID, &[slot.cka_id()]),
        ])?
        .first()
        .copied()
        .ok_or_else(|| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: format!("no private key in slot {slot} after loading it"),
        })?;
    let flag = |ty| {
        with(|lib| lib.get_attributes(card.handle, key, &[ty]))
            .map(|a| matches!(a.first(), Some(crate::token::AttrAnswer::Value(v)) if v.first() == Some(&1)))
    };
    let always = flag(CKA_ALWAYS_AUTHENTICATE)?;
    let context_login = |lib: &crate::token::Library| {
        if always {
            lib.login(card.handle, CKU_CONTEXT_SPECIFIC, pin)?;
        }
        Ok(())
    };
    let mut challenge = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
    let info = public.key_info();
    if flag(CKA_SIGN)? {
        // A signing key signs a fresh challenge that the certificate's key verifies.
        let mech = Mechanism {
            ty: mechanism::signing_mechanism(&info, mechanism::HashAlg::Sha256),
            param: MechParam::None,
        };
        let signature = with(|lib| {
            lib.sign_init(card.handle, &mech, key)?;
            context_login(lib)?;
            let len = lib.sign(card.handle, &challenge, OutBuf::Query)?;
            let mut sig = vec![0u8; len];
            let n = lib.sign(card.handle, &challenge, OutBuf::Into(&mut sig))?;
            sig.truncate(n);
            Ok(sig)
        })?;
        let mut op = VerifyOp::new(&mech, info)?;
        op.update(&challenge)?;
        return Ok(op.verify(public, &signature).is_ok());
    }
    match public {
        // An encryption key decrypts a challenge encrypted to the certificate's key.
        PublicKey::Rsa(_) => {
            let mech = Mechanism {
                ty: CKM_RSA_PKCS,
                param: MechParam::None,
            };
            let ciphertext = mechanism::encrypt(&mech, public, &challenge)?;
            let plain = with(|lib| {
                lib.decrypt_init(card.handle, &mech, key)?;
                context_login(lib)?;
                let mut out = Zeroizing::new(vec![0u8; ciphertext.len()]);
                let n = lib.decrypt(card.handle, &ciphertext, OutBuf::Into(&mut out))?;
                out.truncate(n);
                Ok(out)
            })?;
            Ok(plain.as_slice() == challenge)
        }
        // A key-agreement key agrees on the same secret as the host with an ephemeral key.
        PublicKey::P256(card_pub) => {
            let host = p256::ecdh::EphemeralSecret::random(&mut rand::rngs::OsRng);
            let expected = host.diffie_hellman(card_pub);
            let point = p256::EncodedPoint::from(host.public_key());
            let got = derive_on_card(card, key, point.as_bytes(), &context_login)?;
            Ok(got.as_slice() == expected.raw_secret_bytes().as_slice())
        }
        PublicKey::P384(card_pub) => {
            let host = p384::ecdh::EphemeralSecret::random(&mut rand::rngs::OsRng);
            let expected = host.diffie_hellman(card_pub);
            let point = p384::EncodedPoint::from(host.public_key());
            let got = derive_on_card(card, key, point.as_bytes(), &context_login)?;
            Ok(got.as_slice() == expected.raw_secret_bytes().as_slice())
        }
    }
}

/// ECDH on the card with the key `key` and the host's point; returns the shared secret.
fn derive_on_card(
    card: &CardSession,
    key: CK_OBJECT_HANDLE,
    point: &[u8],
    context_login: &dyn Fn(&crate::token::Library) -> crate::token::Result<()>,
) -> Result<Zeroizing<Vec<u8>>> {
    let mech = Mechanism {
        ty: CKM_ECDH1_DERIVE,
        param: MechParam::Ecdh {
            kdf: CKD_NULL,
            shared_data: Vec::new(),
            public_data: point.to_vec(),
        },
    };
    let template = [
        attr_ulong(CKA_CLASS, CKO_SECRET_KEY),
        attr_ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET),
        super::attr_bool(CKA_SENSITIVE, false),
        super::attr_bool(CKA_EXTRACTABLE, true),
    ];
    with(|lib| {
        context_login(lib)?;
        let derived = lib.derive_key(card.handle, &mech, key, &template)?;
        let value = lib.get_attributes(card.handle, derived, &[CKA_VALUE])?;
        let _ = lib.destroy_object(card.handle, derived);
        match value.into_iter().next() {
            Some(crate::token::AttrAnswer::Value(v)) => Ok(Zeroizing::new(v)),
            _ => Err(crate::token::Error::new(CKR_FUNCTION_FAILED)),
        }
    })
}

/// Output format of `tessera export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Base64 text.
    Pem,
    /// Binary.
    Der,
}

/// The slot of the card's e-Cert when the user names none: the one primary slot with a
/// certificate; with several, the user must choose (the message lists them).
pub fn ecert_slot(card: &CardSession) -> Result<KeySlot> {
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let with_cert: Vec<KeySlot> = contents
        .entries
        .iter()
        .filter(|e| e.certificate.is_some() && e.slot.retired_number().is_none())
        .map(|e| e.slot)
        .collect();
    match with_cert.as_slice() {
        [one] => Ok(*one),
        [] => fail("the card holds no certificate (see `tessera status`)"),
        several => fail(format!(
            "the card holds several certificates ({}): name one with --slot",
            several
                .iter()
                .map(|s| format!("{s} {}", super::status::slot_name(*s)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `tessera export`: the certificate of `slot` (and its stored chain).
pub fn export(card: &CardSession, slot: KeySlot, format: Format, chain: bool) -> Result<Vec<u8>> {
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let Some(cert) = contents.entry(slot).and_then(|e| e.certificate.clone()) else {
        return fail(format!("slot {slot} holds no certificate"));
    };
    let mut ders = vec![cert.der];
    if chain {
        let stored = with(|lib| lib.read_chain(card.handle, slot))?;
        for c in super::cms::split_certificates(&stored)? {
            ders.push(der::Encode::to_der(&c).map_err(|e| {
                ManagerError::new(
                    super::ErrorClass::Damaged,
                    format!("the stored chain is damaged: {e}"),
                )
            })?);
        }
    }
    Ok(match format {
        Format::Pem => ders
            .iter()
            .map(|d| pem(d, "CERTIFICATE"))
            .collect::<String>()
            .into_bytes(),
        Format::Der => ders.concat(),
    })
}

/// `tessera delete`: removes the e-Cert (key, certificate and chain) from `slot`, as one
/// change.
pub fn delete(card: &CardSession, slot: KeySlot, pin: &[u8]) -> Result<()> {
    card.login_user(pin)?;
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let hidden = contents.problems.iter().any(|p| p.slot() == Some(slot));
    if contents.entry(slot).is_none() && !hidden {
        return fail(format!("slot {slot} is already empty"));
    }
    super::with_card_feature(
        "this card cannot delete a key (it has no MOVE KEY); the card was not touched",
        |lib| lib.clear_slot(card.handle, slot),
    )
}
