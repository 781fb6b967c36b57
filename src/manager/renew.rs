//! Renewal with an on-card key, as national e-Cert services do it online: only while the
//! current certificate is valid (not expired, not revoked), only for unchanged holder data,
//! only by the owner (proved with the current key).
//!
//! `renew request` generates the new key on the card in a retired key slot (staging; Key
//! History counts it), writes a PKCS#10 request with the current subject and subjectAltName
//! signed by the new key, and the same request inside a CMS SignedData signed by the current
//! key and certificate. `renew install` accepts only a certificate for the staged key with an
//! unchanged subject, then swaps with MOVE KEY: the primary slot gets the new key and
//! certificate, the staged retired slot gets the old key and certificate (old mail still
//! decrypts), and Key History stays exact. A staged key is the one retired key without a
//! certificate; nothing else is persisted.

use super::cms::{
    self as card_cms, certificate_key, now_unix, pem_blocks, read_certificates, CardSigner,
};
use super::{certs, fail, status, with, CardSession, ManagerError, Options, Result};
use crate::applet::piv::{admin, KeySlot};
use crate::token::objects::KeyEntry;
use const_oid::db::rfc5280;
use der::{Decode, Encode};
use serde::Serialize;
use std::path::{Path, PathBuf};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq};
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;

/// Prints a line on standard output; a closed pipe (`| head`, `| grep -q`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `tessera renew …`.
#[derive(clap::Subcommand, Debug)]
pub enum RenewCommand {
    /// Write a renewal request signed by a new on-card key and by the current one.
    ///
    /// Writes OUT.csr (PKCS#10, PEM; signed by the new key) and OUT.p7s (the same request in
    /// CMS SignedData, DER; signed by the current key and certificate). Refused when the
    /// current certificate is expired or revoked (--crl).
    ///
    /// Example: tessera renew request --slot 9c --crl esteid.crl --ca ca.pem -o renewal
    Request {
        /// Key slot of the e-Cert to renew.
        #[arg(long, default_value = "9a")]
        slot: String,
        /// The issuer's CRL (DER or PEM): refuse when the certificate is listed in it.
        #[arg(long, value_name = "FILE")]
        crl: Option<PathBuf>,
        /// The issuing CA's certificate (PEM or DER): check the CRL's signature and that the
        /// current certificate was issued by it.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Output name: writes OUT.csr and OUT.p7s (default: renewal-SLOT).
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
        /// Generate a fresh key even when an earlier request staged one that was never installed.
        #[arg(long)]
        new_key: bool,
    },
    /// Install the renewed certificate (its key must be the one staged by `renew request`).
    ///
    /// CERT may be the certificate alone or a PEM bundle with its CA chain (as CAs deliver):
    /// the certificate for the staged key is installed, the others are kept beside it.
    ///
    /// Example: tessera renew install renewed.pem --slot 9c
    Install {
        /// The renewed certificate (PEM or DER).
        cert: PathBuf,
        /// Key slot of the e-Cert being renewed (default: the slot whose certificate has the
        /// same subject).
        #[arg(long)]
        slot: Option<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// Pure checks

/// Whether two names are the same holder: the same RDNs in the same order, attribute values
/// compared as RFC 5280 §7.1 suggests (string types ignored, case and surrounding/inner
/// whitespace folded); non-string values compared byte for byte.
pub fn same_subject(a: &Name, b: &Name) -> bool {
    a.0.len() == b.0.len()
        && a.0.iter().zip(b.0.iter()).all(|(ra, rb)| {
            let mut va: Vec<(String, String)> = ra.0.iter().map(normal_atv).collect();
            let mut vb: Vec<(String, String)> = rb.0.iter().map(normal_atv).collect();
            va.sort();
            vb.sort();
            va == vb
        })
}

fn normal_atv(atv: &x509_cert::attr::AttributeTypeAndValue) -> (String, String) {
    let value = der::asn1::Utf8StringRef::try_from(&atv.value)
        .map(|s| s.as_str().to_owned())
        .or_else(|_| {
            der::asn1::PrintableStringRef::try_from(&atv.value).map(|s| s.as_str().to_owned())
        })
        .or_else(|_| der::asn1::Ia5StringRef::try_from(&atv.value).map(|s| s.as_str().to_owned()))
        .or_else(|_| {
            der::asn1::TeletexStringRef::try_from(&atv.value).map(|s| s.as_str().to_owned())
        })
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .unwrap_or_else(|_| hex::encode(atv.value.to_der().unwrap_or_default()));
    (atv.oid.to_string(), value)
}

/// What a CRL says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlVerdict {
    /// Listed: revoked on this date (UTC, RFC 3339).
    Revoked(String),
    /// Not listed.
    NotListed,
    /// The CRL is from another issuer and says nothing about the certificate.
    OtherIssuer,
}

/// Looks a certificate (by issuer and serial) up in a CRL.
pub fn crl_verdict(issuer: &Name, serial: &SerialNumber, crl: &CertificateList) -> CrlVerdict {
    let tbs = &crl.tbs_cert_list;
    if !same_subject(&tbs.issuer, issuer) {
        return CrlVerdict::OtherIssuer;
    }
    let serial = serial.as_bytes();
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    match tbs
        .revoked_certificates
        .iter()
        .flatten()
        .find(|r| strip(r.serial_number.as_bytes()) == strip(serial))
    {
        Some(r) => CrlVerdict::Revoked(r.revocation_date.to_date_time().to_string()),
        None => CrlVerdict::NotListed,
    }
}

/// Whether a CRL is past its nextUpdate at `now` (Unix seconds).
pub fn crl_outdated(crl: &CertificateList, now: u64) -> bool {
    crl.tbs_cert_list
        .next_update
        .is_some_and(|t| t.to_unix_duration().as_secs() < now)
}

/// OUT.csr and OUT.p7s from `-o OUT` (an extension .csr/.p7s on OUT is dropped).
pub fn output_paths(out: Option<&Path>, slot: KeySlot) -> (PathBuf, PathBuf) {
    let base = out.map_or_else(
        || PathBuf::from(format!("renewal-{slot}")),
        Path::to_path_buf,
    );
    let base = match base.extension().and_then(|e| e.to_str()) {
        Some("csr" | "p7s" | "pem" | "der") => base.with_extension(""),
        _ => base,
    };
    let with = |ext: &str| {
        let mut s = base.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".csr"), with(".p7s"))
}

