//! `tessera demo`: the whole e-Cert story on a fresh virtual card, every step verified.
//!
//! Runs in-process (no pcscd): a factory-fresh virtual PIV card in a temporary directory is
//! opened through the same core the PKCS#11 module uses. A demo CA (P-256, on the host) issues
//! the holder an RSA-2048 e-Cert as a PKCS#12 file; the manager loads it onto the card
//! ([`certs::import`]), shows the status, makes a CMS signature of a document
//! ([`cms::sign_data`]) and verifies it, asks for renewal with a key generated on the card
//! ([`renew::request`], checked against the CA's CRL), the CA checks the request and issues the
//! renewed certificate, the manager installs it ([`renew::install`]), the old key — now in key
//! history — still decrypts a message encrypted to it before the renewal, and the certificate
//! is exported ([`certs::export`]). Each step prints `step N: … ok` and the run stops at the
//! first step that does not verify.

use super::{
    attr_bytes, attr_ulong, certs, cms, fail, p12, renew, status, CardSession, ManagerError,
};
use super::{Options, Result};
use crate::applet::piv::KeySlot;
use crate::token::mechanism::PublicKey;
use crate::token::Location;
use crate::token::{library, MechParam, Mechanism, OutBuf};
use crate::vcard::{CardFile, CardState};
use cryptoki_sys::*;
use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use p256::ecdsa::signature::{Signer, Verifier};
use serde::Serialize;
use sha1::Digest;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::request::CertReq;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
use x509_cert::{Certificate, TbsCertificate};

/// The demo card's factory PIN.
const PIN: &[u8] = b"123456";
/// The password "from the PIN envelope" that protects the demo's .p12 file.
const P12_PASSWORD: &str = "envelope-2468";
/// The holder's name in the e-Cert.
const HOLDER: &str = "CN=Maria Example,SERIALNUMBER=PNOEE-38001085718,O=Tessera demo,C=EE";
/// The demo CA's name.
const CA_NAME: &str = "CN=Tessera Demo CA,O=Tessera demo,C=EE";

/// `tessera demo`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Runs in-process on a new virtual card: no reader, no pcscd, no network.
Exits 0 only when every step verified. With --keep DIR the card file and every file the
story produced (CA, .p12, signature, request, renewed certificate, export) stay in DIR."
)]
pub struct DemoArgs {
    /// Keep the card and the files in DIR (created; must not hold a card.json yet).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

/// One verified step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Step number.
    pub number: usize,
    /// What the step does.
    pub title: String,
    /// Verified.
    pub ok: bool,
    /// What was seen (or why it failed).
    pub detail: String,
    /// Milliseconds taken.
    pub millis: u128,
}

/// What `tessera demo --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// The directory the files were in (kept only with --keep).
    pub directory: PathBuf,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Every step verified.
    pub passed: bool,
}

fn err(message: impl Into<String>) -> ManagerError {
    ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: message.into(),
    }
}

fn check(cond: bool, what: &str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        fail(format!("check failed: {what}"))
    }
}

fn der_err(e: impl std::fmt::Display) -> ManagerError {
    err(format!("encoding: {e}"))
}

// ---- the demo CA (host side) -----------------------------------------------------------------

/// The demo certification authority: a P-256 key and its self-signed certificate.
struct DemoCa {
    key: p256::ecdsa::SigningKey,
    cert: Certificate,
    der: Vec<u8>,
    next_serial: u8,
}

fn random_serial(tag: u8) -> Result<SerialNumber> {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    if let Some(first) = bytes.first_mut() {
        *first = 0x10 | (tag & 0x0F);
    }
    SerialNumber::new(&bytes).map_err(der_err)
}

fn key_id(spki: &SubjectPublicKeyInfoOwned) -> Result<OctetString> {
    let digest = sha1::Sha1::digest(spki.subject_public_key.raw_bytes());
    OctetString::new(digest.to_vec()).map_err(der_err)
}

