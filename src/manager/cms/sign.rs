//! Making CMS SignedData with a card key (`tessera sign`).

#[allow(unused_imports)]
use super::*;

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

pub(super) fn der_error(e: der::Error) -> ManagerError {
    ManagerError {
        class: crate::manager::ErrorClass::Refused,
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
    let content = read_bounded(&args.file, MAX_DOCUMENT)?;
    let slot = args.slot.as_deref().map(certs::parse_slot).transpose()?;
    let card = crate::manager::open(opts)?;
    let pin = crate::manager::secret::read("PIN", opts.pin_file.as_deref(), false)?;
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
        class: crate::manager::ErrorClass::Refused,
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

pub(super) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: e.to_string(),
    })?;
    say!("{text}");
    Ok(())
}
