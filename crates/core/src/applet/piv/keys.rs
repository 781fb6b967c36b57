//! Key operations of the host PIV driver: algorithms, GET METADATA, GENERAL AUTHENTICATE for
//! signatures, decryption and key agreement, GENERATE, IMPORT, MOVE/delete, and the public-key
//! formats the card answers in (7F49 templates) turned into SubjectPublicKeyInfo DER.

use super::slots::KeySlot;
use crate::card::{exchange, tlv, CardError, Channel, Command, StatusWord};
use pkcs8::EncodePublicKey;
use zeroize::Zeroizing;

/// Asymmetric key algorithms of PIV cards (SP 800-78-4, Yubico's RSA-3072/4096 values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA 1024 (read and use only; Tessera never creates one).
    Rsa1024,
    /// RSA 2048.
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// RSA 4096.
    Rsa4096,
    /// ECC P-256.
    EccP256,
    /// ECC P-384.
    EccP384,
}

impl KeyAlgorithm {
    /// The algorithm identifier (P1 of GENERAL AUTHENTICATE).
    pub fn id(self) -> u8 {
        match self {
            Self::Rsa1024 => 0x06,
            Self::Rsa2048 => 0x07,
            Self::Rsa3072 => 0x05,
            Self::Rsa4096 => 0x16,
            Self::EccP256 => 0x11,
            Self::EccP384 => 0x14,
        }
    }

    /// Parses an algorithm identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        [
            Self::Rsa1024,
            Self::Rsa2048,
            Self::Rsa3072,
            Self::Rsa4096,
            Self::EccP256,
            Self::EccP384,
        ]
        .into_iter()
        .find(|a| a.id() == id)
    }

    /// RSA modulus bits for RSA keys.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            Self::Rsa1024 => Some(1024),
            Self::Rsa2048 => Some(2048),
            Self::Rsa3072 => Some(3072),
            Self::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The RSA algorithm with this modulus size.
    pub fn rsa_with_bits(bits: usize) -> Option<Self> {
        match bits {
            1024 => Some(Self::Rsa1024),
            2048 => Some(Self::Rsa2048),
            3072 => Some(Self::Rsa3072),
            4096 => Some(Self::Rsa4096),
            _ => None,
        }
    }

    /// True for the elliptic-curve algorithms.
    pub fn is_ec(self) -> bool {
        matches!(self, Self::EccP256 | Self::EccP384)
    }

    /// Bytes of a raw operation's input/output: modulus length or field length.
    pub fn size_bytes(self) -> usize {
        match self {
            Self::EccP256 => 32,
            Self::EccP384 => 48,
            other => other.rsa_bits().unwrap_or(0) / 8,
        }
    }

    /// Name as yubico-piv-tool spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa1024 => "RSA1024",
            Self::Rsa2048 => "RSA2048",
            Self::Rsa3072 => "RSA3072",
            Self::Rsa4096 => "RSA4096",
            Self::EccP256 => "ECCP256",
            Self::EccP384 => "ECCP384",
        }
    }
}

/// PIN policy of a key (Yubico extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPolicy {
    /// The card's default for the slot.
    Default,
    /// No PIN needed.
    Never,
    /// PIN once per card session.
    Once,
    /// PIN before every use.
    Always,
}

impl PinPolicy {
    fn from_id(id: u8) -> Self {
        match id {
            1 => Self::Never,
            2 => Self::Once,
            3 => Self::Always,
            _ => Self::Default,
        }
    }

    fn id(self) -> u8 {
        match self {
            Self::Default => 0,
            Self::Never => 1,
            Self::Once => 2,
            Self::Always => 3,
        }
    }

    /// The effective policy for `slot` (the card's defaults when `Default`).
    pub fn effective(self, slot: KeySlot) -> Self {
        match (self, slot) {
            (Self::Default, KeySlot::SIGNATURE) => Self::Always,
            (Self::Default, KeySlot::CARD_AUTHENTICATION) => Self::Never,
            (Self::Default, _) => Self::Once,
            (p, _) => p,
        }
    }
}

