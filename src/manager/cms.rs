//! CMS signatures (RFC 5652 SignedData) made with the card, and their verification.
//!
//! The card signs through the same core as the PKCS#11 module (C_SignInit / C_Login
//! CKU_CONTEXT_SPECIFIC / C_Sign): [`CardSigner`] plugs a card key into the RustCrypto builders
//! (`cms`, `x509-cert`), which shape the signed attributes and the requests. Verification is
//! host code only (the core's [`VerifyOp`]) and needs no card.

use super::{
    attr_bytes, attr_ulong, certs, fail, with, CardSession, ManagerError, Options, Result,
};
use crate::applet::piv::{self, keys, KeyAlgorithm, KeySlot, PinStatus};
use crate::token::mechanism::{Curve, HashAlg, KeyInfo, PublicKey, SignOp, VerifyOp};
use crate::token::{AttrAnswer, MechParam, Mechanism, OutBuf};
use cms::builder::{create_signing_time_attribute, SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo};
use const_oid::db::{rfc5280, rfc5911, rfc5912};
use const_oid::ObjectIdentifier;
use cryptoki_sys::*;
use der::asn1::BitString;
use der::{Any, Decode, Encode, Tag};
use ecdsa::signature::{self, Keypair};
use serde::Serialize;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// Prints a line on standard output; a closed pipe (`| head`, `| grep -q`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `tessera sign`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tessera sign contract.pdf                      detached signature contract.pdf.p7s (key 9c, else 9a)
  tessera sign --attached --slot 9a memo.txt     the file inside the signature
  openssl cms -verify -binary -inform DER -in contract.pdf.p7s -content contract.pdf -CAfile ca.pem")]
pub struct SignArgs {
    /// The file to sign.
    pub file: PathBuf,
    /// Key slot (default: 9c when it holds a certificate, else 9a).
    #[arg(long)]
    pub slot: Option<String>,
    /// Where to write the signature (default: FILE.p7s).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Put the file's content inside the signature (default: detached).
    #[arg(long)]
    pub attached: bool,
    /// Write PEM ("-----BEGIN CMS-----") instead of DER.
    #[arg(long)]
    pub pem: bool,
    /// Sign even when the certificate is expired or not yet valid.
    #[arg(long)]
    pub force: bool,
}

/// `tessera verify`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tessera verify contract.pdf.p7s contract.pdf   a detached signature and its file
  tessera verify memo.txt.p7s                    an attached signature
  tessera verify --ca ca.pem contract.pdf.p7s contract.pdf   also check the issuer")]
pub struct VerifyArgs {
    /// The signature (.p7s, DER or PEM).
    pub signature: PathBuf,
    /// The signed file (needed for a detached signature; for an attached one it must match).
    pub file: Option<PathBuf>,
    /// Also check that the signer's certificate was issued by a CA certificate in FILE (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Write the signed content of an attached signature to FILE.
    #[arg(long, value_name = "FILE")]
    pub extract: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// The card as a RustCrypto signer

/// A signature made by the card, in the encoding X.509 and CMS carry (RSA as is, ECDSA as a DER
/// ECDSA-Sig-Value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSignature(pub Vec<u8>);

impl SignatureBitStringEncoding for CardSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

/// The public half of a card key (SubjectPublicKeyInfo DER), as the builders want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPublicKey(pub Vec<u8>);

impl EncodePublicKey for CardPublicKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::from_der(&self.0)?)
    }
}

/// How a [`CardSigner`] reaches its key.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// C_SignInit / C_Login(CKU_CONTEXT_SPECIFIC) / C_Sign on the private key object.
    Core {
        key: CK_OBJECT_HANDLE,
        always_authenticate: bool,
    },
    /// The core's host half ([`SignOp`]) around the PIV driver's private-key operation, run
    /// through the core's administration hook: for keys the token model does not offer for
    /// signing (a staged renewal key has no certificate yet, so its slot's defaults apply).
    Driver {
        algorithm: KeyAlgorithm,
        verify_pin: bool,
    },
}

/// A private key on the card that signs through the core, with SHA-256 (RSA PKCS#1 v1.5 or
/// ECDSA). The PIN is given again for keys that want it before every signature (9C).
pub struct CardSigner<'a> {
    card: &'a CardSession,
    slot: KeySlot,
    route: Route,
    public: PublicKey,
    pin: Zeroizing<Vec<u8>>,
    failure: RefCell<Option<ManagerError>>,
}

impl std::fmt::Debug for CardSigner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardSigner(slot {}, {:?})", self.slot, self.route)
    }
}

impl<'a> CardSigner<'a> {
    /// The signing key in `slot` of a card the user is logged in to, used as PKCS#11 offers
    /// it (refused when its certificate does not allow signatures).
    pub fn new(card: &'a CardSession, slot: KeySlot, pin: &[u8]) -> Result<Self> {
        Self::build(card, slot, pin, false)
    }

