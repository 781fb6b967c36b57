//! What an IDPrime card holds, as OpenSC's `idprime` emulator presents it: one key container per
//! certificate file of the index (`mscp/kxcNN`, `mscp/kscNN`), in index order, each with the
//! CKA_ID `00 0i` and the labels "Certificate i" / "Public key i" / "Private key i", the
//! public key and key usage from the certificate, and — when the card has the key — the key
//! reference (the model's formula, or the 940's key-reference map) and the PIN that guards it.
//! Plain data for the token layer to map; nothing here knows PKCS#11 handles or sessions.

use super::files::{
    self, opensc_serial, parse_index, read_binary, CardId, ContainerRecord, IndexEntry,
    KeyRefRecord, SelectBy,
};
use super::{Error, Model, Profile, Unsupported};
use crate::card::Channel;
use der::{Decode, Encode};

pub use super::files::CertificateRole;

/// The NIST curves of IDPrime EC keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// P-256.
    P256,
    /// P-384.
    P384,
    /// P-521.
    P521,
}

impl Curve {
    /// Bytes of a field element (and of r and s).
    pub fn field_bytes(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// A key's algorithm, read from its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA with this modulus size (bytes × 8, as OpenSC counts it).
    Rsa {
        /// Modulus bits.
        bits: usize,
    },
    /// ECDSA on a NIST curve.
    Ec(Curve),
}

impl KeyAlgorithm {
    /// Bytes of a signature: the modulus length, or r‖s.
    pub fn signature_len(self) -> usize {
        match self {
            Self::Rsa { bits } => bits.div_ceil(8),
            Self::Ec(curve) => 2 * curve.field_bytes(),
        }
    }
}

/// The PIN that guards a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinRef {
    /// The user PIN, reference 0x11, label "PIN" (auth ID 11).
    User,
    /// The 940's "Digital Signature PIN", reference 0x83 (auth ID 83): user consent, needed
    /// before each use of its keys.
    DigitalSignature,
}

impl PinRef {
    /// The reference in VERIFY / CHANGE REFERENCE DATA P2.
    pub fn reference(self) -> u8 {
        match self {
            Self::User => 0x11,
            Self::DigitalSignature => 0x83,
        }
    }

    /// OpenSC's label for the PIN object.
    pub fn label(self) -> &'static str {
        match self {
            Self::User => "PIN",
            Self::DigitalSignature => "Digital Signature PIN",
        }
    }
}

/// A private key on the card: what MSE SET and VERIFY need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateKeyRef {
    /// The key reference (MSE SET tag 84).
    pub reference: u8,
    /// The PIN to verify before using it.
    pub pin: PinRef,
    /// The key's algorithm (from its certificate).
    pub algorithm: KeyAlgorithm,
}

/// keyUsage digitalSignature | dataEncipherment: OpenSC's default when a certificate has no
/// keyUsage extension (RFC 5280 bit n as 1 << n).
pub const DEFAULT_KEY_USAGE: u16 = 0x0001 | 0x0008;

/// One certificate of the card with its public key and, when present, its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyContainer {
    /// i: the position among the index's certificate files, from 1 (a certificate that
    /// cannot be read still takes its number, as in OpenSC).
    pub ordinal: u16,
    /// CKA_ID of the certificate, public key and private key: i as two bytes big-endian.
    pub id: Vec<u8>,
    /// "Certificate i".
    pub certificate_label: String,
    /// "Public key i".
    pub public_key_label: String,
    /// "Private key i".
    pub private_key_label: String,
    /// The certificate file.
    pub file_id: [u8; 2],
    /// `kxc` or `ksc`.
    pub role: CertificateRole,
    /// NN of `kxcNN`: the container the certificate belongs to.
    pub container_index: u8,
    /// The container's name from the container map, when the card has one.
    pub container_guid: Option<String>,
    /// The certificate, DER (decompressed).
    pub certificate_der: Vec<u8>,
    /// Its SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
    /// Key algorithm and size.
    pub algorithm: KeyAlgorithm,
    /// The certificate's keyUsage bits (RFC 5280 bit n as 1 << n); `None` without the
    /// extension (see [`KeyContainer::effective_key_usage`]).
    pub key_usage: Option<u16>,
    /// The subject's first CN, for OpenSC's fallback token label.
    pub subject_cn: Option<String>,
    /// The private key; `None` when the card has no key for this certificate (no container,
    /// no key-reference record).
    pub private_key: Option<PrivateKeyRef>,
}

impl KeyContainer {
    /// keyUsage bits with OpenSC's default for certificates without the extension.
    pub fn effective_key_usage(&self) -> u16 {
        self.key_usage.unwrap_or(DEFAULT_KEY_USAGE)
    }
}