/// The staged keys: retired slots (counted by Key History) holding a key but no certificate.
pub fn staged_entries(entries: &[KeyEntry]) -> impl Iterator<Item = &KeyEntry> {
    entries
        .iter()
        .filter(|e| e.slot.retired_number().is_some() && e.certificate.is_none())
}

fn san_of(cert: &Certificate) -> Option<SubjectAltName> {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == rfc5280::ID_CE_SUBJECT_ALT_NAME)
        .and_then(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
}

/// The next retired slot after those Key History counts.
fn next_free_retired(history: &admin::KeyHistory) -> Option<KeySlot> {
    let used = usize::from(history.on_card_certs) + usize::from(history.off_card_certs);
    KeySlot::all()
        .filter(|s| s.retired_number().is_some())
        .nth(used)
}

fn read_crl(path: &Path) -> Result<CertificateList> {
    let bytes = card_cms::read_bounded(path, card_cms::MAX_STRUCTURE)?;
    let der_bytes = match pem_blocks(&bytes, &["X509 CRL"]) {
        Some(mut b) if !b.is_empty() => b.swap_remove(0),
        Some(_) => return fail(format!("{} holds no X509 CRL", path.display())),
        None => bytes,
    };
    CertificateList::from_der(&der_bytes).map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("{} is not a readable CRL: {e}", path.display()),
    })
}