    /// The key in `slot`, also when the token model does not offer it for signing (a staged
    /// key without certificate, a key-management key proving its owner's request).
    pub fn for_renewal(card: &'a CardSession, slot: KeySlot, pin: &[u8]) -> Result<Self> {
        Self::build(card, slot, pin, true)
    }

    fn build(card: &'a CardSession, slot: KeySlot, pin: &[u8], any_use: bool) -> Result<Self> {
        let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
        let Some(entry) = contents.entry(slot) else {
            return fail(format!("slot {slot} holds no key"));
        };
        let route = if any_use && !entry.usage().sign {
            Route::Driver {
                algorithm: entry.algorithm,
                verify_pin: entry.always_authenticate(),
            }
        } else {
            if !entry.usage().sign {
                return fail(format!(
                    "the certificate in slot {slot} does not allow signatures (key usage)"
                ));
            }
            let key = card
                .find(&[
                    attr_ulong(CKA_CLASS, CKO_PRIVATE_KEY),
                    attr_bytes(CKA_ID, &[slot.cka_id()]),
                ])?
                .first()
                .copied()
                .ok_or_else(|| ManagerError {
                    message: format!(
                        "the private key of slot {slot} is not available (log in first)"
                    ),
                })?;
            let always_authenticate = matches!(
                with(|lib| lib.get_attributes(card.handle, key, &[CKA_ALWAYS_AUTHENTICATE]))?.first(),
                Some(AttrAnswer::Value(v)) if v.first() == Some(&1)
            );
            Route::Core {
                key,
                always_authenticate,
            }
        };
        Ok(Self {
            card,
            slot,
            route,
            public: entry.public_key.clone(),
            pin: Zeroizing::new(pin.to_vec()),
            failure: RefCell::new(None),
        })
    }

    /// The slot of the key.
    pub fn slot(&self) -> KeySlot {
        self.slot
    }

    /// The key's public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Why the last signature failed, in words (the builders only see a generic error).
    pub fn take_failure(&self) -> Option<ManagerError> {
        self.failure.borrow_mut().take()
    }

    /// Turns a builder error into the card's reason when there is one.
    pub fn explain(&self, what: &str, e: impl std::fmt::Display) -> ManagerError {
        self.take_failure().unwrap_or_else(|| ManagerError {
            message: format!("cannot build the {what}: {e}"),
        })
    }

    fn mechanism(&self) -> Mechanism {
        Mechanism {
            ty: match self.public.key_info() {
                KeyInfo::Rsa { .. } => CKM_SHA256_RSA_PKCS,
                KeyInfo::Ec { .. } => CKM_ECDSA_SHA256,
            },
            param: MechParam::None,
        }
    }

    fn raw_signature(&self, mech: &Mechanism, message: &[u8]) -> Result<Vec<u8>> {
        let h = self.card.handle;
        match self.route {
            Route::Core {
                key,
                always_authenticate,
            } => with(|lib| {
                lib.sign_init(h, mech, key)?;
                if always_authenticate {
                    lib.login(h, CKU_CONTEXT_SPECIFIC, &self.pin)?;
                }
                let len = lib.sign(h, message, OutBuf::Query)?;
                let mut sig = vec![0u8; len];
                let n = lib.sign(h, message, OutBuf::Into(&mut sig))?;
                sig.truncate(n);
                Ok(sig)
            })
            .map_err(|e| self.card.explain(e, true)),
            Route::Driver {
                algorithm,
                verify_pin,
            } => {
                let mut op = SignOp::new(mech, self.public.key_info())?;
                op.update(message)?;
                let input = op.card_input()?;
                let out = with(|lib| {
                    lib.administer(h, true, false, |ch, _| {
                        if verify_pin {
                            let status = piv::verify_pin(ch, Some(&self.pin))?;
                            if status != PinStatus::Verified {
                                return Ok(Err(status));
                            }
                        }
                        Ok(Ok(keys::private_operation(
                            ch, self.slot, algorithm, &input,
                        )?))
                    })
                })?;
                match out {
                    Ok(answer) => Ok(op.finish(&answer)?),
                    Err(PinStatus::TriesLeft(n)) => fail(format!(
                        "wrong PIN: {n} {} left",
                        if n == 1 { "try" } else { "tries" }
                    )),
                    Err(_) => {
                        fail("the PIN is blocked: unblock it with the PUK (`tessera pin unblock`)")
                    }
                }
            }
        }
    }

