//! Checking CMS SignedData (`tessera verify`): host code only, no card needed.

#[allow(unused_imports)]
use super::*;

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
pub(super) fn algorithm_name(oid: &ObjectIdentifier) -> String {
    const_oid::db::DB
        .by_oid(oid)
        .map_or_else(|| oid.to_string(), str::to_owned)
}

/// The hash a signature algorithm names (`None`: it names none, e.g. rsaEncryption).
pub(super) fn hash_of_signature(oid: &ObjectIdentifier) -> Option<HashAlg> {
    Some(match *oid {
        rfc5912::SHA_1_WITH_RSA_ENCRYPTION | ECDSA_WITH_SHA_1 => HashAlg::Sha1,
        rfc5912::SHA_224_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_224 => HashAlg::Sha224,
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_256 => HashAlg::Sha256,
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_384 => HashAlg::Sha384,
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_512 => HashAlg::Sha512,
        _ => return None,
    })
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
            class: crate::manager::ErrorClass::Refused,
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
            class: crate::manager::ErrorClass::Refused,
            message: "the ECDSA signature is malformed".into(),
        })?,
    };
    let mech = Mechanism {
        ty: crate::token::mechanism::signing_mechanism(&info, hash),
        param: MechParam::None,
    };
    let mut op = VerifyOp::new(&mech, info)?;
    op.update(data)?;
    op.verify(public, &raw).map_err(|_| ManagerError {
        class: crate::manager::ErrorClass::Refused,
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
        class: crate::manager::ErrorClass::Refused,
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
        class: crate::manager::ErrorClass::Refused,
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
        class: crate::manager::ErrorClass::Refused,
        message: format!("the CA's key does not verify the certificate ({e})"),
    })
}

/// The CA among `cas` that issued `cert`, if any.
pub fn find_issuer<'c>(cert: &Certificate, cas: &'c [Certificate]) -> Option<&'c Certificate> {
    cas.iter().find(|ca| check_issued_by(cert, ca).is_ok())
}

/// How long a certification path may be (leaf to anchor).
const MAX_PATH: usize = 10;

/// Whether a certificate may issue others: basicConstraints with cA true (RFC 5280 §4.2.1.9;
/// a CA certificate without the extension is not accepted as an intermediate).
fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == rfc5280::ID_CE_BASIC_CONSTRAINTS)
        .and_then(|e| {
            x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).ok()
        })
        .is_some_and(|bc| bc.ca)
}

/// The certification path from `cert` to one of `anchors` (trusted as they are), through the
/// CA certificates in `intermediates` (each checked: name, signature, cA, validity at `when`).
/// Loops cannot happen (a certificate is used once) and the path is at most [`MAX_PATH`] long.
/// Err says why no path was found.
pub fn build_path<'c>(
    cert: &'c Certificate,
    intermediates: &'c [Certificate],
    anchors: &'c [Certificate],
    when: u64,
) -> std::result::Result<Vec<&'c Certificate>, String> {
    let mut path = vec![cert];
    let mut current = cert;
    for _ in 0..MAX_PATH {
        if !valid_at(current, when) {
            return Err(format!(
                "{} was not valid at the signing time (valid {} to {})",
                current.tbs_certificate.subject,
                current.tbs_certificate.validity.not_before,
                current.tbs_certificate.validity.not_after
            ));
        }
        if anchors.iter().any(|a| a == current) {
            return Ok(path);
        }
        if let Some(anchor) = anchors.iter().find(|a| check_issued_by(current, a).is_ok()) {
            path.push(anchor);
            return Ok(path);
        }
        let next = intermediates.iter().find(|i| {
            !path.iter().any(|p| p == i) && is_ca(i) && check_issued_by(current, i).is_ok()
        });
        match next {
            Some(i) => {
                path.push(i);
                current = i;
            }
            None => {
                return Err(format!(
                    "no trusted CA issued {} (issuer {})",
                    current.tbs_certificate.subject, current.tbs_certificate.issuer
                ))
            }
        }
    }
    Err(format!(
        "the certification path is longer than {MAX_PATH} certificates"
    ))
}