fn check_moves(version: Option<[u8; 3]>, has_metadata: bool) -> Result<()> {
    let moves = matches!(version, Some([major, minor, _]) if (major, minor) >= (5, 7));
    if !moves || !has_metadata {
        return fail("renewal with an on-card key needs a card that reports key metadata and can move keys (YubiKey 5.7 or later, or the virtual card); load the renewed e-Cert from its .p12 file instead (`tessera import`)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// renew request

/// How revocation was checked.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationReport {
    /// A CRL was consulted.
    pub checked: bool,
    /// The CRL's signature was verified with the CA's key.
    pub crl_signature_checked: bool,
    /// In words.
    pub detail: String,
}

/// What `tessera renew request` did.
#[derive(Debug, Clone, Serialize)]
pub struct RequestReport {
    /// The e-Cert's slot.
    pub slot: String,
    /// The retired slot holding the new (staged) key.
    pub staged_slot: String,
    /// Key algorithm.
    pub algorithm: String,
    /// An earlier request's staged key was reused (no new key generated).
    pub reused_key: bool,
    /// Subject of the request (the current certificate's).
    pub subject: String,
    /// The current certificate's days left.
    pub days_left: i64,
    /// The PKCS#10 request (PEM), signed by the new key.
    pub request: PathBuf,
    /// The request in CMS SignedData (DER), signed by the current key.
    pub signed_request: PathBuf,
    /// Revocation check.
    pub revocation: RevocationReport,
}

/// Options of `tessera renew request`.
#[derive(Debug, Clone)]
pub struct RequestOptions<'a> {
    /// The e-Cert's slot.
    pub slot: KeySlot,
    /// The issuer's CRL.
    pub crl: Option<&'a Path>,
    /// The CA certificate(s).
    pub ca: Option<&'a Path>,
    /// Always generate a new key.
    pub new_key: bool,
    /// Show progress on standard error while the card generates.
    pub progress: bool,
}

/// The products of `renew request`.
#[derive(Debug, Clone)]
pub struct RequestOutput {
    /// What was done (paths empty: the caller writes the files).
    pub report: RequestReport,
    /// PKCS#10 request, DER.
    pub csr_der: Vec<u8>,
    /// CMS SignedData around it, DER.
    pub signed_der: Vec<u8>,
}

/// Everything `renew request` refuses for, before the card is touched.
fn check_renewable(
    current: &Certificate,
    opts: &RequestOptions<'_>,
) -> Result<(RevocationReport, i64)> {
    let der_bytes = current.to_der().map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: e.to_string(),
    })?;
    let report = status::cert_report(&der_bytes).ok_or_else(|| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the current certificate cannot be read".into(),
    })?;
    match report.state {
        "expired" => {
            return fail(format!(
                "the certificate in slot {} expired on {}: online renewal is only possible while it is valid; apply for a new e-Cert (the card was not touched)",
                opts.slot, report.not_after
            ))
        }
        "not-yet-valid" => {
            return fail(format!(
                "the certificate in slot {} is not valid before {} (the card was not touched)",
                opts.slot, report.not_before
            ))
        }
        _ => {}
    }
    let cas = opts
        .ca
        .map(read_certificates)
        .transpose()?
        .unwrap_or_default();
    if !cas.is_empty() && card_cms::find_issuer(current, &cas).is_none() {
        return fail(format!(
            "the certificate in slot {} was not issued by the CA in {} (the card was not touched)",
            opts.slot,
            opts.ca.map(|p| p.display().to_string()).unwrap_or_default()
        ));
    }
    let Some(crl_path) = opts.crl else {
        return Ok((
            RevocationReport {
                checked: false,
                crl_signature_checked: false,
                detail: "revocation NOT checked: no CRL given (--crl FILE)".into(),
            },
            report.days_left,
        ));
    };
    let crl = read_crl(crl_path)?;
    let tbs = &current.tbs_certificate;
    let verdict = crl_verdict(&tbs.issuer, &tbs.serial_number, &crl);
    if verdict == CrlVerdict::OtherIssuer {
        return fail(format!(
            "{} is the CRL of {}, not of the certificate's issuer {} (the card was not touched)",
            crl_path.display(),
            crl.tbs_cert_list.issuer,
            tbs.issuer
        ));
    }
    let crl_signature_checked = if cas.is_empty() {
        false
    } else {
        let tbs_der = crl.tbs_cert_list.to_der().map_err(|e| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: e.to_string(),
        })?;
        let sig = crl.signature.as_bytes().unwrap_or_default();
        let good = cas.iter().any(|ca| {
            same_subject(&ca.tbs_certificate.subject, &crl.tbs_cert_list.issuer)
                && certificate_key(ca).is_ok_and(|k| {
                    card_cms::verify_signature(&k, &crl.signature_algorithm, None, &tbs_der, sig)
                        .is_ok()
                })
        });
        if !good {
            return fail(format!(
                "the CRL's signature does not verify with the CA's key: {} cannot be trusted (the card was not touched)",
                crl_path.display()
            ));
        }
        true
    };
    if let CrlVerdict::Revoked(date) = verdict {
        return fail(format!(
            "the certificate in slot {} (serial {}) was revoked on {date} according to {}: a revoked e-Cert cannot be renewed online (the card was not touched)",
            opts.slot,
            hex::encode(tbs.serial_number.as_bytes()),
            crl_path.display()
        ));
    }
    if crl_outdated(&crl, now_unix()) {
        return fail(format!(
            "the CRL {} is out of date (next update was {}): get a current one (the card was not touched)",
            crl_path.display(),
            crl.tbs_cert_list
                .next_update
                .map(|t| t.to_string())
                .unwrap_or_default()
        ));
    }
    let detail = format!(
        "revocation checked: not listed in the CRL of {} issued {}{}",
        crl.tbs_cert_list.issuer,
        crl.tbs_cert_list.this_update,
        if crl_signature_checked {
            " (CRL signature verified with the CA's key)"
        } else {
            " (CRL signature NOT verified: give --ca FILE)"
        }
    );
    Ok((
        RevocationReport {
            checked: true,
            crl_signature_checked,
            detail,
        },
        report.days_left,
    ))
}