    /// Signs `message` (hashed with SHA-256 on the host, signed by the card) and checks the
    /// signature with the public key. ECDSA signatures come back DER-encoded.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>> {
        let mech = self.mechanism();
        let raw = self.raw_signature(&mech, message)?;
        let mut op = VerifyOp::new(&mech, self.public.key_info())?;
        op.update(message)?;
        if op.verify(&self.public, &raw).is_err() {
            return fail(format!(
                "the card's signature with slot {} does not verify with its public key",
                self.slot
            ));
        }
        match self.public.curve() {
            None => Ok(raw),
            Some(curve) => ecdsa_raw_to_der(curve, &raw),
        }
    }
}

impl Keypair for CardSigner<'_> {
    type VerifyingKey = CardPublicKey;

    fn verifying_key(&self) -> CardPublicKey {
        CardPublicKey(self.public.to_spki_der())
    }
}

impl DynSignatureAlgorithmIdentifier for CardSigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(signature_algorithm(&self.public))
    }
}

impl signature::Signer<CardSignature> for CardSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<CardSignature, signature::Error> {
        match self.sign_bytes(msg) {
            Ok(sig) => Ok(CardSignature(sig)),
            Err(e) => {
                *self.failure.borrow_mut() = Some(e);
                Err(signature::Error::new())
            }
        }
    }
}

/// The signature algorithm a card key signs with: sha256WithRSAEncryption or
/// ecdsa-with-SHA256.
pub fn signature_algorithm(public: &PublicKey) -> AlgorithmIdentifierOwned {
    match public.key_info() {
        KeyInfo::Rsa { .. } => AlgorithmIdentifierOwned {
            oid: rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(Any::from(der::asn1::Null)),
        },
        KeyInfo::Ec { .. } => AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
    }
}

/// r‖s (PKCS#11) → DER ECDSA-Sig-Value (X.509, CMS).
pub fn ecdsa_raw_to_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>> {
    let bad = |_| ManagerError {
        message: "the card returned a malformed ECDSA signature".into(),
    };
    Ok(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec(),
    })
}

/// DER ECDSA-Sig-Value → r‖s; `None` when it does not parse for this curve.
pub fn ecdsa_der_to_raw(curve: Curve, der_sig: &[u8]) -> Option<Vec<u8>> {
    match curve {
        Curve::P256 => p256::ecdsa::Signature::from_der(der_sig)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        Curve::P384 => p384::ecdsa::Signature::from_der(der_sig)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
    }
}

// ---------------------------------------------------------------------------------------------
// Files: PEM or DER