fn extension<T: Encode + const_oid::AssociatedOid>(
    value: &T,
    critical: bool,
) -> Result<x509_cert::ext::Extension> {
    Ok(x509_cert::ext::Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(der_err)?).map_err(der_err)?,
    })
}

impl DemoCa {
    /// A new CA: P-256 key, self-signed certificate made with x509-cert's builder.
    fn new() -> Result<Self> {
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(der_err)?;
        let name = Name::from_str(CA_NAME).map_err(der_err)?;
        let validity =
            Validity::from_now(Duration::from_secs(5 * 365 * 86_400)).map_err(der_err)?;
        let cert =
            CertificateBuilder::new(Profile::Root, random_serial(0)?, validity, name, spki, &key)
                .map_err(der_err)?
                .build::<p256::ecdsa::DerSignature>()
                .map_err(der_err)?;
        let der = cert.to_der().map_err(der_err)?;
        Ok(Self {
            key,
            cert,
            der,
            next_serial: 1,
        })
    }

    /// Checks a certificate's signature against the CA's key.
    fn issued(&self, cert: &Certificate) -> bool {
        let Ok(tbs) = cert.tbs_certificate.to_der() else {
            return false;
        };
        let Ok(sig) = p256::ecdsa::DerSignature::from_bytes(cert.signature.raw_bytes()) else {
            return false;
        };
        cert.tbs_certificate.issuer == self.cert.tbs_certificate.subject
            && self.key.verifying_key().verify(&tbs, &sig).is_ok()
    }

    /// The CA's current CRL (DER, no revoked certificates, valid for a week).
    fn crl(&self) -> Result<Vec<u8>> {
        use x509_cert::crl::{CertificateList, TbsCertList};
        let now = std::time::SystemTime::now();
        let time = |t: std::time::SystemTime| x509_cert::time::Time::try_from(t).map_err(der_err);
        let signature = AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        };
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: signature.clone(),
            issuer: self.cert.tbs_certificate.subject.clone(),
            this_update: time(now.checked_sub(Duration::from_secs(60)).unwrap_or(now))?,
            next_update: Some(time(now + Duration::from_secs(7 * 86_400))?),
            revoked_certificates: None,
            crl_extensions: None,
        };
        let tbs_der = tbs.to_der().map_err(der_err)?;
        let sig: p256::ecdsa::DerSignature = self.key.sign(&tbs_der);
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: signature,
            signature: BitString::from_bytes(sig.as_bytes()).map_err(der_err)?,
        }
        .to_der()
        .map_err(der_err)
    }

    /// Issues an e-Cert: keyUsage digitalSignature + keyEncipherment (it signs and decrypts),
    /// valid for `days` days.
    fn issue(
        &mut self,
        subject: Name,
        spki: SubjectPublicKeyInfoOwned,
        days: u64,
    ) -> Result<(Certificate, Vec<u8>)> {
        let ca_spki = &self.cert.tbs_certificate.subject_public_key_info;
        let extensions = vec![
            extension(
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                true,
            )?,
            extension(
                &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
                true,
            )?,
            extension(&SubjectKeyIdentifier(key_id(&spki)?), false)?,
            extension(
                &AuthorityKeyIdentifier {
                    key_identifier: Some(key_id(ca_spki)?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
                false,
            )?,
        ];
        let signature = AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        };
        let serial = random_serial(self.next_serial)?;
        self.next_serial = self.next_serial.wrapping_add(1);
        let mut validity =
            Validity::from_now(Duration::from_secs(days * 86_400)).map_err(der_err)?;
        // Back-date a little: a card's clock and a relying party's are never exact.
        validity.not_before = x509_cert::time::Time::try_from(
            std::time::SystemTime::now()
                .checked_sub(Duration::from_secs(300))
                .unwrap_or_else(std::time::SystemTime::now),
        )
        .map_err(der_err)?;
        let tbs = TbsCertificate {
            version: x509_cert::Version::V3,
            serial_number: serial,
            signature: signature.clone(),
            issuer: self.cert.tbs_certificate.subject.clone(),
            validity,
            subject,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        };
        let tbs_der = tbs.to_der().map_err(der_err)?;
        let sig: p256::ecdsa::DerSignature = self.key.sign(&tbs_der);
        let cert = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: signature,
            signature: BitString::from_bytes(sig.as_bytes()).map_err(der_err)?,
        };
        let der = cert.to_der().map_err(der_err)?;
        Ok((cert, der))
    }
}