/// A certificate file of the index that yields no objects, and why (it still took its
/// ordinal).
#[derive(Debug)]
pub struct SkippedCertificate {
    /// Its position among the certificate files, from 1.
    pub ordinal: u16,
    /// The file the index points to.
    pub file_id: [u8; 2],
    /// Why it was skipped: missing file, damaged data, unsupported key algorithm.
    pub reason: Error,
}

/// Everything the driver reads from an IDPrime card.
#[derive(Debug)]
pub struct CardContents {
    /// The index file's records.
    pub index: Vec<IndexEntry>,
    /// The card id (file 0201), when present and 16 bytes long.
    pub card_id: Option<CardId>,
    /// The `p11/tinfo` label, when the index lists one and it reads.
    pub token_info_label: Option<String>,
    /// The container map, when the card has and shows one.
    pub container_map: Option<Vec<ContainerRecord>>,
    /// The 940's key-reference map (read on 940s only).
    pub keyref_map: Option<Vec<KeyRefRecord>>,
    /// The key containers, in index order.
    pub keys: Vec<KeyContainer>,
    /// Certificate files that yield nothing.
    pub skipped: Vec<SkippedCertificate>,
}

impl CardContents {
    /// The token label as OpenSC gives it: the `p11/tinfo` label, else the CN of the first
    /// certificate that parsed, else "IDPrime".
    pub fn token_label(&self) -> String {
        self.token_info_label
            .clone()
            .or_else(|| self.keys.iter().find_map(|k| k.subject_cn.clone()))
            .unwrap_or_else(|| "IDPrime".to_owned())
    }

    /// The PKCS#11 serial number as OpenSC gives it (see [`files::opensc_serial`]).
    pub fn serial(&self) -> String {
        opensc_serial(self.card_id.as_ref())
    }

    /// The container with this CKA_ID.
    pub fn find(&self, id: &[u8]) -> Option<&KeyContainer> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The PINs the card's keys use (the user PIN always; the 940's signature PIN when one
    /// of its keys asks for it or the model has it).
    pub fn pins(&self, model: Model) -> Vec<PinRef> {
        let mut pins = vec![PinRef::User];
        if model.has_signature_pin()
            || self.keys.iter().any(|k| {
                k.private_key
                    .is_some_and(|p| p.pin == PinRef::DigitalSignature)
            })
        {
            pins.push(PinRef::DigitalSignature);
        }
        pins
    }
}

/// The key reference and PIN of container `n`'s private key, as OpenSC ≥ 0.26 decides: on a
/// 940 from its key-reference map (the record for container n; none → no key); on the other
/// models by the model's formula when the container map lists container n — or, when the
/// card shows no container map, for every certificate (OpenSC 0.23's assumption).
pub fn private_key_for(
    model: Model,
    n: u8,
    container_map: Option<&[ContainerRecord]>,
    keyref_map: Option<&[KeyRefRecord]>,
) -> Option<(u8, PinRef)> {
    if model.uses_keyref_map() {
        let record = keyref_map?.iter().find(|r| r.container == n)?;
        let pin = if record.pin_index == 1 {
            PinRef::User
        } else {
            PinRef::DigitalSignature
        };
        return Some((record.key_reference, pin));
    }
    if let Some(map) = container_map {
        if !map.iter().any(|c| c.index == n) {
            return None;
        }
    }
    Some((model.key_reference(n)?, PinRef::User))
}

/// What the driver takes from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// SubjectPublicKeyInfo DER.
    pub public_key_der: Vec<u8>,
    /// Algorithm and size.
    pub algorithm: KeyAlgorithm,
    /// keyUsage bits, when the extension is present and parses.
    pub key_usage: Option<u16>,
    /// The subject's first CN.
    pub subject_cn: Option<String>,
}

/// Parses a certificate for its public key, key usage and CN. A certificate that does not
/// parse is damage; a key that is neither RSA nor on P-256/384/521 is not supported.
pub fn parse_certificate(der: &[u8]) -> Result<CertificateFacts, Error> {
    use const_oid::db::{rfc4519, rfc5280, rfc5912};
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|_| Error::Damaged("a certificate on the card does not parse"))?;
    let tbs = &cert.tbs_certificate;
    let spki = &tbs.subject_public_key_info;
    let public_key_der = spki
        .to_der()
        .map_err(|_| Error::Damaged("a certificate's public key does not encode"))?;
    let algorithm = if spki.algorithm.oid == rfc5912::RSA_ENCRYPTION {
        use rsa::pkcs8::DecodePublicKey;
        let key = rsa::RsaPublicKey::from_public_key_der(&public_key_der)
            .map_err(|_| Error::Damaged("a certificate's RSA key does not parse"))?;
        KeyAlgorithm::Rsa {
            bits: rsa::traits::PublicKeyParts::size(&key) * 8,
        }
    } else if spki.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
            .ok_or(Error::NotSupported(Unsupported::KeyAlgorithm))?;
        KeyAlgorithm::Ec(match curve {
            c if c == rfc5912::SECP_256_R_1 => Curve::P256,
            c if c == rfc5912::SECP_384_R_1 => Curve::P384,
            c if c == rfc5912::SECP_521_R_1 => Curve::P521,
            _ => return Err(Error::NotSupported(Unsupported::KeyAlgorithm)),
        })
    } else {
        return Err(Error::NotSupported(Unsupported::KeyAlgorithm));
    };
    let key_usage = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == rfc5280::ID_CE_KEY_USAGE)
        .and_then(|e| x509_cert::ext::pkix::KeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .map(|ku| ku.0.bits());
    let subject_cn = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == rfc4519::CN)
        .map(|atv| String::from_utf8_lossy(atv.value.value()).into_owned());
    Ok(CertificateFacts {
        public_key_der,
        algorithm,
        key_usage,
        subject_cn,
    })
}