/// The system's trust store (Debian: /etc/ssl/certs/ca-certificates.crt; `SSL_CERT_FILE`
/// overrides), as OpenSSL uses it. Unreadable or absent: no anchors.
pub fn system_anchors() -> Vec<Certificate> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    read_certificates(&path).unwrap_or_default()
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
        class: crate::manager::ErrorClass::Refused,
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
            class: crate::manager::ErrorClass::Refused,
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

pub(super) fn signer_certificate<'s>(
    sd: &'s SignedData,
    si: &SignerInfo,
) -> Option<&'s Certificate> {
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

pub(super) fn attribute(si: &SignerInfo, oid: ObjectIdentifier) -> Option<&Any> {
    si.signed_attrs
        .as_ref()?
        .iter()
        .find(|a| a.oid == oid)
        .and_then(|a| a.values.iter().next())
}

pub(super) fn signing_time(si: &SignerInfo) -> Option<x509_cert::time::Time> {
    let any = attribute(si, rfc5911::ID_SIGNING_TIME)?;
    x509_cert::time::Time::from_der(&any.to_der().ok()?).ok()
}

/// Verifies one signer: the signature over the signed attributes (or over the content when
/// there are none) with the embedded certificate's key, and the message digest.
pub(super) fn verify_signer(
    sd: &SignedData,
    si: &SignerInfo,
    content: &[u8],
    cas: &[Certificate],
) -> Result<SignerReport> {
    let cert = signer_certificate(sd, si).ok_or_else(|| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the signer's certificate is not in the signature".into(),
    })?;
    let hash = digest_of(&si.digest_alg.oid).ok_or_else(|| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("unsupported digest algorithm {}", si.digest_alg.oid),
    })?;
    let digest = hash.digest(content);
    let signed: Vec<u8> = match &si.signed_attrs {
        Some(attrs) => {
            let md = attribute(si, rfc5911::ID_MESSAGE_DIGEST)
                .and_then(|a| a.decode_as::<der::asn1::OctetString>().ok())
                .ok_or_else(|| ManagerError {
                    class: crate::manager::ErrorClass::Refused,
                    message: "the signature has signed attributes but no message digest".into(),
                })?;
            if md.as_bytes() != digest.as_slice() {
                return crate::manager::fail_damaged("signature INVALID: the content was altered (its digest differs from the signed message digest)");
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
        class: crate::manager::ErrorClass::Damaged,
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
        let intermediates: Vec<Certificate> = sd
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .filter_map(|c| match c {
                CertificateChoices::Certificate(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let path = build_path(cert, &intermediates, cas, when).map_err(|why| {
            ManagerError::new(
                crate::manager::ErrorClass::Untrusted,
                format!(
                    "the signature is intact, but its signer ({}) is NOT TRUSTED: {why}",
                    cert.tbs_certificate.subject
                ),
            )
        })?;
        Some(
            path.iter()
                .skip(1)
                .map(|c| c.tbs_certificate.subject.to_string())
                .collect::<Vec<_>>()
                .join(" ← ")
                .to_string(),
        )
        .map(|issuers| {
            format!(
                "chains to a trusted CA: {issuers} (every certificate's signature checked, each valid at the signing time)"
            )
        })
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
            return crate::manager::fail_damaged("signature INVALID for this file: the file differs from the content inside the signature")
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
        not_checked.insert(0, "the signer certificate's issuer".to_owned());
    } else {
        checked.push(
            "certification path to a trusted CA, each certificate valid at the signing time".into(),
        );
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
    let content = args
        .file
        .as_deref()
        .map(|f| read_bounded(f, MAX_DOCUMENT))
        .transpose()?;
    // Trust comes from --ca, else from the system's trust store (as OpenSSL's).
    let (cas, trust) = match args.ca.as_deref() {
        Some(path) => (
            read_certificates(path)?,
            format!("the CA certificates in {}", path.display()),
        ),
        None => (
            system_anchors(),
            "the system's trust store (give --ca FILE for your issuer's CA)".to_owned(),
        ),
    };
    if cas.is_empty() {
        return Err(ManagerError::new(
            crate::manager::ErrorClass::Untrusted,
            "no trusted CA certificates to check the signer against: give --ca FILE",
        ));
    }
    let report = verify_bytes(&bytes, content.as_deref(), &cas).map_err(|e| {
        if e.class == crate::manager::ErrorClass::Untrusted {
            ManagerError::new(e.class, format!("{} (trusted: {trust})", e.message))
        } else {
            e
        }
    })?;
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