// ---- card helpers (the core, as the module uses it) -----------------------------------------

fn mech(ty: CK_MECHANISM_TYPE) -> Mechanism {
    Mechanism {
        ty,
        param: MechParam::None,
    }
}

/// Logs in with the PIN unless the session already is.
fn ensure_login(card: &CardSession) -> Result<()> {
    match library::with(|lib| lib.login(card.handle, CKU_USER, PIN)) {
        Ok(()) => Ok(()),
        Err(e) if e.rv() == CKR_USER_ALREADY_LOGGED_IN => Ok(()),
        Err(e) => Err(card.explain(e.into(), true)),
    }
}

/// Logs the session out, for the use cases that log in themselves with the PIN.
fn fresh_login(card: &CardSession) {
    let _ = library::with(|lib| lib.logout(card.handle));
}

fn private_key(card: &CardSession, slot: KeySlot) -> Result<CK_OBJECT_HANDLE> {
    card.find(&[
        attr_ulong(CKA_CLASS, CKO_PRIVATE_KEY),
        attr_bytes(CKA_ID, &[slot.cka_id()]),
    ])?
    .first()
    .copied()
    .ok_or_else(|| err(format!("no private key in slot {slot}")))
}

/// C_Decrypt (RSA PKCS#1 v1.5) by the key in `slot`.
fn card_decrypt(card: &CardSession, slot: KeySlot, data: &[u8]) -> Result<Vec<u8>> {
    ensure_login(card)?;
    let key = private_key(card, slot)?;
    let m = mech(CKM_RSA_PKCS);
    super::with(|lib| {
        lib.decrypt_init(card.handle, &m, key)?;
        let len = lib.decrypt(card.handle, data, OutBuf::Query)?;
        let mut out = vec![0u8; len];
        let n = lib.decrypt(card.handle, data, OutBuf::Into(&mut out))?;
        out.truncate(n);
        Ok(out)
    })
}

fn spki_der(cert: &Certificate) -> Result<Vec<u8>> {
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(der_err)
}

/// Opens a session on the virtual card at `path` (and only that card, whatever else is in
/// the readers).
fn open_virtual(path: &Path) -> Result<CardSession> {
    let opts = Options {
        vcard: Some(path.to_path_buf()),
        ..Options::default()
    };
    super::start(&opts)?;
    let slot = super::with(|lib| {
        for slot in lib.slot_list(true)? {
            if let Ok(Location::File(p)) = lib.slot_location(slot) {
                if p == path {
                    return Ok(Some(slot));
                }
            }
        }
        Ok(None)
    })?
    .ok_or_else(|| {
        err(format!(
            "the virtual card {} is not visible",
            path.display()
        ))
    })?;
    let label = super::with(|lib| lib.token_info(slot))
        .map(|t| String::from_utf8_lossy(&t.label).trim_end().to_owned())?;
    let handle = super::with(|lib| lib.open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION))?;
    Ok(CardSession {
        handle,
        slot,
        label,
        lock: None,
    })
}

// ---- the story ---------------------------------------------------------------------------------

/// State carried from step to step.
struct Story {
    dir: PathBuf,
    card_path: PathBuf,
    card: Option<CardSession>,
    ca: Option<DemoCa>,
    old_cert: Option<Certificate>,
    old_der: Vec<u8>,
    message: Vec<u8>,
    ciphertext: Vec<u8>,
    csr_der: Vec<u8>,
    signed_request: Vec<u8>,
    new_cert: Option<Certificate>,
    new_der: Vec<u8>,
}