fn encoding(e: der::Error) -> ManagerError {
    ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("cannot encode the request: {e}"),
    }
}

/// A PKCS#10 request (DER) with `current`'s subject and subjectAltName extension (copied as
/// is; no extension request at all when it has none), signed by `signer`, and checked with
/// the signer's public key.
pub fn build_request(current: &Certificate, signer: &CardSigner<'_>) -> Result<Vec<u8>> {
    let mut attributes = x509_cert::attr::Attributes::new();
    if let Some(san) = current
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == rfc5280::ID_CE_SUBJECT_ALT_NAME)
    {
        let ext_req = x509_cert::attr::Attribute::try_from(ExtensionReq(vec![san.clone()]))
            .map_err(encoding)?;
        attributes.insert(ext_req).map_err(encoding)?;
    }
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: current.tbs_certificate.subject.clone(),
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(&signer.public_key().to_spki_der())
            .map_err(encoding)?,
        attributes,
    };
    let info_der = info.to_der().map_err(encoding)?;
    let signature = signer.sign_bytes(&info_der)?;
    let algorithm = card_cms::signature_algorithm(signer.public_key());
    card_cms::verify_signature(signer.public_key(), &algorithm, None, &info_der, &signature)?;
    let csr = CertReq {
        info,
        algorithm,
        signature: der::asn1::BitString::from_bytes(&signature).map_err(encoding)?,
    };
    csr.to_der().map_err(encoding)
}