/// The DER blocks of a PEM text with one of `labels` (all blocks when `labels` is empty);
/// `None` when the bytes are not PEM.
pub fn pem_blocks(bytes: &[u8], labels: &[&str]) -> Option<Vec<Vec<u8>>> {
    use base64ct::{Base64, Encoding};
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.contains("-----BEGIN ") {
        return None;
    }
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_owned(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some((label, body)) = current.take() {
                if labels.is_empty() || labels.contains(&label.as_str()) {
                    out.push(Base64::decode_vec(&body).ok()?);
                }
            }
        } else if let Some((_, body)) = current.as_mut() {
            if !line.contains(':') {
                body.push_str(line);
            }
        }
    }
    Some(out)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ManagerError {
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// Certificates from a file: PEM (any number) or one DER certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<Certificate>> {
    let bytes = read_file(path)?;
    let ders = pem_blocks(&bytes, &["CERTIFICATE", "TRUSTED CERTIFICATE"]).unwrap_or(vec![bytes]);
    let certs: Vec<Certificate> = ders
        .iter()
        .map(|d| Certificate::from_der(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ManagerError {
            message: format!("{} holds no readable certificate: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return fail(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Consecutive DER certificates (the card's certificate followed by its stored chain).
pub fn split_certificates(bytes: &[u8]) -> Result<Vec<Certificate>> {
    use der::Reader;
    let damaged = |e: der::Error| ManagerError {
        message: format!("a stored certificate is damaged: {e}"),
    };
    let mut reader = der::SliceReader::new(bytes).map_err(damaged)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        out.push(Certificate::decode(&mut reader).map_err(damaged)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Signing

/// Builds a CMS SignedData (DER ContentInfo) over `content` with the card key, SHA-256, the
/// signed attributes content-type, message-digest and signing-time, and the signer's
/// certificate (then `chain`) included. Detached unless `attached`.
pub fn sign_content(
    signer: &CardSigner<'_>,
    certificate: &Certificate,
    chain: &[Certificate],
    content: &[u8],
    attached: bool,
) -> Result<Vec<u8>> {
    let cert_key = PublicKey::from_spki_der(
        &certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(der_error)?,
    )?;
    if &cert_key != signer.public_key() {
        return fail(format!(
            "the certificate in slot {} does not belong to its key",
            signer.slot()
        ));
    }
    let digest = HashAlg::Sha256.digest(content);
    let econtent = if attached {
        Some(Any::new(Tag::OctetString, content).map_err(der_error)?)
    } else {
        None
    };
    let eci = EncapsulatedContentInfo {
        econtent_type: rfc5911::ID_DATA,
        econtent,
    };
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: certificate.tbs_certificate.issuer.clone(),
        serial_number: certificate.tbs_certificate.serial_number.clone(),
    });
    let external = if attached {
        None
    } else {
        Some(digest.as_slice())
    };
    let mut info = SignerInfoBuilder::new(signer, sid, sha256.clone(), &eci, external)
        .map_err(|e| signer.explain("signature", e))?;
    info.add_signed_attribute(
        create_signing_time_attribute().map_err(|e| signer.explain("signature", e))?,
    )
    .map_err(|e| signer.explain("signature", e))?;
    let mut builder = SignedDataBuilder::new(&eci);
    builder
        .add_digest_algorithm(sha256)
        .map_err(|e| signer.explain("signature", e))?;
    for c in std::iter::once(certificate).chain(chain) {
        builder
            .add_certificate(CertificateChoices::Certificate(c.clone()))
            .map_err(|e| signer.explain("signature", e))?;
    }
    builder
        .add_signer_info::<_, CardSignature>(info)
        .map_err(|e| signer.explain("signature", e))?;
    let content_info = builder
        .build()
        .map_err(|e| signer.explain("signature", e))?;
    content_info.to_der().map_err(der_error)
}

fn der_error(e: der::Error) -> ManagerError {
    ManagerError {
        message: format!("encoding failed: {e}"),
    }
}

/// The certificate of `slot` and the CA chain stored with it.
pub fn slot_certificates(
    card: &CardSession,
    slot: KeySlot,
) -> Result<(Certificate, Vec<Certificate>)> {
    let ders = certs::export(card, slot, certs::Format::Der, true)?;
    let mut all = split_certificates(&ders)?.into_iter();
    let Some(first) = all.next() else {
        return fail(format!("slot {slot} holds no certificate"));
    };
    Ok((first, all.collect()))
}

/// The slot `tessera sign` uses: the one named, else 9c when it has a certificate, else 9a.
pub fn signing_slot(card: &CardSession, named: Option<KeySlot>) -> Result<KeySlot> {
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let has_cert = |s: KeySlot| contents.entry(s).is_some_and(|e| e.certificate.is_some());
    if let Some(s) = named {
        return if has_cert(s) {
            Ok(s)
        } else {
            fail(format!("slot {s} holds no certificate to sign with"))
        };
    }
    [KeySlot::SIGNATURE, KeySlot::AUTHENTICATION]
        .into_iter()
        .find(|s| has_cert(*s))
        .map_or_else(
            || fail("neither slot 9c nor 9a holds a certificate: load an e-Cert first (`tessera import`)"),
            Ok,
        )
}

/// What `tessera sign` did.
#[derive(Debug, Clone, Serialize)]
pub struct SignReport {
    /// Key slot used.
    pub slot: String,
    /// The signer's certificate subject.
    pub signer: String,
    /// The signature file.
    pub output: PathBuf,
    /// The content is inside the signature.
    pub attached: bool,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Signature algorithm.
    pub algorithm: String,
}

/// Signs `content` with the card key in `slot` (default as [`signing_slot`]); returns the
/// DER SignedData, the slot and the signer's subject. Logs in with `pin`.
pub fn sign_data(
    card: &CardSession,
    slot: Option<KeySlot>,
    content: &[u8],
    attached: bool,
    force: bool,
    pin: &[u8],
) -> Result<(Vec<u8>, KeySlot, String)> {
    let slot = signing_slot(card, slot)?;
    let (certificate, chain) = slot_certificates(card, slot)?;
    if !force && !valid_at(&certificate, now_unix()) {
        let v = &certificate.tbs_certificate.validity;
        return fail(format!(
            "the certificate in slot {slot} is not valid now (valid {} to {}): a signature with it would not be accepted (use --force to sign anyway)",
            v.not_before, v.not_after
        ));
    }
    card.login_user(pin)?;
    let signer = CardSigner::new(card, slot, pin)?;
    let der_bytes = sign_content(&signer, &certificate, &chain, content, attached)?;
    Ok((
        der_bytes,
        slot,
        certificate.tbs_certificate.subject.to_string(),
    ))
}

/// Runs `tessera sign`.
pub fn sign(opts: &Options, args: &SignArgs) -> Result<()> {
    let content = read_file(&args.file)?;
    let slot = args.slot.as_deref().map(certs::parse_slot).transpose()?;
    let card = super::open(opts)?;
    let pin = super::secret::read("PIN", opts.pin_file.as_deref(), false)?;
    let (der_bytes, slot, subject) = sign_data(
        &card,
        slot,
        &content,
        args.attached,
        args.force,
        pin.as_bytes(),
    )?;
    let output = args.output.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".p7s");
        PathBuf::from(name)
    });
    let bytes = if args.pem {
        certs::pem(&der_bytes, "CMS").into_bytes()
    } else {
        der_bytes
    };
    std::fs::write(&output, bytes).map_err(|e| ManagerError {
        message: format!("cannot write {}: {e}", output.display()),
    })?;
    let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let algorithm = contents
        .entry(slot)
        .map(|e| e.algorithm.name().to_owned())
        .unwrap_or_default();
    let report = SignReport {
        slot: slot.to_string(),
        signer: subject,
        output,
        attached: args.attached,
        sha256: hex::encode(HashAlg::Sha256.digest(&content)),
        algorithm: format!("{algorithm} with SHA-256"),
    };
    if opts.json {
        return print_json(&report);
    }
    say!(
        "signed {} with the key in slot {} ({})",
        args.file.display(),
        report.slot,
        report.algorithm
    );
    say!("signer:    {}", report.signer);
    say!(
        "signature: {} ({}, CMS SignedData with content-type, message-digest and signing-time)",
        report.output.display(),
        if report.attached {
            "attached"
        } else {
            "detached"
        }
    );
    Ok(())
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ManagerError {
        message: e.to_string(),
    })?;
    say!("{text}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Verification

/// The hash of a digest algorithm identifier.
pub fn digest_of(oid: &ObjectIdentifier) -> Option<HashAlg> {
    Some(match *oid {
        rfc5912::ID_SHA_1 => HashAlg::Sha1,
        rfc5912::ID_SHA_224 => HashAlg::Sha224,
        rfc5912::ID_SHA_256 => HashAlg::Sha256,
        rfc5912::ID_SHA_384 => HashAlg::Sha384,
        rfc5912::ID_SHA_512 => HashAlg::Sha512,
        _ => return None,
    })
}

/// ecdsa-with-SHA1 (RFC 3279).
const ECDSA_WITH_SHA_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");

/// A signature algorithm's name (its OID when unknown).
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    const_oid::db::DB
        .by_oid(oid)
        .map_or_else(|| oid.to_string(), str::to_owned)
}

/// The hash a signature algorithm names (`None`: it names none, e.g. rsaEncryption).
fn hash_of_signature(oid: &ObjectIdentifier) -> Option<HashAlg> {
    Some(match *oid {
        rfc5912::SHA_1_WITH_RSA_ENCRYPTION | ECDSA_WITH_SHA_1 => HashAlg::Sha1,
        rfc5912::SHA_224_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_224 => HashAlg::Sha224,
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_256 => HashAlg::Sha256,
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_384 => HashAlg::Sha384,
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_512 => HashAlg::Sha512,
        _ => return None,
    })
}

fn mechanism_for(key: &KeyInfo, hash: HashAlg) -> CK_MECHANISM_TYPE {
    match (key, hash) {
        (KeyInfo::Rsa { .. }, HashAlg::Sha1) => CKM_SHA1_RSA_PKCS,
        (KeyInfo::Rsa { .. }, HashAlg::Sha224) => CKM_SHA224_RSA_PKCS,
        (KeyInfo::Rsa { .. }, HashAlg::Sha256) => CKM_SHA256_RSA_PKCS,
        (KeyInfo::Rsa { .. }, HashAlg::Sha384) => CKM_SHA384_RSA_PKCS,
        (KeyInfo::Rsa { .. }, HashAlg::Sha512) => CKM_SHA512_RSA_PKCS,
        (KeyInfo::Ec { .. }, HashAlg::Sha1) => CKM_ECDSA_SHA1,
        (KeyInfo::Ec { .. }, HashAlg::Sha224) => CKM_ECDSA_SHA224,
        (KeyInfo::Ec { .. }, HashAlg::Sha256) => CKM_ECDSA_SHA256,
        (KeyInfo::Ec { .. }, HashAlg::Sha384) => CKM_ECDSA_SHA384,
        (KeyInfo::Ec { .. }, HashAlg::Sha512) => CKM_ECDSA_SHA512,
    }
}

/// Checks `signature` over `data` with `public`, for the signature algorithm `alg`
/// (PKCS#1 v1.5 or ECDSA with SHA-1..SHA-512). `digest` is the hash to use when `alg` names
/// none (CMS allows rsaEncryption with the SignerInfo's digest algorithm). Err says why not.
pub fn verify_signature(
    public: &PublicKey,
    alg: &AlgorithmIdentifierOwned,
    digest: Option<HashAlg>,
    data: &[u8],
    signature: &[u8],
) -> Result<()> {
    if alg.oid == rfc5912::ID_RSASSA_PSS {
        return fail("RSA-PSS signatures are not supported yet");
    }
    let hash = hash_of_signature(&alg.oid)
        .or(
            if alg.oid == rfc5912::RSA_ENCRYPTION || alg.oid == rfc5912::ID_EC_PUBLIC_KEY {
                digest
            } else {
                None
            },
        )
        .ok_or_else(|| ManagerError {
            message: format!("unsupported signature algorithm {}", alg.oid),
        })?;
    let info = public.key_info();
    let rsa_alg = alg.oid == rfc5912::RSA_ENCRYPTION
        || matches!(
            alg.oid,
            rfc5912::SHA_1_WITH_RSA_ENCRYPTION
                | rfc5912::SHA_224_WITH_RSA_ENCRYPTION
                | rfc5912::SHA_256_WITH_RSA_ENCRYPTION
                | rfc5912::SHA_384_WITH_RSA_ENCRYPTION
                | rfc5912::SHA_512_WITH_RSA_ENCRYPTION
        );
    if rsa_alg != matches!(info, KeyInfo::Rsa { .. }) {
        return fail("the signature algorithm does not fit the signer's key");
    }
    let raw = match public.curve() {
        None => signature.to_vec(),
        Some(curve) => ecdsa_der_to_raw(curve, signature).ok_or_else(|| ManagerError {
            message: "the ECDSA signature is malformed".into(),
        })?,
    };
    let mech = Mechanism {
        ty: mechanism_for(&info, hash),
        param: MechParam::None,
    };
    let mut op = VerifyOp::new(&mech, info)?;
    op.update(data)?;
    op.verify(public, &raw).map_err(|_| ManagerError {
        message: "the signature does not verify".into(),
    })
}

/// The public key of a certificate.
pub fn certificate_key(cert: &Certificate) -> Result<PublicKey> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(der_error)?;
    PublicKey::from_spki_der(&spki).map_err(|_| ManagerError {
        message: "the certificate's public key is of a kind Tessera cannot check".into(),
    })
}

/// Checks that `ca` issued `cert`: the issuer name is the CA's subject and the CA's key
/// verifies the certificate's signature.
pub fn check_issued_by(cert: &Certificate, ca: &Certificate) -> Result<()> {
    if cert.tbs_certificate.issuer != ca.tbs_certificate.subject {
        return fail("the issuer name is not the CA's");
    }
    let tbs = cert.tbs_certificate.to_der().map_err(der_error)?;
    let sig = cert.signature.as_bytes().ok_or_else(|| ManagerError {
        message: "the certificate's signature is malformed".into(),
    })?;
    verify_signature(
        &certificate_key(ca)?,
        &cert.signature_algorithm,
        None,
        &tbs,
        sig,
    )
    .map_err(|e| ManagerError {
        message: format!("the CA's key does not verify the certificate ({e})"),
    })
}

/// The CA among `cas` that issued `cert`, if any.
pub fn find_issuer<'c>(cert: &Certificate, cas: &'c [Certificate]) -> Option<&'c Certificate> {
    cas.iter().find(|ca| check_issued_by(cert, ca).is_ok())
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `cert` is valid at `when` (Unix seconds).
pub fn valid_at(cert: &Certificate, when: u64) -> bool {
    let v = &cert.tbs_certificate.validity;
    v.not_before.to_unix_duration().as_secs() <= when
        && when <= v.not_after.to_unix_duration().as_secs()
}