/// A public key as the card reported it, with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
}

/// What GET METADATA says about a key slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    /// Algorithm of the key in the slot.
    pub algorithm: KeyAlgorithm,
    /// PIN policy.
    pub pin_policy: PinPolicy,
    /// True when the key was generated on the card (false: imported).
    pub generated: bool,
    /// The public key, when the card reports it.
    pub public_key: Option<PublicKeyInfo>,
}

/// Turns the content of a 7F49 template into SubjectPublicKeyInfo DER.
pub fn spki_from_template(
    algorithm: KeyAlgorithm,
    template: &[u8],
) -> Result<PublicKeyInfo, CardError> {
    let bad = |_| CardError::Malformed("public key template");
    let spki_der = if algorithm.is_ec() {
        let point = tlv::find(template, 0x86)?.ok_or(CardError::Malformed("EC point missing"))?;
        match algorithm {
            KeyAlgorithm::EccP256 => p256::PublicKey::from_sec1_bytes(point)
                .map_err(|_| CardError::Malformed("EC point"))?
                .to_public_key_der()
                .map_err(bad)?,
            _ => p384::PublicKey::from_sec1_bytes(point)
                .map_err(|_| CardError::Malformed("EC point"))?
                .to_public_key_der()
                .map_err(bad)?,
        }
    } else {
        let n = tlv::find(template, 0x81)?.ok_or(CardError::Malformed("RSA modulus missing"))?;
        let e = tlv::find(template, 0x82)?.ok_or(CardError::Malformed("RSA exponent missing"))?;
        rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(n),
            rsa::BigUint::from_bytes_be(e),
        )
        .map_err(|_| CardError::Malformed("RSA public key"))?
        .to_public_key_der()
        .map_err(bad)?
    };
    Ok(PublicKeyInfo {
        algorithm,
        spki_der: spki_der.as_bytes().to_vec(),
    })
}

/// GET METADATA for a key slot; `None` when the slot is empty or the card lacks the command.
pub fn metadata(ch: &mut dyn Channel, slot: KeySlot) -> Result<Option<KeyMetadata>, CardError> {
    let resp = exchange(ch, &Command::new(0xF7, 0x00, slot.reference()))?;
    match resp.sw {
        StatusWord::Success if !resp.data.is_empty() => {}
        // An empty slot (6A88), or a card without the extension: nothing known.
        _ => return Ok(None),
    }
    let algorithm = match tlv::find(&resp.data, 0x01)? {
        Some([id]) => {
            KeyAlgorithm::from_id(*id).ok_or(CardError::Malformed("unknown key algorithm"))?
        }
        _ => return Err(CardError::Malformed("metadata without algorithm")),
    };
    let pin_policy = match tlv::find(&resp.data, 0x02)? {
        Some([pin, ..]) => PinPolicy::from_id(*pin),
        _ => PinPolicy::Default,
    };
    let generated = matches!(tlv::find(&resp.data, 0x03)?, Some([1]));
    let public_key = tlv::find(&resp.data, 0x04)?
        .map(|t| spki_from_template(algorithm, t))
        .transpose()?;
    Ok(Some(KeyMetadata {
        algorithm,
        pin_policy,
        generated,
        public_key,
    }))
}

/// Facts GET METADATA gives about the PIN (80), the PUK (81) or the management key (9B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceMetadata {
    /// Algorithm byte (FF for PIN/PUK; 03/08/0A/0C for the management key).
    pub algorithm: u8,
    /// The factory default value is still set.
    pub is_default: bool,
    /// Total tries (PIN/PUK).
    pub total_tries: Option<u8>,
    /// Tries left (PIN/PUK).
    pub tries_left: Option<u8>,
}