/// `tessera renew request`: checks, stages a new key on the card, builds both requests.
pub fn request(card: &CardSession, opts: &RequestOptions<'_>, pin: &[u8]) -> Result<RequestOutput> {
    let slot = opts.slot;
    if slot.retired_number().is_some() {
        return fail("renew the e-Cert of a primary slot (9a, 9c, 9d, 9e), not a retired key");
    }
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let Some(entry) = contents.entry(slot) else {
        return fail(format!("slot {slot} holds no key to renew"));
    };
    let Some(facts) = entry.certificate.as_ref() else {
        return fail(format!("slot {slot} holds no certificate to renew"));
    };
    let current = Certificate::from_der(&facts.der).map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("the certificate in slot {slot} does not parse: {e}"),
    })?;
    let (revocation, days_left) = check_renewable(&current, opts)?;
    check_moves(contents.version, contents.has_metadata)?;
    let algorithm = entry.algorithm;
    let pin_policy = entry.pin_policy;
    let reuse = staged_entries(&contents.entries)
        .find(|e| e.algorithm == algorithm)
        .map(|e| e.slot);
    if reuse.is_none() && next_free_retired(&contents.history).is_none() {
        return fail("the card is full (all 20 retired key slots used): no room for the new key");
    }

    card.login_user(pin)?;
    let reused_key = reuse.is_some() && !opts.new_key;
    let staged = if let (Some(s), false) = (reuse, opts.new_key) {
        s
    } else {
        let spinner = opts.progress.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!(
                "generating a new {} key on the card…",
                algorithm.name()
            ));
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        // --new-key overwrites a staged key that was never installed rather than use up
        // another retired slot.
        let r = with(|lib| lib.stage_renewal_key(card.handle, algorithm, pin_policy, reuse));
        if let Some(bar) = spinner {
            bar.finish_and_clear();
        }
        r?
    };

    // PKCS#10 with the current subject and subjectAltName, signed by the new key.
    let new_signer = CardSigner::for_renewal(card, staged, pin)?;
    let csr_der = build_request(&current, &new_signer)?;

    // The same request in CMS SignedData, signed by the current key and certificate.
    let (certificate, chain) = card_cms::slot_certificates(card, slot)?;
    let old_signer = CardSigner::for_renewal(card, slot, pin)?;
    let signed_der = card_cms::sign_content(&old_signer, &certificate, &chain, &csr_der, true)?;
    card_cms::verify_bytes(&signed_der, None, &[])?;

    Ok(RequestOutput {
        report: RequestReport {
            slot: slot.to_string(),
            staged_slot: staged.to_string(),
            algorithm: algorithm.name().to_owned(),
            reused_key,
            subject: current.tbs_certificate.subject.to_string(),
            days_left,
            request: PathBuf::new(),
            signed_request: PathBuf::new(),
            revocation,
        },
        csr_der,
        signed_der,
    })
}

// ---------------------------------------------------------------------------------------------
// renew install

/// What `tessera renew install` did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    /// The e-Cert's slot, now holding the new key and certificate.
    pub slot: String,
    /// The retired slot now holding the old key and certificate.
    pub old_key_slot: String,
    /// Subject (unchanged).
    pub subject: String,
    /// The new certificate's serial, hex.
    pub serial: String,
    /// The new certificate's end of validity.
    pub not_after: String,
    /// Retired keys counted by Key History.
    pub key_history: u8,
    /// The card reports the new certificate's key in the slot, and (when the certificate
    /// allows signatures) it signed a challenge that the certificate verified.
    pub verified_new: bool,
    /// The same for the old key and certificate in the retired slot.
    pub verified_old: bool,
}

/// The renewed certificate out of what the CA delivered (one certificate, or a PEM bundle
/// with its CA chain): the certificate whose key is a key staged on the card, and the others
/// as its chain (concatenated DER; `None` for a lone certificate: the chain on the card stays).
pub fn pick_renewed(
    card: &CardSession,
    delivered: &[Certificate],
) -> Result<(Certificate, Option<Vec<u8>>)> {
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let staged: Vec<&crate::token::mechanism::PublicKey> = staged_entries(&contents.entries)
        .map(|e| &e.public_key)
        .collect();
    let mut renewed = None;
    let mut chain = Vec::new();
    for c in delivered {
        let key = certificate_key(c).ok();
        if renewed.is_none() && key.as_ref().is_some_and(|k| staged.contains(&k)) {
            renewed = Some(c.clone());
        } else {
            chain.push(c.to_der().map_err(|e| ManagerError {
                class: crate::manager::ErrorClass::Damaged,
                message: format!("a certificate in the bundle does not encode: {e}"),
            })?);
        }
    }
    match (renewed, delivered.len()) {
        (Some(c), 1) => Ok((c, None)),
        (Some(c), _) => Ok((c, Some(chain.concat()))),
        (None, 1) => Ok((delivered.first().cloned().ok_or_else(|| ManagerError::new(crate::manager::ErrorClass::Usage, "no certificate"))?, None)),
        (None, _) => fail("none of the certificates delivered is for the new key staged on this card by `tessera renew request` (the card was not touched)"),
    }
}

/// After the swap: `slot` holds `cert` and a key the card reports as `public`; a key its
/// certificate allows to sign also signs a challenge that the certificate verifies.
fn confirm_key(
    card: &CardSession,
    contents: &crate::token::slot::Contents,
    slot: KeySlot,
    public: &crate::token::mechanism::PublicKey,
    cert: &[u8],
    pin: &[u8],
) -> Result<bool> {
    let Some(entry) = contents.entry(slot) else {
        return Ok(false);
    };
    if &entry.public_key != public
        || entry.certificate.as_ref().map(|c| c.der.as_slice()) != Some(cert)
    {
        return Ok(false);
    }
    if entry.usage().sign {
        return certs::prove_key(card, slot, public, pin);
    }
    Ok(true)
}

