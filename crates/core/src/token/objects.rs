//! The token's objects: for every populated PIV key slot a certificate (when the card has one),
//! a public key and a private key sharing one CKA_ID, plus the CKO_PROFILE object that tells
//! NSS the certificates are public. Attribute values are computed from what was read from the
//! card; nothing here talks to the card.

use super::attr;
use super::mechanism::PublicKey;
use super::slot::Part;
use super::AttrAnswer;
use crate::applet::piv::{KeyAlgorithm, KeySlot, PinPolicy, SlotRole};
use cryptoki_sys::*;
use der::{Decode, Encode};
use sha1::Digest;

/// Identity of an object on a token; stable while the card is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectId {
    /// The CKO_PROFILE object.
    Profile,
    /// The certificate in a key slot.
    Certificate(KeySlot),
    /// The public key of a key slot.
    PublicKey(KeySlot),
    /// The private key in a key slot.
    PrivateKey(KeySlot),
}

impl ObjectId {
    /// The key slot behind the object, if any.
    pub fn slot(self) -> Option<KeySlot> {
        match self {
            Self::Profile => None,
            Self::Certificate(s) | Self::PublicKey(s) | Self::PrivateKey(s) => Some(s),
        }
    }
}

/// What a key may be used for (CKA_SIGN, CKA_DECRYPT, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Signatures (and verification with the public key).
    pub sign: bool,
    /// Decryption (and encryption with the public key).
    pub decrypt: bool,
    /// Key unwrapping (and wrapping).
    pub unwrap: bool,
    /// Key agreement.
    pub derive: bool,
}

/// Facts read from a certificate once, when the card is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Subject Name, DER.
    pub subject: Vec<u8>,
    /// Issuer Name, DER.
    pub issuer: Vec<u8>,
    /// Serial number as a DER INTEGER (what CKA_SERIAL_NUMBER holds).
    pub serial: Vec<u8>,
    /// SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// The keyUsage extension's bits (bit 0 = digitalSignature), if present.
    pub key_usage: Option<u16>,
}

impl CertFacts {
    /// Parses a certificate; `None` when it is not X.509 DER.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        let tbs = &cert.tbs_certificate;
        let mut key_usage = None;
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE {
                if let Ok(ku) = x509_cert::ext::pkix::KeyUsage::from_der(ext.extn_value.as_bytes())
                {
                    key_usage = Some(ku.0.bits());
                }
            }
        }
        Some(Self {
            der: der.to_vec(),
            subject: tbs.subject.to_der().ok()?,
            issuer: tbs.issuer.to_der().ok()?,
            serial: tbs.serial_number.to_der().ok()?,
            spki: tbs.subject_public_key_info.to_der().ok()?,
            key_usage,
        })
    }
}

/// A populated key slot as read from the card.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The slot.
    pub slot: KeySlot,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// The public key (from the certificate, GET METADATA or GENERATE).
    pub public_key: PublicKey,
    /// The certificate, when the slot has one.
    pub certificate: Option<CertFacts>,
    /// PIN policy as the card reports it (effective value).
    pub pin_policy: PinPolicy,
    /// Generated on the card (Some(true)), imported (Some(false)) or unknown.
    pub generated: Option<bool>,
}

impl KeyEntry {
    /// Usage from the certificate's keyUsage, else the slot's defaults (as OpenSC's).
    pub fn usage(&self) -> Usage {
        let ec = self.algorithm.is_ec();
        if let Some(bits) = self.certificate.as_ref().and_then(|c| c.key_usage) {
            let has = |bit: u16| bits & (1 << bit) != 0;
            // digitalSignature 0, nonRepudiation 1, keyEncipherment 2, dataEncipherment 3,
            // keyAgreement 4, keyCertSign 5, cRLSign 6
            return Usage {
                sign: has(0) || has(1) || has(5) || has(6),
                decrypt: !ec && (has(2) || has(3)),
                unwrap: !ec && has(2),
                derive: ec && has(4),
            };
        }
        match self.slot.role() {
            SlotRole::Authentication | SlotRole::Signature => Usage {
                sign: true,
                decrypt: !ec,
                unwrap: !ec && self.slot.role() == SlotRole::Authentication,
                derive: false,
            },
            SlotRole::CardAuthentication => Usage {
                sign: true,
                ..Usage::default()
            },
            SlotRole::KeyManagement => Usage {
                sign: false,
                decrypt: !ec,
                unwrap: !ec,
                derive: ec,
            },
        }
    }

    /// CKA_PRIVATE of the private key: false only for card authentication (9E), which the
    /// card uses without a PIN.
    pub fn private_key_is_private(&self) -> bool {
        self.pin_policy != PinPolicy::Never && self.slot != KeySlot::CARD_AUTHENTICATION
    }