/// One signer of a verified signature.
#[derive(Debug, Clone, Serialize)]
pub struct SignerReport {
    /// Signer's certificate subject.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// Its serial, hex.
    pub serial: String,
    /// The signing-time attribute (UTC), when present.
    pub signing_time: Option<String>,
    /// Digest algorithm.
    pub digest: String,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// Result of the issuer check: `null` when no CA was given.
    pub chain: Option<String>,
}

/// What `tessera verify` checked.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Every signature verified.
    pub valid: bool,
    /// The content was inside the signature.
    pub attached: bool,
    /// The signers.
    pub signers: Vec<SignerReport>,
    /// What was checked, in words.
    pub checked: Vec<String>,
    /// What was not checked.
    pub not_checked: Vec<String>,
}

/// Reads a CMS SignedData (DER or PEM).
pub fn parse_signed_data(bytes: &[u8]) -> Result<SignedData> {
    let der_bytes = match pem_blocks(bytes, &["CMS", "PKCS7", "PKCS #7 SIGNED DATA"]) {
        Some(mut blocks) if !blocks.is_empty() => blocks.swap_remove(0),
        Some(_) => return fail("the PEM file holds no CMS block"),
        None => bytes.to_vec(),
    };
    let ci = ContentInfo::from_der(&der_bytes).map_err(|e| ManagerError {
        message: format!("not a CMS signature: {e}"),
    })?;
    if ci.content_type != rfc5911::ID_SIGNED_DATA {
        return fail(format!(
            "the CMS message is not SignedData but {}",
            ci.content_type
        ));
    }
    ci.content
        .decode_as::<SignedData>()
        .map_err(|e| ManagerError {
            message: format!("the SignedData does not parse: {e}"),
        })
}