/// The slot the demo's e-Cert lives in: key management (9D), the slot whose key the card keeps
/// in key history when it is replaced — so mail encrypted to the old key stays readable.
const SLOT: KeySlot = KeySlot::KEY_MANAGEMENT;

impl Story {
    fn card(&self) -> Result<&CardSession> {
        self.card.as_ref().ok_or_else(|| err("no card session"))
    }

    fn ca(&mut self) -> Result<&mut DemoCa> {
        self.ca.as_mut().ok_or_else(|| err("no demo CA"))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    fn step1_card(&mut self) -> Result<String> {
        let serial = 10_000_000 + rand::random::<u32>() % 80_000_000;
        CardFile::create(&self.card_path, &CardState::factory(serial))
            .map_err(|e| err(format!("cannot create the virtual card: {e}")))?;
        let card = open_virtual(&self.card_path)?;
        let report = status::status(&card)?;
        check(report.slots.is_empty(), "a fresh card holds no keys")?;
        check(report.pin.factory_default, "the PIN is the factory PIN")?;
        let detail = format!(
            "{} (serial {}) at {}, PIN {} tries, no keys",
            report.label,
            report.serial,
            self.card_path.display(),
            report.pin.tries_left.unwrap_or(0)
        );
        self.card = Some(card);
        Ok(detail)
    }

    fn step2_ca(&mut self) -> Result<String> {
        let ca = DemoCa::new()?;
        check(
            ca.issued(&ca.cert),
            "the CA certificate verifies with its own key",
        )?;
        self.write("ca.pem", certs::pem(&ca.der, "CERTIFICATE").as_bytes())?;
        let detail = format!(
            "{} (P-256, self-signed, ca.pem)",
            ca.cert.tbs_certificate.subject
        );
        self.ca = Some(ca);
        Ok(detail)
    }

    fn step3_p12(&mut self) -> Result<String> {
        use pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .map_err(|e| err(format!("RSA key generation: {e}")))?;
        let pkcs8 = key.to_pkcs8_der().map_err(der_err)?;
        let public = rsa::RsaPublicKey::from(&key);
        let spki = SubjectPublicKeyInfoOwned::from_key(public).map_err(der_err)?;
        let subject = Name::from_str(HOLDER).map_err(der_err)?;
        let ca = self.ca()?;
        let (cert, der) = ca.issue(subject, spki, 730)?;
        let ca_der = ca.der.clone();
        let p12 = p12::write(
            pkcs8.as_bytes(),
            &der,
            std::slice::from_ref(&ca_der),
            P12_PASSWORD,
            &p12::WriteOptions::default(),
        )
        .map_err(der_err)?;
        let path = self.write("ecert.p12", &p12)?;
        // Read it back as the import will.
        let back = p12::read(&path, P12_PASSWORD)?;
        check(back.certificate == der, "the .p12 holds the e-Cert")?;
        check(
            back.chain == vec![ca_der],
            "the .p12 holds the CA certificate",
        )?;
        check(
            p12::read(&path, "wrong password").is_err_and(|e| e.is_wrong_password()),
            "a wrong password is refused",
        )?;
        self.old_der = der;
        self.old_cert = Some(cert);
        Ok(format!(
            "RSA-2048 e-Cert for {HOLDER}, keyUsage digitalSignature+keyEncipherment, 730 days; ecert.p12 (password {P12_PASSWORD:?}, AES-256)"
        ))
    }

    fn step4_import(&mut self) -> Result<String> {
        let file = self.dir.join("ecert.p12");
        let backup_dir = self.dir.join("backups");
        let report = certs::import(
            self.card()?,
            &certs::ImportOptions {
                file: &file,
                password: P12_PASSWORD,
                slot: Some(SLOT),
                force: false,
                backup_dir,
            },
            PIN,
        )?;
        check(
            report.verified,
            "the loaded key signed a challenge the certificate verified",
        )?;
        check(report.chain == 1, "the CA certificate was stored with it")?;
        Ok(format!(
            "slot {} now holds {} (+{} CA certificate); the card key signed a challenge and the certificate verified it",
            report.slot, report.subject, report.chain
        ))
    }

    fn step5_status(&mut self) -> Result<String> {
        let report = status::status(self.card()?)?;
        let slot = report
            .slots
            .iter()
            .find(|s| s.slot == SLOT.to_string())
            .ok_or_else(|| err("status shows no key in slot 9d"))?;
        let cert = slot
            .certificate
            .as_ref()
            .ok_or_else(|| err("status shows no certificate in slot 9d"))?;
        let expected = self
            .old_cert
            .as_ref()
            .map(|c| c.tbs_certificate.subject.to_string())
            .unwrap_or_default();
        check(cert.subject == expected, "status shows the holder's name")?;
        check(cert.state == "ok", "the certificate is valid")?;
        check(
            slot.algorithm.contains("2048"),
            "status shows an RSA-2048 key",
        )?;
        Ok(format!(
            "slot {} {} {}: valid until {} ({} days left), PIN {} tries left, {} warning(s) (factory PIN/PUK/management key)",
            slot.slot,
            slot.algorithm,
            cert.subject,
            cert.not_after,
            cert.days_left,
            report.pin.tries_left.unwrap_or(0),
            report.warnings.len()
        ))
    }

    fn step6_encrypt(&mut self) -> Result<String> {
        use pkcs8::DecodePublicKey;
        let message =
            b"Meeting moved to Thursday 10:00. Bring the signed contract. -- a colleague".to_vec();
        let cert = self.old_cert.as_ref().ok_or_else(|| err("no e-Cert"))?;
        let public = rsa::RsaPublicKey::from_public_key_der(&spki_der(cert)?).map_err(der_err)?;
        let ciphertext = public
            .encrypt(&mut rand::rngs::OsRng, rsa::Pkcs1v15Encrypt, &message)
            .map_err(|e| err(format!("encryption: {e}")))?;
        self.write("message.enc", &ciphertext)?;
        let plain = card_decrypt(self.card()?, SLOT, &ciphertext)?;
        check(plain == message, "the card decrypts the message")?;
        self.message = message;
        self.ciphertext = ciphertext;
        Ok(format!(
            "a correspondent encrypted {} bytes to the e-Cert (RSA PKCS#1 v1.5, message.enc); the card decrypts it",
            self.message.len()
        ))
    }

    fn step7_sign(&mut self) -> Result<String> {
        let document = b"I, Maria Example, agree to the terms of contract 2024-117.\n".to_vec();
        self.write("document.txt", &document)?;
        let card = self.card()?;
        fresh_login(card);
        let (p7s, slot, signer) = cms::sign_data(card, Some(SLOT), &document, false, false, PIN)?;
        check(slot == SLOT, "signed with the e-Cert's key")?;
        self.write("document.p7s", &p7s)?;
        Ok(format!(
            "document.txt signed on the card with slot {slot} by {signer}: document.p7s (CMS SignedData, detached, {} bytes)",
            p7s.len()
        ))
    }

    fn step8_verify(&mut self) -> Result<String> {
        let document = std::fs::read(self.dir.join("document.txt"))?;
        let p7s = std::fs::read(self.dir.join("document.p7s"))?;
        let ca = self.ca.as_ref().ok_or_else(|| err("no CA"))?;
        let cert = self.old_cert.as_ref().ok_or_else(|| err("no e-Cert"))?;
        let report = cms::verify_bytes(&p7s, Some(&document), std::slice::from_ref(&ca.cert))?;
        check(report.valid, "the signature verifies")?;
        let signer = report
            .signers
            .first()
            .ok_or_else(|| err("the signature names no signer"))?;
        check(
            signer.serial == hex::encode(cert.tbs_certificate.serial_number.as_bytes()),
            "the signer is the e-Cert",
        )?;
        check(signer.chain.is_some(), "the signer chains to the demo CA")?;
        check(ca.issued(cert), "the e-Cert was issued by the demo CA")?;
        let mut tampered = document.clone();
        tampered.extend_from_slice(b"and 1000 EUR\n");
        check(
            cms::verify_bytes(&p7s, Some(&tampered), std::slice::from_ref(&ca.cert))
                .map_or(true, |r| !r.valid),
            "a changed document does not verify",
        )?;
        Ok(format!(
            "document.p7s verifies: signer {} (chain: {}); a changed document does not verify",
            signer.subject,
            signer.chain.as_deref().unwrap_or("-")
        ))
    }

    fn step9_request(&mut self) -> Result<String> {
        // The CA publishes a CRL; the e-Cert is not on it.
        let crl_path = {
            let ca = self.ca.as_ref().ok_or_else(|| err("no CA"))?;
            let crl = ca.crl()?;
            self.write("ca.crl", &crl)?
        };
        let ca_path = self.dir.join("ca.pem");
        let card = self.card()?;
        fresh_login(card);
        let out = renew::request(
            card,
            &renew::RequestOptions {
                slot: SLOT,
                crl: Some(&crl_path),
                ca: Some(&ca_path),
                new_key: false,
                progress: false,
            },
            PIN,
        )?;
        let staged = certs::parse_slot(&out.report.staged_slot)?;
        check(
            staged.retired_number().is_some(),
            "the new key is staged in a retired slot",
        )?;
        check(
            out.report.revocation.checked && out.report.revocation.crl_signature_checked,
            "revocation was checked against the CA's signed CRL",
        )?;
        let (contents, _, _) = super::with(|lib| lib.card_snapshot(card.handle))?;
        check(
            contents
                .entry(SLOT)
                .and_then(|e| e.certificate.as_ref())
                .is_some_and(|c| c.der == self.old_der),
            "the current e-Cert is still in place until the renewed one is installed",
        )?;
        self.write(
            "renewal.csr",
            certs::pem(&out.csr_der, "CERTIFICATE REQUEST").as_bytes(),
        )?;
        self.write("renewal.p7s", &out.signed_der)?;
        let detail = format!(
            "new {} key generated on the card, staged in retired slot {staged}; renewal.csr (subject {}) signed by the new key; renewal.p7s: the request signed by the current key and e-Cert; {}",
            out.report.algorithm, out.report.subject, out.report.revocation.detail
        );
        self.csr_der = out.csr_der;
        self.signed_request = out.signed_der;
        Ok(detail)
    }

    fn step10_issue(&mut self) -> Result<String> {
        let old = self.old_cert.clone().ok_or_else(|| err("no e-Cert"))?;
        let request = CertReq::from_der(&self.csr_der).map_err(der_err)?;
        // What the CA checks before it issues.
        let info_der = request.info.to_der().map_err(der_err)?;
        let new_key = PublicKey::from_spki_der(&request.info.public_key.to_der().map_err(der_err)?)
            .map_err(|_| err("unreadable key in the request"))?;
        cms::verify_signature(
            &new_key,
            &request.algorithm,
            None,
            &info_der,
            request.signature.raw_bytes(),
        )
        .map_err(|e| err(format!("the request's own signature: {e}")))?;
        let ca_cert = self.ca()?.cert.clone();
        let proof = cms::verify_bytes(&self.signed_request, None, std::slice::from_ref(&ca_cert))?;
        check(proof.valid, "the signed request verifies")?;
        check(
            proof.signers.first().is_some_and(|s| {
                s.serial == hex::encode(old.tbs_certificate.serial_number.as_bytes())
            }),
            "the request is signed by the current e-Cert (the owner asks)",
        )?;
        let inner = cms::parse_signed_data(&self.signed_request)
            .ok()
            .and_then(|sd| cms::attached_content(&sd));
        check(
            inner.as_deref() == Some(self.csr_der.as_slice()),
            "the signed request is the same request",
        )?;
        check(
            renew::same_subject(&request.info.subject, &old.tbs_certificate.subject),
            "the holder's data is unchanged",
        )?;
        let ca = self.ca()?;
        check(ca.issued(&old), "the current e-Cert was issued by this CA")?;
        let (cert, der) = ca.issue(
            request.info.subject.clone(),
            request.info.public_key.clone(),
            730,
        )?;
        self.write("renewed.pem", certs::pem(&der, "CERTIFICATE").as_bytes())?;
        let serial = hex::encode(cert.tbs_certificate.serial_number.as_bytes());
        self.new_der = der;
        self.new_cert = Some(cert);
        Ok(format!(
            "the CA checked the request's signature (new key), the CMS signature (current e-Cert), the unchanged subject, and issued renewed.pem (serial {serial}, 730 days)"
        ))
    }

    fn step11_install(&mut self) -> Result<String> {
        let card = self.card()?;
        let new_cert = self
            .new_cert
            .clone()
            .ok_or_else(|| err("no renewed certificate"))?;
        fresh_login(card);
        let report = renew::install(card, &new_cert, None, Some(SLOT), PIN)?;
        check(
            report.verified_new,
            "the new key signs a challenge the renewed certificate verifies",
        )?;
        check(
            report.verified_old,
            "the old key and certificate are in key history",
        )?;
        let (contents, _, _) = super::with(|lib| lib.card_snapshot(card.handle))?;
        check(
            contents
                .entry(SLOT)
                .and_then(|e| e.certificate.as_ref())
                .is_some_and(|c| c.der == self.new_der),
            "slot 9d holds the renewed certificate",
        )?;
        let status = status::status(card)?;
        check(status.key_history >= 1, "status shows the retired key")?;
        Ok(format!(
            "renewed certificate in slot {} (valid until {}); the old key and e-Cert moved to retired slot {}; key history: {} retired key(s)",
            report.slot, report.not_after, report.old_key_slot, status.key_history
        ))
    }

    fn step12_old_key(&mut self) -> Result<String> {
        let card = self.card()?;
        let (contents, _, _) = super::with(|lib| lib.card_snapshot(card.handle))?;
        let retired = contents
            .entries
            .iter()
            .find(|e| {
                e.certificate
                    .as_ref()
                    .is_some_and(|c| c.der == self.old_der)
            })
            .map(|e| e.slot)
            .ok_or_else(|| err("the old key is not in key history"))?;
        let plain = card_decrypt(card, retired, &self.ciphertext)?;
        check(
            plain == self.message,
            "the old key decrypts the message sent before the renewal",
        )?;
        check(
            card_decrypt(card, SLOT, &self.ciphertext).map_or(true, |p| p != self.message),
            "the new key cannot read it (it really is the old key at work)",
        )?;
        Ok(format!(
            "message.enc (encrypted to the old e-Cert before the renewal) decrypted by the retired key in slot {retired}: {:?}",
            String::from_utf8_lossy(&self.message)
        ))
    }

    fn step13_export(&mut self) -> Result<String> {
        let card = self.card()?;
        let pem_bytes = certs::export(card, SLOT, certs::Format::Pem, true)?;
        let path = self.write("exported.pem", &pem_bytes)?;
        let der_bytes = certs::export(card, SLOT, certs::Format::Der, true)?;
        let ca_der = self.ca.as_ref().map(|c| c.der.clone()).unwrap_or_default();
        let mut expected = self.new_der.clone();
        expected.extend_from_slice(&ca_der);
        check(
            der_bytes == expected,
            "the export is the renewed certificate and its CA",
        )?;
        let text = String::from_utf8_lossy(&pem_bytes);
        check(
            text.matches("-----BEGIN CERTIFICATE-----").count() == 2,
            "two PEM certificates",
        )?;
        Ok(format!(
            "{}: the renewed e-Cert and the CA certificate, ready to send to a bank or portal",
            path.display()
        ))
    }
}

type StepFn = fn(&mut Story) -> Result<String>;

const STEPS: [(&str, StepFn); 13] = [
    ("a fresh virtual PIV card", Story::step1_card),
    ("a demo CA", Story::step2_ca),
    ("the CA issues an e-Cert as a .p12 file", Story::step3_p12),
    (
        "import the .p12 onto the card (password + PIN)",
        Story::step4_import,
    ),
    ("status", Story::step5_status),
    ("a message is encrypted to the e-Cert", Story::step6_encrypt),
    ("sign a document with the card", Story::step7_sign),
    ("verify the signature", Story::step8_verify),
    (
        "renewal request with a key generated on the card",
        Story::step9_request,
    ),
    (
        "the demo CA issues the renewed certificate",
        Story::step10_issue,
    ),
    ("install the renewed certificate", Story::step11_install),
    (
        "the old key still decrypts the earlier message",
        Story::step12_old_key,
    ),
    ("export the certificate", Story::step13_export),
];

/// The work directory: `keep` (created) or a fresh one under the temporary directory.
fn work_dir(keep: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = keep {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        if dir.join("card.json").exists() {
            return fail(format!(
                "{} already holds a card.json: name an empty directory",
                dir.display()
            ));
        }
        return Ok(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()));
    }
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!(
            "tessera-demo-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return fail(format!(
                    "cannot create a directory in {}: {e}",
                    base.display()
                ))
            }
        }
    }
    fail("cannot create a temporary directory")
}