    /// CKA_ALWAYS_AUTHENTICATE: the card wants the PIN before every use.
    pub fn always_authenticate(&self) -> bool {
        self.pin_policy == PinPolicy::Always
    }
}

/// The objects a token showing `part` of a card with these key entries has, in a stable order.
pub fn object_ids(entries: &[KeyEntry], part: Part) -> Vec<ObjectId> {
    let mut ids = Vec::new();
    if part.shows(None) {
        ids.push(ObjectId::Profile);
    }
    for e in entries.iter().filter(|e| part.shows(Some(e.slot))) {
        if e.certificate.is_some() {
            ids.push(ObjectId::Certificate(e.slot));
        }
        ids.push(ObjectId::PublicKey(e.slot));
        ids.push(ObjectId::PrivateKey(e.slot));
    }
    ids
}

/// Whether an object may only be seen after login (CKA_PRIVATE).
pub fn is_private(id: ObjectId, entry: Option<&KeyEntry>) -> bool {
    match (id, entry) {
        (ObjectId::PrivateKey(_), Some(e)) => e.private_key_is_private(),
        _ => false,
    }
}

fn key_type(alg: KeyAlgorithm) -> CK_KEY_TYPE {
    if alg.is_ec() {
        CKK_EC
    } else {
        CKK_RSA
    }
}

fn value(v: Vec<u8>) -> AttrAnswer {
    AttrAnswer::Value(v)
}

fn boolean(b: bool) -> AttrAnswer {
    AttrAnswer::Value(attr::bool(b))
}

fn ulong(v: CK_ULONG) -> AttrAnswer {
    AttrAnswer::Value(attr::ulong(v))
}

/// The value of attribute `ty` of object `id` (`entry` is the key slot's entry).
pub fn attribute(id: ObjectId, entry: Option<&KeyEntry>, ty: CK_ATTRIBUTE_TYPE) -> AttrAnswer {
    // Attributes every object has.
    match ty {
        CKA_TOKEN => return boolean(true),
        CKA_PRIVATE => return boolean(is_private(id, entry)),
        CKA_MODIFIABLE | CKA_COPYABLE => return boolean(false),
        CKA_DESTROYABLE => return boolean(id != ObjectId::Profile),
        _ => {}
    }
    match (id, entry) {
        (ObjectId::Profile, _) => match ty {
            CKA_CLASS => ulong(CKO_PROFILE),
            CKA_PROFILE_ID => ulong(CKP_PUBLIC_CERTIFICATES_TOKEN),
            CKA_LABEL => value(Vec::new()),
            _ => AttrAnswer::Invalid,
        },
        (ObjectId::Certificate(slot), Some(e)) => match &e.certificate {
            Some(cert) => certificate_attribute(slot, cert, ty),
            None => AttrAnswer::Invalid,
        },
        (ObjectId::PublicKey(slot), Some(e)) => public_key_attribute(slot, e, ty),
        (ObjectId::PrivateKey(slot), Some(e)) => private_key_attribute(slot, e, ty),
        _ => AttrAnswer::Invalid,
    }
}

fn certificate_attribute(slot: KeySlot, cert: &CertFacts, ty: CK_ATTRIBUTE_TYPE) -> AttrAnswer {
    match ty {
        CKA_CLASS => ulong(CKO_CERTIFICATE),
        CKA_CERTIFICATE_TYPE => ulong(CKC_X_509),
        CKA_LABEL => value(slot.certificate_label().into_bytes()),
        CKA_ID => value(vec![slot.cka_id()]),
        CKA_TRUSTED => boolean(false),
        CKA_CERTIFICATE_CATEGORY => ulong(CK_CERTIFICATE_CATEGORY_TOKEN_USER),
        CKA_CHECK_VALUE => value(
            sha1::Sha1::digest(&cert.der)
                .get(..3)
                .unwrap_or_default()
                .to_vec(),
        ),
        CKA_START_DATE | CKA_END_DATE | CKA_URL | CKA_HASH_OF_ISSUER_PUBLIC_KEY => {
            value(Vec::new())
        }
        CKA_HASH_OF_SUBJECT_PUBLIC_KEY => value(Vec::new()),
        CKA_SUBJECT => value(cert.subject.clone()),
        CKA_ISSUER => value(cert.issuer.clone()),
        CKA_SERIAL_NUMBER => value(cert.serial.clone()),
        CKA_VALUE => value(cert.der.clone()),
        CKA_JAVA_MIDP_SECURITY_DOMAIN => ulong(CK_SECURITY_DOMAIN_UNSPECIFIED),
        CKA_NAME_HASH_ALGORITHM => ulong(CKM_SHA_1),
        CKA_PUBLIC_KEY_INFO => value(cert.spki.clone()),
        _ => AttrAnswer::Invalid,
    }
}