/// The content an attached signature carries.
pub fn attached_content(sd: &SignedData) -> Option<Vec<u8>> {
    sd.encap_content_info
        .econtent
        .as_ref()
        .map(|c| c.value().to_vec())
}

fn signer_certificate<'s>(sd: &'s SignedData, si: &SignerInfo) -> Option<&'s Certificate> {
    let certs = sd.certificates.as_ref()?;
    certs.0.iter().find_map(|choice| {
        let CertificateChoices::Certificate(c) = choice else {
            return None;
        };
        let tbs = &c.tbs_certificate;
        let matches = match &si.sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                tbs.issuer == ias.issuer && tbs.serial_number == ias.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
                .extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
                .and_then(|e| {
                    x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(e.extn_value.as_bytes())
                        .ok()
                })
                .is_some_and(|k| k.0 == ski.0),
        };
        matches.then_some(c)
    })
}

fn attribute(si: &SignerInfo, oid: ObjectIdentifier) -> Option<&Any> {
    si.signed_attrs
        .as_ref()?
        .iter()
        .find(|a| a.oid == oid)
        .and_then(|a| a.values.iter().next())
}

fn signing_time(si: &SignerInfo) -> Option<x509_cert::time::Time> {
    let any = attribute(si, rfc5911::ID_SIGNING_TIME)?;
    x509_cert::time::Time::from_der(&any.to_der().ok()?).ok()
}