/// GET METADATA for PIN, PUK or management key; `None` when the card lacks the command.
pub fn reference_metadata(
    ch: &mut dyn Channel,
    reference: u8,
) -> Result<Option<ReferenceMetadata>, CardError> {
    let resp = exchange(ch, &Command::new(0xF7, 0x00, reference))?;
    // An optional extension: any error, an empty or a malformed answer means the card does
    // not offer it (independent applets answer 9000 with no data).
    if !resp.sw.is_success() || resp.data.is_empty() {
        return Ok(None);
    }
    let parsed = (|| -> Result<ReferenceMetadata, CardError> {
        let algorithm = match tlv::find(&resp.data, 0x01)? {
            Some([a]) => *a,
            _ => return Err(CardError::Malformed("metadata without algorithm")),
        };
        let is_default = matches!(tlv::find(&resp.data, 0x05)?, Some([1]));
        let (total_tries, tries_left) = match tlv::find(&resp.data, 0x06)? {
            Some([t, l]) => (Some(*t), Some(*l)),
            _ => (None, None),
        };
        Ok(ReferenceMetadata {
            algorithm,
            is_default,
            total_tries,
            tries_left,
        })
    })();
    match parsed {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            log::debug!("GET METADATA {reference:02X}: {e}: treated as not offered");
            Ok(None)
        }
    }
}