fn key_common(
    slot: KeySlot,
    e: &KeyEntry,
    ty: CK_ATTRIBUTE_TYPE,
    label: String,
) -> Option<AttrAnswer> {
    Some(match ty {
        CKA_LABEL => value(label.into_bytes()),
        CKA_ID => value(vec![slot.cka_id()]),
        CKA_KEY_TYPE => ulong(key_type(e.algorithm)),
        CKA_LOCAL => boolean(e.generated == Some(true)),
        CKA_KEY_GEN_MECHANISM => ulong(match (e.generated, e.algorithm.is_ec()) {
            (Some(true), true) => CKM_EC_KEY_PAIR_GEN,
            (Some(true), false) => CKM_RSA_PKCS_KEY_PAIR_GEN,
            _ => CK_UNAVAILABLE_INFORMATION,
        }),
        CKA_START_DATE | CKA_END_DATE => value(Vec::new()),
        CKA_DERIVE => boolean(e.usage().derive),
        CKA_SUBJECT => value(
            e.certificate
                .as_ref()
                .map(|c| c.subject.clone())
                .unwrap_or_default(),
        ),
        CKA_PUBLIC_KEY_INFO => value(e.public_key.to_spki_der()),
        CKA_ALLOWED_MECHANISMS => {
            let mut out = Vec::new();
            for m in super::mechanism::mechanisms_for_key(e.algorithm.is_ec()) {
                out.extend_from_slice(&attr::ulong(*m));
            }
            value(out)
        }
        CKA_MODULUS if !e.algorithm.is_ec() => value(e.public_key.modulus().unwrap_or_default()),
        CKA_MODULUS_BITS if !e.algorithm.is_ec() => {
            ulong(e.algorithm.rsa_bits().unwrap_or_default() as CK_ULONG)
        }
        CKA_PUBLIC_EXPONENT if !e.algorithm.is_ec() => {
            value(e.public_key.public_exponent().unwrap_or_default())
        }
        CKA_EC_PARAMS if e.algorithm.is_ec() => {
            value(e.public_key.ec_params_der().unwrap_or_default())
        }
        CKA_EC_POINT if e.algorithm.is_ec() => {
            value(e.public_key.ec_point_der().unwrap_or_default())
        }
        _ => return None,
    })
}

fn public_key_attribute(slot: KeySlot, e: &KeyEntry, ty: CK_ATTRIBUTE_TYPE) -> AttrAnswer {
    if ty == CKA_CLASS {
        return ulong(CKO_PUBLIC_KEY);
    }
    if let Some(a) = key_common(slot, e, ty, slot.public_key_label()) {
        return a;
    }
    let u = e.usage();
    match ty {
        CKA_VERIFY => boolean(u.sign),
        CKA_VERIFY_RECOVER => boolean(false),
        CKA_ENCRYPT => boolean(u.decrypt),
        CKA_WRAP => boolean(u.unwrap),
        CKA_TRUSTED => boolean(false),
        CKA_WRAP_TEMPLATE => AttrAnswer::Invalid,
        _ => AttrAnswer::Invalid,
    }
}

fn private_key_attribute(slot: KeySlot, e: &KeyEntry, ty: CK_ATTRIBUTE_TYPE) -> AttrAnswer {
    if ty == CKA_CLASS {
        return ulong(CKO_PRIVATE_KEY);
    }
    if let Some(a) = key_common(slot, e, ty, slot.private_key_label()) {
        return a;
    }
    let u = e.usage();
    let generated = e.generated == Some(true);
    match ty {
        CKA_SIGN => boolean(u.sign),
        CKA_SIGN_RECOVER => boolean(false),
        CKA_DECRYPT => boolean(u.decrypt),
        CKA_UNWRAP => boolean(u.unwrap),
        CKA_SENSITIVE => boolean(true),
        CKA_EXTRACTABLE => boolean(false),
        CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE => boolean(generated),
        CKA_WRAP_WITH_TRUSTED => boolean(false),
        CKA_ALWAYS_AUTHENTICATE => boolean(e.always_authenticate()),
        CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2 | CKA_EXPONENT_1 | CKA_EXPONENT_2
        | CKA_COEFFICIENT
            if !e.algorithm.is_ec() =>
        {
            AttrAnswer::Sensitive
        }
        CKA_VALUE if e.algorithm.is_ec() => AttrAnswer::Sensitive,
        _ => AttrAnswer::Invalid,
    }
}