/// Verifies one signer: the signature over the signed attributes (or over the content when
/// there are none) with the embedded certificate's key, and the message digest.
fn verify_signer(
    sd: &SignedData,
    si: &SignerInfo,
    content: &[u8],
    cas: &[Certificate],
) -> Result<SignerReport> {
    let cert = signer_certificate(sd, si).ok_or_else(|| ManagerError {
        message: "the signer's certificate is not in the signature".into(),
    })?;
    let hash = digest_of(&si.digest_alg.oid).ok_or_else(|| ManagerError {
        message: format!("unsupported digest algorithm {}", si.digest_alg.oid),
    })?;
    let digest = hash.digest(content);
    let signed: Vec<u8> = match &si.signed_attrs {
        Some(attrs) => {
            let md = attribute(si, rfc5911::ID_MESSAGE_DIGEST)
                .and_then(|a| a.decode_as::<der::asn1::OctetString>().ok())
                .ok_or_else(|| ManagerError {
                    message: "the signature has signed attributes but no message digest".into(),
                })?;
            if md.as_bytes() != digest.as_slice() {
                return fail("signature INVALID: the content was altered (its digest differs from the signed message digest)");
            }
            let ct = attribute(si, rfc5911::ID_CONTENT_TYPE)
                .and_then(|a| a.decode_as::<ObjectIdentifier>().ok());
            if ct != Some(sd.encap_content_info.econtent_type) {
                return fail(
                    "signature INVALID: the signed content-type differs from the content's",
                );
            }
            attrs.to_der().map_err(der_error)?
        }
        None => content.to_vec(),
    };
    let public = certificate_key(cert)?;
    verify_signature(
        &public,
        &si.signature_algorithm,
        Some(hash),
        &signed,
        si.signature.as_bytes(),
    )
    .map_err(|e| ManagerError {
        message: format!(
            "signature INVALID for {}: {}",
            cert.tbs_certificate.subject, e.message
        ),
    })?;
    let time = signing_time(si);
    let chain = if cas.is_empty() {
        None
    } else {
        let when = time
            .map(|t| t.to_unix_duration().as_secs())
            .unwrap_or_else(now_unix);
        let Some(ca) = find_issuer(cert, cas) else {
            return fail(format!(
                "the signer's certificate ({}) was not issued by a CA in the given file",
                cert.tbs_certificate.subject
            ));
        };
        if !valid_at(cert, when) {
            return fail(format!(
                "the signer's certificate was not valid at the signing time (valid {} to {})",
                cert.tbs_certificate.validity.not_before, cert.tbs_certificate.validity.not_after
            ));
        }
        Some(format!(
            "issued by {} (certificate signature checked, valid at the signing time)",
            ca.tbs_certificate.subject
        ))
    };
    Ok(SignerReport {
        subject: cert.tbs_certificate.subject.to_string(),
        issuer: cert.tbs_certificate.issuer.to_string(),
        serial: hex::encode(cert.tbs_certificate.serial_number.as_bytes()),
        signing_time: time.map(|t| t.to_date_time().to_string()),
        digest: format!("{hash:?}").to_uppercase().replace("SHA", "SHA-"),
        signature_algorithm: algorithm_name(&si.signature_algorithm.oid),
        chain,
    })
}