/// `tessera renew install`: checks, then swaps the staged key into `slot`.
pub fn install(
    card: &CardSession,
    new_cert: &Certificate,
    chain: Option<&[u8]>,
    slot: Option<KeySlot>,
    pin: &[u8],
) -> Result<InstallReport> {
    let new_der = new_cert.to_der().map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: e.to_string(),
    })?;
    let new_key = certificate_key(new_cert)?;
    let new_subject = &new_cert.tbs_certificate.subject;
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    check_moves(contents.version, contents.has_metadata)?;
    let Some((staged, staged_algorithm)) = staged_entries(&contents.entries)
        .find(|e| e.public_key == new_key)
        .map(|e| (e.slot, e.algorithm))
    else {
        return fail("the certificate's key is not the new key staged on this card by `tessera renew request` (the card was not touched)");
    };
    let slot = match slot {
        Some(s) => s,
        None => {
            let same: Vec<KeySlot> = contents
                .entries
                .iter()
                .filter(|e| e.slot.retired_number().is_none() && e.algorithm == staged_algorithm)
                .filter(|e| {
                    e.certificate.as_ref().is_some_and(|c| {
                        Name::from_der(&c.subject).is_ok_and(|n| same_subject(&n, new_subject))
                    })
                })
                .map(|e| e.slot)
                .collect();
            match same.as_slice() {
                [one] => *one,
                [] => return fail("the data within the certificate has changed: no e-Cert on the card has its subject (the card was not touched)"),
                _ => return fail("several slots hold an e-Cert with this subject: name the one to renew with --slot (the card was not touched)"),
            }
        }
    };
    if slot.retired_number().is_some() {
        return fail("install into a primary slot (9a, 9c, 9d, 9e)");
    }
    let Some(old_facts) = contents.entry(slot).and_then(|e| e.certificate.clone()) else {
        return fail(format!(
            "slot {slot} holds no e-Cert to renew (use `tessera import` for a first load)"
        ));
    };
    let old_cert = Certificate::from_der(&old_facts.der).map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("the certificate in slot {slot} does not parse: {e}"),
    })?;
    let old_key = certificate_key(&old_cert)?;
    if !same_subject(&old_cert.tbs_certificate.subject, new_subject) {
        return fail(format!(
            "the data within the certificate has changed: the renewed certificate names \"{}\", the card's e-Cert names \"{}\"; renewal keeps the holder's data — apply for a new e-Cert instead (the card was not touched)",
            new_subject, old_cert.tbs_certificate.subject
        ));
    }
    if let (Some(old_san), Some(new_san)) = (san_of(&old_cert), san_of(new_cert)) {
        if old_san != new_san {
            return fail("the data within the certificate has changed: its subjectAltName (e-mail) differs from the card's e-Cert (the card was not touched)");
        }
    }
    let report = status::cert_report(&new_der).ok_or_else(|| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the renewed certificate cannot be read".into(),
    })?;
    if report.state == "expired" {
        return fail(format!(
            "the renewed certificate expired on {} (the card was not touched)",
            report.not_after
        ));
    }
    if next_free_retired(&contents.history).is_none() {
        return fail("the card has no free retired key slot left for the swap (all 20 used)");
    }

    card.login_user(pin)?;
    // One change: the staged key and the new certificate into the slot, the old key and
    // certificate into the staged slot (a crash leaves the old e-Cert or the new one).
    with(|lib| lib.install_renewal(card.handle, slot, staged, &new_der, chain))?;
    let (after, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let verified_new = confirm_key(card, &after, slot, &new_key, &new_der, pin)?;
    let verified_old = confirm_key(card, &after, staged, &old_key, &old_facts.der, pin)?;
    Ok(InstallReport {
        slot: slot.to_string(),
        old_key_slot: staged.to_string(),
        subject: new_subject.to_string(),
        serial: hex::encode(new_cert.tbs_certificate.serial_number.as_bytes()),
        not_after: report.not_after,
        key_history: after
            .history
            .on_card_certs
            .saturating_add(after.history.off_card_certs),
        verified_new,
        verified_old,
    })
}