fn general_authenticate(
    ch: &mut dyn Channel,
    slot: KeySlot,
    algorithm: KeyAlgorithm,
    inner: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CardError> {
    let cmd =
        Command::new(0x87, algorithm.id(), slot.reference()).with_data(&tlv::encode(0x7C, inner));
    let resp = exchange(ch, &cmd)?.success()?;
    let template = tlv::expect_only(&resp, 0x7C)?;
    let out = tlv::find(template, 0x82)?.ok_or(CardError::Malformed("no 82 in the answer"))?;
    Ok(Zeroizing::new(out.to_vec()))
}

/// The card's private-key operation on `input`: raw RSA (input = modulus-sized block) or
/// ECDSA over a hash (returns DER ECDSA-Sig-Value).
pub fn private_operation(
    ch: &mut dyn Channel,
    slot: KeySlot,
    algorithm: KeyAlgorithm,
    input: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CardError> {
    let mut inner = Zeroizing::new(Vec::with_capacity(input.len() + 8));
    tlv::push_do(&mut inner, 0x82, &[]);
    tlv::push_do(&mut inner, 0x81, input);
    general_authenticate(ch, slot, algorithm, &inner)
}

/// ECDH with the key in `slot` and the peer's uncompressed point; returns the shared X.
pub fn key_agreement(
    ch: &mut dyn Channel,
    slot: KeySlot,
    algorithm: KeyAlgorithm,
    peer_point: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CardError> {
    let mut inner = Vec::with_capacity(peer_point.len() + 8);
    tlv::push_do(&mut inner, 0x82, &[]);
    tlv::push_do(&mut inner, 0x85, peer_point);
    general_authenticate(ch, slot, algorithm, &inner)
}

/// GENERATE ASYMMETRIC KEY PAIR in `slot` (needs the management key).
pub fn generate(
    ch: &mut dyn Channel,
    slot: KeySlot,
    algorithm: KeyAlgorithm,
    pin_policy: PinPolicy,
) -> Result<PublicKeyInfo, CardError> {
    let mut inner = Vec::new();
    tlv::push_do(&mut inner, 0x80, &[algorithm.id()]);
    if pin_policy != PinPolicy::Default {
        tlv::push_do(&mut inner, 0xAA, &[pin_policy.id()]);
    }
    let cmd = Command::new(0x47, 0x00, slot.reference()).with_data(&tlv::encode(0xAC, &inner));
    let resp = exchange(ch, &cmd)?.success()?;
    let template = tlv::expect_only(&resp, 0x7F49)?;
    spki_from_template(algorithm, template)
}

/// Private key material for IMPORT ASYMMETRIC KEY.
pub enum ImportKey<'a> {
    /// RSA by its CRT components (big-endian, each half the modulus length).
    Rsa {
        /// Modulus size.
        algorithm: KeyAlgorithm,
        /// Prime p.
        p: &'a [u8],
        /// Prime q.
        q: &'a [u8],
        /// d mod (p-1).
        dp: &'a [u8],
        /// d mod (q-1).
        dq: &'a [u8],
        /// q⁻¹ mod p.
        qinv: &'a [u8],
    },
    /// EC by its private scalar (field-size big-endian).
    Ec {
        /// Curve.
        algorithm: KeyAlgorithm,
        /// Private scalar.
        scalar: &'a [u8],
    },
}

/// IMPORT ASYMMETRIC KEY (Yubico) into `slot` (needs the management key).
pub fn import(
    ch: &mut dyn Channel,
    slot: KeySlot,
    key: &ImportKey<'_>,
    pin_policy: PinPolicy,
) -> Result<(), CardError> {
    let mut data = Zeroizing::new(Vec::new());
    let algorithm = match key {
        ImportKey::Rsa {
            algorithm,
            p,
            q,
            dp,
            dq,
            qinv,
        } => {
            let half = algorithm.size_bytes() / 2;
            for (tag, v) in [(0x01, p), (0x02, q), (0x03, dp), (0x04, dq), (0x05, qinv)] {
                tlv::push_do(&mut data, tag, &left_pad(v, half));
            }
            *algorithm
        }
        ImportKey::Ec { algorithm, scalar } => {
            tlv::push_do(&mut data, 0x06, &left_pad(scalar, algorithm.size_bytes()));
            *algorithm
        }
    };
    if pin_policy != PinPolicy::Default {
        tlv::push_do(&mut data, 0xAA, &[pin_policy.id()]);
    }
    let cmd = Command::new(0xFE, algorithm.id(), slot.reference())
        .with_data(&data)
        .with_le(None);
    exchange(ch, &cmd)?.success()?;
    Ok(())
}

fn left_pad(v: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let v = v.get(v.len().saturating_sub(len)..).unwrap_or(v);
    let mut out = Zeroizing::new(vec![0u8; len.saturating_sub(v.len())]);
    out.extend_from_slice(v);
    out
}

/// MOVE KEY (Yubico 5.7): moves the key from `from` to `to` (needs the management key).
pub fn move_key(ch: &mut dyn Channel, from: KeySlot, to: KeySlot) -> Result<(), CardError> {
    let cmd = Command::new(0xF6, to.reference(), from.reference()).with_le(None);
    exchange(ch, &cmd)?.success()?;
    Ok(())
}

/// Deletes the key in `slot` with MOVE KEY to FF (Yubico 5.7; needs the management key).
pub fn delete_key(ch: &mut dyn Channel, slot: KeySlot) -> Result<(), CardError> {
    let cmd = Command::new(0xF6, 0xFF, slot.reference()).with_le(None);
    exchange(ch, &cmd)?.success()?;
    Ok(())
}

/// GET VERSION (Yubico): major, minor, patch; `None` for any other answer (an optional
/// extension).
pub fn version(ch: &mut dyn Channel) -> Result<Option<[u8; 3]>, CardError> {
    let resp = exchange(ch, &Command::new(0xFD, 0x00, 0x00))?;
    if !resp.sw.is_success() || resp.data.len() != 3 {
        return Ok(None);
    }
    Ok(resp.data.get(..3).and_then(|v| v.try_into().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_ids_round_trip() {
        for id in [0x06, 0x07, 0x05, 0x16, 0x11, 0x14] {
            assert_eq!(KeyAlgorithm::from_id(id).unwrap().id(), id);
        }
        assert!(KeyAlgorithm::from_id(0xE0).is_none());
        assert_eq!(KeyAlgorithm::Rsa3072.size_bytes(), 384);
        assert_eq!(
            PinPolicy::Default.effective(KeySlot::SIGNATURE),
            PinPolicy::Always
        );
    }

    #[test]
    fn pads_import_components() {
        assert_eq!(&left_pad(&[1, 2], 4)[..], &[0, 0, 1, 2]);
        assert_eq!(&left_pad(&[0, 0, 1, 2], 2)[..], &[1, 2]);
    }
}