/// Verifies a CMS SignedData (`bytes`, DER or PEM) over `content` (the detached file; for an
/// attached signature it may be given and must then be the same). `cas`: check the signer
/// certificates' issuer too (none: not checked).
pub fn verify_bytes(
    bytes: &[u8],
    content: Option<&[u8]>,
    cas: &[Certificate],
) -> Result<VerifyReport> {
    let sd = parse_signed_data(bytes)?;
    let embedded = attached_content(&sd);
    let content: Vec<u8> = match (&embedded, content) {
        (Some(e), Some(c)) if e.as_slice() != c => {
            return fail("signature INVALID for this file: the file differs from the content inside the signature")
        }
        (Some(e), _) => e.clone(),
        (None, Some(c)) => c.to_vec(),
        (None, None) => {
            return fail("this is a detached signature: name the signed file too (`tessera verify FILE.p7s FILE`)")
        }
    };
    if sd.signer_infos.0.is_empty() {
        return fail("the signature has no signers");
    }
    let signers = sd
        .signer_infos
        .0
        .iter()
        .map(|si| verify_signer(&sd, si, &content, cas))
        .collect::<Result<Vec<_>>>()?;
    let mut checked = vec![
        "signature over the signed attributes with the signer certificate's key".to_owned(),
        "message digest equals the content's hash".to_owned(),
        "content-type attribute".to_owned(),
    ];
    let mut not_checked = vec!["revocation of the signer's certificate".to_owned()];
    if cas.is_empty() {
        not_checked.insert(
            0,
            "the signer certificate's issuer (give --ca FILE to check it)".to_owned(),
        );
    } else {
        checked
            .push("signer certificate issued by the given CA and valid at the signing time".into());
    }
    Ok(VerifyReport {
        valid: true,
        attached: embedded.is_some(),
        signers,
        checked,
        not_checked,
    })
}

/// Runs `tessera verify`.
pub fn verify(opts: &Options, args: &VerifyArgs) -> Result<()> {
    let bytes = read_file(&args.signature)?;
    let content = args.file.as_deref().map(read_file).transpose()?;
    let cas = args
        .ca
        .as_deref()
        .map(read_certificates)
        .transpose()?
        .unwrap_or_default();
    let report = verify_bytes(&bytes, content.as_deref(), &cas)?;
    if let Some(path) = &args.extract {
        let sd = parse_signed_data(&bytes)?;
        let Some(c) = attached_content(&sd) else {
            return fail("--extract: the signature is detached and carries no content");
        };
        std::fs::write(path, c)?;
    }
    if opts.json {
        return print_json(&report);
    }
    for s in &report.signers {
        say!("signer:       {}", s.subject);
        say!("issuer:       {}", s.issuer);
        say!("serial:       {}", s.serial);
        if let Some(t) = &s.signing_time {
            say!("signing time: {t}");
        }
        if let Some(c) = &s.chain {
            say!("certificate:  {c}");
        }
    }
    say!(
        "signature valid ({} content; checked: {})",
        if report.attached {
            "attached"
        } else {
            "detached"
        },
        report.checked.join(", ")
    );
    say!("not checked: {}", report.not_checked.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_pick_labels() {
        let text = b"junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n-----BEGIN CMS-----\nBAU=\n-----END CMS-----\n";
        assert_eq!(
            pem_blocks(text, &["CERTIFICATE"]).unwrap(),
            vec![vec![1, 2, 3]]
        );
        assert_eq!(pem_blocks(text, &["CMS"]).unwrap(), vec![vec![4, 5]]);
        assert_eq!(pem_blocks(text, &[]).unwrap().len(), 2);
        assert!(pem_blocks(&[0x30, 0x03, 1, 2, 3], &[]).is_none());
    }

    #[test]
    fn ecdsa_encodings_round_trip() {
        let mut raw = vec![0u8; 64];
        raw[31] = 7;
        raw[63] = 9;
        let der_sig = ecdsa_raw_to_der(Curve::P256, &raw).unwrap();
        assert_eq!(der_sig, vec![0x30, 0x06, 0x02, 0x01, 7, 0x02, 0x01, 9]);
        assert_eq!(ecdsa_der_to_raw(Curve::P256, &der_sig).unwrap(), raw);
        assert!(ecdsa_der_to_raw(Curve::P384, &[0x30, 0x00]).is_none());
    }

    #[test]
    fn digest_names() {
        assert_eq!(digest_of(&rfc5912::ID_SHA_256), Some(HashAlg::Sha256));
        assert_eq!(
            hash_of_signature(&rfc5912::ECDSA_WITH_SHA_384),
            Some(HashAlg::Sha384)
        );
        assert_eq!(hash_of_signature(&rfc5912::RSA_ENCRYPTION), None);
    }

    #[test]
    fn detached_signature_needs_its_file() {
        let err = verify_bytes(b"\x30\x03\x02\x01\x00", None, &[]).unwrap_err();
        assert!(err.message.contains("not a CMS signature"));
    }
}