/// Runs the story; prints each step as it goes (unless `quiet`). Returns the report.
pub fn story(keep: Option<&Path>, quiet: bool) -> Result<DemoReport> {
    let dir = work_dir(keep)?;
    let mut s = Story {
        card_path: dir.join("card.json"),
        dir: dir.clone(),
        card: None,
        ca: None,
        old_cert: None,
        old_der: Vec::new(),
        message: Vec::new(),
        ciphertext: Vec::new(),
        csr_der: Vec::new(),
        signed_request: Vec::new(),
        new_cert: None,
        new_der: Vec::new(),
    };
    if !quiet {
        println!(
            "Tessera demo: the e-Cert story on a fresh virtual card in {}",
            dir.display()
        );
    }
    let mut steps = Vec::new();
    for (i, (title, f)) in STEPS.iter().enumerate() {
        let t = Instant::now();
        let outcome = f(&mut s);
        let millis = t.elapsed().as_millis();
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(e) => (false, e.message),
        };
        if !quiet {
            println!(
                "step {}: {title} ... {}",
                i + 1,
                if ok { "ok" } else { "FAILED" }
            );
            println!("    {detail}");
        }
        steps.push(Step {
            number: i + 1,
            title: (*title).to_owned(),
            ok,
            detail,
            millis,
        });
        if !ok {
            break;
        }
    }
    // Close the session before the card file goes away.
    s.card = None;
    let passed = steps.len() == STEPS.len() && steps.iter().all(|st| st.ok);
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(DemoReport {
        directory: dir,
        steps,
        passed,
    })
}

/// Runs `tessera demo`.
pub fn run(opts: &Options, args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let report = story(args.keep.as_deref(), opts.json)?;
    if opts.json {
        let text = serde_json::to_string_pretty(&report).map_err(der_err)?;
        println!("{text}");
    } else if report.passed {
        println!(
            "demo: all {} steps verified in {:.1} s",
            report.steps.len(),
            started.elapsed().as_secs_f64()
        );
        if let Some(dir) = &args.keep {
            println!(
                "the card and the files are in {} (use the card with --vcard {})",
                dir.display(),
                report.directory.join("card.json").display()
            );
        }
    }
    if report.passed {
        Ok(())
    } else {
        let failed = report
            .steps
            .iter()
            .find(|s| !s.ok)
            .map(|s| format!("step {} ({}): {}", s.number, s.title, s.detail))
            .unwrap_or_else(|| "not every step ran".into());
        fail(format!("demo failed at {failed}"))
    }
}