/// Builds the key containers from the index, reading each certificate file with
/// `read_certificate` (which returns the raw file, or `None` when it does not exist). A
/// certificate that is missing, damaged or of an unsupported key type is skipped and keeps
/// its ordinal; a failure of the card itself ends the whole read.
pub fn assemble(
    model: Model,
    index: &[IndexEntry],
    container_map: Option<&[ContainerRecord]>,
    keyref_map: Option<&[KeyRefRecord]>,
    mut read_certificate: impl FnMut([u8; 2]) -> Result<Option<Vec<u8>>, Error>,
) -> Result<(Vec<KeyContainer>, Vec<SkippedCertificate>), Error> {
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    let mut ordinal: u16 = 0;
    for entry in index {
        let Some((role, n)) = entry.certificate() else {
            continue;
        };
        ordinal += 1;
        let read = read_certificate(entry.fid).and_then(|raw| {
            let raw = raw.ok_or(Error::Damaged(
                "the index lists a certificate file the card does not have",
            ))?;
            let der = files::decode_certificate_file(&raw)?;
            let facts = parse_certificate(&der)?;
            Ok((der, facts))
        });
        let (der, facts) = match read {
            Ok(v) => v,
            Err(e) if files::is_card_failure(&e) => return Err(e),
            Err(reason) => {
                log::info!(
                    "IDPrime certificate {ordinal} ({}): {reason}",
                    hex::encode(entry.fid)
                );
                skipped.push(SkippedCertificate {
                    ordinal,
                    file_id: entry.fid,
                    reason,
                });
                continue;
            }
        };
        let private_key =
            private_key_for(model, n, container_map, keyref_map).map(|(reference, pin)| {
                PrivateKeyRef {
                    reference,
                    pin,
                    algorithm: facts.algorithm,
                }
            });
        keys.push(KeyContainer {
            ordinal,
            id: ordinal.to_be_bytes().to_vec(),
            certificate_label: format!("Certificate {ordinal}"),
            public_key_label: format!("Public key {ordinal}"),
            private_key_label: format!("Private key {ordinal}"),
            file_id: entry.fid,
            role,
            container_index: n,
            container_guid: container_map
                .and_then(|m| m.iter().find(|c| c.index == n))
                .map(|c| c.guid.clone()),
            certificate_der: der,
            public_key_der: facts.public_key_der,
            algorithm: facts.algorithm,
            key_usage: facts.key_usage,
            subject_cn: facts.subject_cn,
            private_key,
        });
    }
    Ok((keys, skipped))
}

/// Reads everything: SELECT applet and index, the index, the card id (0201), the container
/// map (0204), the 940's key-reference map (0005), the `p11/tinfo` label, then every
/// certificate file the index lists (SELECT by file id, P1=00).
pub fn read_contents(ch: &mut dyn Channel, profile: &Profile) -> Result<CardContents, Error> {
    let index_fci = super::select(ch, profile)?;
    let index = parse_index(&read_binary(ch, profile, index_fci.size)?)?;
    let card_id = match files::read_card_id(ch, profile) {
        Ok(id) => id,
        Err(e) if files::is_card_failure(&e) => return Err(e),
        Err(e) => {
            log::debug!("IDPrime card id: {e}: none");
            None
        }
    };
    let container_map = files::read_container_map(ch, profile)?;
    let keyref_map = if profile.model.uses_keyref_map() {
        files::read_keyref_map(ch, profile)?
    } else {
        None
    };
    let token_info_label = match index.iter().find(|e| e.is_token_info()) {
        Some(entry) => files::read_token_info(ch, profile, entry.fid)?,
        None => None,
    };
    let (keys, skipped) = assemble(
        profile.model,
        &index,
        container_map.as_deref(),
        keyref_map.as_deref(),
        |fid| files::read_file(ch, profile, fid, SelectBy::FileId),
    )?;
    Ok(CardContents {
        index,
        card_id,
        token_info_label,
        container_map,
        keyref_map,
        keys,
        skipped,
    })
}