// ---------------------------------------------------------------------------------------------
// CLI

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: e.to_string(),
    })?;
    say!("{text}");
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("cannot write {}: {e}", path.display()),
    })
}

/// Runs `tessera renew`.
pub fn run(opts: &Options, cmd: &RenewCommand) -> Result<()> {
    match cmd {
        RenewCommand::Request {
            slot,
            crl,
            ca,
            output,
            new_key,
        } => {
            let slot = certs::parse_slot(slot)?;
            let card = super::open_for_change(opts)?;
            let pin = super::secret::read("PIN", opts.pin_file.as_deref(), false)?;
            let progress = !opts.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let out = request(
                &card,
                &RequestOptions {
                    slot,
                    crl: crl.as_deref(),
                    ca: ca.as_deref(),
                    new_key: *new_key,
                    progress,
                },
                pin.as_bytes(),
            )?;
            let (csr_path, p7s_path) = output_paths(output.as_deref(), slot);
            write(
                &csr_path,
                certs::pem(&out.csr_der, "CERTIFICATE REQUEST").as_bytes(),
            )?;
            write(&p7s_path, &out.signed_der)?;
            let mut report = out.report;
            report.request = csr_path;
            report.signed_request = p7s_path;
            if opts.json {
                return print_json(&report);
            }
            say!(
                "renewal request for {} (slot {}, {} days left)",
                report.subject,
                report.slot,
                report.days_left
            );
            say!("{}", report.revocation.detail);
            if report.reused_key {
                say!(
                    "new key: the {} key staged by an earlier request in slot {} (use --new-key for a fresh one)",
                    report.algorithm, report.staged_slot
                );
            } else {
                say!(
                    "new key: {} generated on the card in retired slot {} (recorded in Key History)",
                    report.algorithm, report.staged_slot
                );
            }
            say!(
                "request:        {} (PKCS#10, signed by the new key)",
                report.request.display()
            );
            say!(
                "signed request: {} (CMS, DER, signed by the current key and certificate)",
                report.signed_request.display()
            );
            say!("send both to your certificate provider; then `tessera renew install CERT`");
        }
        RenewCommand::Install { cert, slot } => {
            let delivered = read_certificates(cert)?;
            let slot = slot.as_deref().map(certs::parse_slot).transpose()?;
            let card = super::open_for_change(opts)?;
            let (new_cert, chain) = pick_renewed(&card, &delivered)?;
            let pin = super::secret::read("PIN", opts.pin_file.as_deref(), false)?;
            let report = install(&card, &new_cert, chain.as_deref(), slot, pin.as_bytes())?;
            if opts.json {
                print_json(&report)?;
            } else {
                say!(
                    "installed the renewed certificate in slot {} (serial {}, valid until {})",
                    report.slot,
                    report.serial,
                    report.not_after
                );
                say!(
                    "the old key and certificate are kept in retired slot {} (old encrypted mail still decrypts); Key History: {} retired key(s)",
                    report.old_key_slot, report.key_history
                );
                say!(
                    "the new key in slot {} belongs to the renewed certificate: {}",
                    report.slot,
                    if report.verified_new { "ok" } else { "FAILED" }
                );
                say!(
                    "the old key in slot {} belongs to the old certificate: {}",
                    report.old_key_slot,
                    if report.verified_old { "ok" } else { "FAILED" }
                );
            }
            if !report.verified_new || !report.verified_old {
                return fail("a key on the card does not match its certificate after the swap");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use x509_cert::crl::{RevokedCert, TbsCertList};
    use x509_cert::time::Time;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn crl(issuer: &str, serials: &[&[u8]], next_update: Option<u64>) -> CertificateList {
        let time = |secs: u64| {
            Time::UtcTime(
                der::asn1::UtcTime::from_unix_duration(std::time::Duration::from_secs(secs))
                    .unwrap(),
            )
        };
        let revoked: Vec<RevokedCert> = serials
            .iter()
            .map(|s| RevokedCert {
                serial_number: SerialNumber::new(s).unwrap(),
                revocation_date: time(1_700_000_000),
                crl_entry_extensions: None,
            })
            .collect();
        let alg = spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        };
        CertificateList {
            tbs_cert_list: TbsCertList {
                version: x509_cert::Version::V2,
                signature: alg.clone(),
                issuer: name(issuer),
                this_update: time(1_690_000_000),
                next_update: next_update.map(time),
                revoked_certificates: (!revoked.is_empty()).then_some(revoked),
                crl_extensions: None,
            },
            signature_algorithm: alg,
            signature: der::asn1::BitString::from_bytes(&[0]).unwrap(),
        }
    }

    #[test]
    fn subjects_compare_by_value() {
        let a = name("CN=MAASIKAS\\,MARI\\,38001085718,O=ESTEID,C=EE");
        assert!(same_subject(&a, &a.clone()));
        assert!(same_subject(
            &a,
            &name("CN=maasikas\\,mari\\,38001085718,O=ESTEID,C=EE")
        ));
        assert!(same_subject(
            &name("CN=Mari  Maasikas,O=ESTEID"),
            &name("CN= Mari Maasikas,O=ESTEID")
        ));
        assert!(!same_subject(
            &a,
            &name("CN=KASK\\,MARI\\,38001085718,O=ESTEID,C=EE")
        ));
        assert!(!same_subject(&a, &name("O=ESTEID,C=EE")));
        assert!(!same_subject(&name("CN=A,O=B"), &name("O=B,CN=A")));
    }

    #[test]
    fn crl_lists_revoked_serials_of_its_issuer() {
        let issuer = name("CN=Demo e-Cert CA,O=Demo CA,C=EE");
        let list = crl(
            "CN=Demo e-Cert CA,O=Demo CA,C=EE",
            &[&[0x12, 0x34], &[0x05]],
            None,
        );
        let revoked = SerialNumber::new(&[0x12, 0x34]).unwrap();
        let fine = SerialNumber::new(&[0x12, 0x35]).unwrap();
        assert!(matches!(
            crl_verdict(&issuer, &revoked, &list),
            CrlVerdict::Revoked(d) if d.starts_with("2023-11-14")
        ));
        assert_eq!(crl_verdict(&issuer, &fine, &list), CrlVerdict::NotListed);
        // Same serial from another CA: the CRL says nothing.
        assert_eq!(
            crl_verdict(&name("CN=Other CA"), &revoked, &list),
            CrlVerdict::OtherIssuer
        );
        let empty = crl("CN=Demo e-Cert CA,O=Demo CA,C=EE", &[], None);
        assert_eq!(
            crl_verdict(&issuer, &revoked, &empty),
            CrlVerdict::NotListed
        );
    }

    #[test]
    fn crl_freshness() {
        let list = crl("CN=CA", &[], Some(1_800_000_000));
        assert!(!crl_outdated(&list, 1_799_999_999));
        assert!(crl_outdated(&list, 1_800_000_001));
        assert!(!crl_outdated(&crl("CN=CA", &[], None), u64::MAX));
    }

    #[test]
    fn output_names() {
        let s = KeySlot::SIGNATURE;
        assert_eq!(
            output_paths(None, s),
            ("renewal-9c.csr".into(), "renewal-9c.p7s".into())
        );
        assert_eq!(
            output_paths(Some(Path::new("/tmp/r.csr")), s),
            ("/tmp/r.csr".into(), "/tmp/r.p7s".into())
        );
        assert_eq!(
            output_paths(Some(Path::new("out/req.v2")), s),
            ("out/req.v2.csr".into(), "out/req.v2.p7s".into())
        );
    }

    #[test]
    fn next_retired_slot_follows_key_history() {
        let mut h = admin::KeyHistory::default();
        assert_eq!(next_free_retired(&h).map(|s| s.reference()), Some(0x82));
        h.on_card_certs = 2;
        h.off_card_certs = 1;
        assert_eq!(next_free_retired(&h).map(|s| s.reference()), Some(0x85));
        h.on_card_certs = 20;
        h.off_card_certs = 0;
        assert_eq!(next_free_retired(&h), None);
    }
}
