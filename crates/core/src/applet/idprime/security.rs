//! IDPrime private-key operations in exactly the forms OpenSC's `idprime` driver sends: MSE SET
//! (`00 22 41 B6|B8 06 80 01 <alg> 84 01 <keyref>`), then for a signature PSO HASH
//! (`00 2A 90 A0 … 90 <len> <hash>`, which the card must echo) and PSO COMPUTE DIGITAL
//! SIGNATURE (`00 2A 9E 9A <Le>`) — never INTERNAL AUTHENTICATE — and for a decryption PSO
//! DECIPHER (`00 2A 80 86 … 81 <cryptogram>`, ISO-chained in 255-byte pieces: IDPrime cards
//! take short APDUs only). The card pads (PKCS#1 v1.5, PSS, ECDSA over a hash) and unpads
//! (PKCS#1 v1.5, OAEP); the host sends bare hashes. Also GET CHALLENGE, and the operations the
//! family does not offer, refused without a word to the card.

use super::keys::{KeyAlgorithm, PrivateKeyRef};
use super::{command, transmit, Error, Profile, Unsupported};
use crate::card::{tlv, CardError, Channel};
use zeroize::Zeroizing;

/// The hashes the card signs with (it refuses SHA-1 under algorithm references 42/52/62).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardHash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl CardHash {
    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Algorithm reference for PKCS#1 v1.5 over a bare hash.
    pub fn pkcs1_reference(self) -> u8 {
        match self {
            Self::Sha256 => 0x42,
            Self::Sha384 => 0x52,
            Self::Sha512 => 0x62,
        }
    }

    /// Algorithm reference for PSS with MGF1 over the same hash (salt length = hash length).
    pub fn pss_reference(self) -> u8 {
        match self {
            Self::Sha256 => 0x45,
            Self::Sha384 => 0x55,
            Self::Sha512 => 0x65,
        }
    }
}

/// The hash (and MGF1 hash) of an OAEP decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl OaepHash {
    /// Algorithm reference for PSO DECIPHER.
    pub fn reference(self) -> u8 {
        match self {
            Self::Sha1 => 0x1D,
            Self::Sha256 => 0x4D,
            Self::Sha384 => 0x5D,
            Self::Sha512 => 0x6D,
        }
    }
}

/// How the card removes the padding of a decrypted block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptPadding<'a> {
    /// PKCS#1 v1.5 (algorithm reference 1A).
    Pkcs1v15,
    /// OAEP; the label must be empty (the command has no place for it).
    Oaep {
        /// Hash and MGF1 hash.
        hash: OaepHash,
        /// The OAEP label.
        label: &'a [u8],
    },
}

/// PKCS#1 v1.5 over a DigestInfo the host built (for hashes the card does not take itself).
const ALG_PKCS1_DIGEST_INFO: u8 = 0x02;
/// ECDSA over a hash.
const ALG_ECDSA: u8 = 0x44;
/// PKCS#1 v1.5 decryption.
const ALG_DECIPHER_PKCS1: u8 = 0x1A;
/// MSE SET control reference templates.
const CRT_SIGN: u8 = 0xB6;
const CRT_DECIPHER: u8 = 0xB8;
/// Largest PSO HASH input OpenSC sends (its 128-byte buffer less the 90 L header).
const PSO_HASH_MAX: usize = 126;
/// Padding indicator of PSO DECIPHER ("proprietary").
const PADDING_INDICATOR: u8 = 0x81;

/// MSE SET for one operation: algorithm (80) and key reference (84), no file reference.
fn mse_set(
    ch: &mut dyn Channel,
    profile: &Profile,
    template: u8,
    algorithm: u8,
    key_reference: u8,
) -> Result<(), Error> {
    let data = [0x80, 0x01, algorithm, 0x84, 0x01, key_reference];
    let sw = transmit(ch, &command(profile, 0x22, 0x41, template, &data, None))?.sw;
    if sw.is_success() {
        Ok(())
    } else {
        Err(Error::from_status(sw))
    }
}

/// MSE SET, PSO HASH (echoed), PSO COMPUTE DIGITAL SIGNATURE; returns the card's answer.
fn pso_sign(
    ch: &mut dyn Channel,
    profile: &Profile,
    key: &PrivateKeyRef,
    algorithm: u8,
    input: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if input.is_empty() || input.len() > PSO_HASH_MAX {
        return Err(Error::BadInput("the card signs at most 126 bytes of hash"));
    }
    mse_set(ch, profile, CRT_SIGN, algorithm, key.reference)?;
    let mut data = Vec::with_capacity(input.len() + 2);
    data.extend_from_slice(&[0x90, input.len() as u8]);
    data.extend_from_slice(input);
    let resp = transmit(
        ch,
        &command(profile, 0x2A, 0x90, 0xA0, &data, Some(input.len())),
    )?;
    if !resp.sw.is_success() {
        return Err(Error::from_status(resp.sw));
    }
    if resp.data.as_slice() != input {
        return Err(Error::Card(CardError::Malformed(
            "the card did not echo the hash of PSO HASH",
        )));
    }
    let le = key.algorithm.signature_len();
    let resp = transmit(ch, &command(profile, 0x2A, 0x9E, 0x9A, &[], Some(le)))?;
    if !resp.sw.is_success() {
        return Err(Error::from_status(resp.sw));
    }
    Ok(resp.data)
}

fn rsa_modulus_len(key: &PrivateKeyRef) -> Result<usize, Error> {
    match key.algorithm {
        KeyAlgorithm::Rsa { bits } => Ok(bits.div_ceil(8)),
        KeyAlgorithm::Ec(_) => Err(Error::NotSupported(Unsupported::KeyAlgorithm)),
    }
}

/// An RSA signature as long as the modulus (a card may drop leading zero bytes).
fn fit_rsa_signature(sig: &[u8], modulus_len: usize) -> Result<Vec<u8>, Error> {
    if sig.is_empty() || sig.len() > modulus_len {
        return Err(Error::Card(CardError::Malformed(
            "the card's signature does not fit the modulus",
        )));
    }
    let mut out = vec![0u8; modulus_len - sig.len()];
    out.extend_from_slice(sig);
    Ok(out)
}

/// RSA PKCS#1 v1.5 signature over a bare hash (CKM_SHA256/384/512_RSA_PKCS after hashing on the
/// host): algorithm reference 42/52/62, the card builds the DigestInfo and the padding.
pub fn sign_pkcs1(
    ch: &mut dyn Channel,
    profile: &Profile,
    key: &PrivateKeyRef,
    hash: CardHash,
    digest: &[u8],
) -> Result<Vec<u8>, Error> {
    let modulus_len = rsa_modulus_len(key)?;
    if digest.len() != hash.digest_len() {
        return Err(Error::BadInput("the digest does not match its hash"));
    }
    let sig = pso_sign(ch, profile, key, hash.pkcs1_reference(), digest)?;
    fit_rsa_signature(&sig, modulus_len)
}

/// RSA PKCS#1 v1.5 signature of a DigestInfo (CKM_RSA_PKCS), as OpenSC does it: a SHA-256/384/
/// 512 DigestInfo is stripped and its hash signed under 42/52/62; a SHA-1 or SHA-224 one is
/// sent whole under algorithm reference 02 (real cards may refuse it); anything that is not a
/// DigestInfo is refused (the card has no raw RSA).
pub fn sign_pkcs1_input(
    ch: &mut dyn Channel,
    profile: &Profile,
    key: &PrivateKeyRef,
    digest_info: &[u8],
) -> Result<Vec<u8>, Error> {
    let modulus_len = rsa_modulus_len(key)?;
    let (oid, digest) =
        split_digest_info(digest_info).ok_or(Error::NotSupported(Unsupported::RawRsa))?;
    use const_oid::db::rfc5912;
    let card_hash = match oid {
        o if o == rfc5912::ID_SHA_256 => Some(CardHash::Sha256),
        o if o == rfc5912::ID_SHA_384 => Some(CardHash::Sha384),
        o if o == rfc5912::ID_SHA_512 => Some(CardHash::Sha512),
        o if o == rfc5912::ID_SHA_1 || o == rfc5912::ID_SHA_224 => None,
        _ => return Err(Error::NotSupported(Unsupported::RawRsa)),
    };
    match card_hash {
        Some(hash) => sign_pkcs1(ch, profile, key, hash, digest),
        None => {
            let sig = pso_sign(ch, profile, key, ALG_PKCS1_DIGEST_INFO, digest_info)?;
            fit_rsa_signature(&sig, modulus_len)
        }
    }
}

/// The hash algorithm and digest of a DER DigestInfo with NULL parameters (the only form
/// OpenSC recognises), checking the digest length against the algorithm.
fn split_digest_info(input: &[u8]) -> Option<(const_oid::ObjectIdentifier, &[u8])> {
    use const_oid::db::rfc5912;
    let (0x30, body, []) = tlv::take_do(input).ok()? else {
        return None;
    };
    let (0x30, alg, rest) = tlv::take_do(body).ok()? else {
        return None;
    };
    let (0x04, digest, []) = tlv::take_do(rest).ok()? else {
        return None;
    };
    let (0x06, oid, [0x05, 0x00]) = tlv::take_do(alg).ok()? else {
        return None;
    };
    let oid = const_oid::ObjectIdentifier::from_bytes(oid).ok()?;
    let len = match oid {
        o if o == rfc5912::ID_SHA_1 => 20,
        o if o == rfc5912::ID_SHA_224 => 28,
        o if o == rfc5912::ID_SHA_256 => 32,
        o if o == rfc5912::ID_SHA_384 => 48,
        o if o == rfc5912::ID_SHA_512 => 64,
        _ => return None,
    };
    (digest.len() == len).then_some((oid, digest))
}

/// RSA-PSS signature over a bare hash (CKM_RSA_PKCS_PSS, CKM_SHAx_RSA_PKCS_PSS): algorithm
/// reference 45/55/65, MGF1 with the same hash; the card pads, with a salt as long as the hash
/// (the length OpenSSL verified in the probe — the card is not told a salt length).
pub fn sign_pss(
    ch: &mut dyn Channel,
    profile: &Profile,
    key: &PrivateKeyRef,
    hash: CardHash,
    digest: &[u8],
) -> Result<Vec<u8>, Error> {
    let modulus_len = rsa_modulus_len(key)?;
    if digest.len() != hash.digest_len() {
        return Err(Error::BadInput("the digest does not match its hash"));
    }
    let sig = pso_sign(ch, profile, key, hash.pss_reference(), digest)?;
    fit_rsa_signature(&sig, modulus_len)
}

/// ECDSA over a hash (CKM_ECDSA) on the models with EC keys (840, 930, 940): algorithm
/// reference 44; the hash is cut to the field length and zero-padded at the front to a multiple
/// of 8 bytes, as OpenSC ≥ 0.24 sends it. Returns r‖s, each as long as the field; an answer
/// in DER (ECDSA-Sig-Value) is turned into r‖s.
pub fn sign_ecdsa(
    ch: &mut dyn Channel,
    profile: &Profile,
    key: &PrivateKeyRef,
    digest: &[u8],
) -> Result<Vec<u8>, Error> {
    let KeyAlgorithm::Ec(curve) = key.algorithm else {
        return Err(Error::NotSupported(Unsupported::KeyAlgorithm));
    };
    if !profile.model.supports_ec() {
        return Err(Error::NotSupported(Unsupported::EcOnThisModel));
    }
    if digest.is_empty() {
        return Err(Error::BadInput("an empty hash"));
    }
    let field = curve.field_bytes();
    let digest = digest.get(..digest.len().min(field)).unwrap_or(digest);
    let pad = (8 - digest.len() % 8) % 8;
    let mut input = vec![0u8; pad];
    input.extend_from_slice(digest);
    let sig = pso_sign(ch, profile, key, ALG_ECDSA, &input)?;
    if sig.len() == 2 * field {
        return Ok(sig.to_vec());
    }
    ecdsa_der_to_raw(&sig, field).ok_or(Error::Card(CardError::Malformed(
        "the card's ECDSA signature is neither r‖s nor DER",
    )))
}

/// ECDSA-Sig-Value (SEQUENCE { r INTEGER, s INTEGER }) to r‖s of `field` bytes each.
fn ecdsa_der_to_raw(der: &[u8], field: usize) -> Option<Vec<u8>> {
    let (0x30, body, []) = tlv::take_do(der).ok()? else {
        return None;
    };
    let (0x02, r, rest) = tlv::take_do(body).ok()? else {
        return None;
    };
    let (0x02, s, []) = tlv::take_do(rest).ok()? else {
        return None;
    };
    let mut out = Vec::with_capacity(2 * field);
    for int in [r, s] {
        let start = int.iter().position(|&b| b != 0).unwrap_or(int.len());
        let int = int.get(start..)?;
        if int.len() > field {
            return None;
        }
        out.resize(out.len() + field - int.len(), 0);
        out.extend_from_slice(int);
    }
    Some(out)
}

/// RSA decryption: MSE SET (B8, 1A or the OAEP reference), then PSO DECIPHER with the padding
/// indicator 81 and the cryptogram, chained in 255-byte pieces (`10 2A 80 86 FF …`, then
/// `00 2A 80 86 …`). The card removes the padding and answers the plaintext.
pub fn decrypt(
    ch: &mut dyn Channel,
    profile: &Profile,
    key: &PrivateKeyRef,
    padding: DecryptPadding<'_>,
    cryptogram: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let modulus_len = rsa_modulus_len(key)?;
    let algorithm = match padding {
        DecryptPadding::Pkcs1v15 => ALG_DECIPHER_PKCS1,
        DecryptPadding::Oaep { label, .. } if !label.is_empty() => {
            return Err(Error::NotSupported(Unsupported::OaepLabel))
        }
        DecryptPadding::Oaep { hash, .. } => hash.reference(),
    };
    if cryptogram.is_empty() || cryptogram.len() > modulus_len {
        return Err(Error::BadInput("the cryptogram does not fit the modulus"));
    }
    mse_set(ch, profile, CRT_DECIPHER, algorithm, key.reference)?;
    let mut data = Vec::with_capacity(cryptogram.len() + 1);
    data.push(PADDING_INDICATOR);
    data.extend_from_slice(cryptogram);
    let pieces: Vec<&[u8]> = data.chunks(crate::card::apdu::SHORT_MAX).collect();
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.iter().enumerate() {
        let resp = if i < last {
            let mut part = command(profile, 0x2A, 0x80, 0x86, piece, None);
            part.cla |= 0x10;
            transmit(ch, &part)?
        } else {
            transmit(
                ch,
                &command(profile, 0x2A, 0x80, 0x86, piece, Some(modulus_len)),
            )?
        };
        if !resp.sw.is_success() {
            return Err(Error::from_status(resp.sw));
        }
        if i == last {
            return Ok(resp.data);
        }
    }
    Err(Error::BadInput("nothing to decrypt"))
}

/// GET CHALLENGE: `00 84 00 01 08` for up to 8 bytes, else `00 84 00 00 10` repeated (16 bytes
/// each), as OpenSC asks.
pub fn get_challenge(
    ch: &mut dyn Channel,
    profile: &Profile,
    len: usize,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let left = len - out.len();
        let (p2, le) = if left <= 8 { (0x01, 8) } else { (0x00, 16) };
        let resp = transmit(ch, &command(profile, 0x84, 0x00, p2, &[], Some(le)))?;
        if !resp.sw.is_success() {
            return Err(Error::from_status(resp.sw));
        }
        if resp.data.is_empty() {
            return Err(Error::Card(CardError::Malformed(
                "GET CHALLENGE answered no bytes",
            )));
        }
        out.extend_from_slice(
            resp.data
                .get(..left.min(resp.data.len()))
                .unwrap_or_default(),
        );
    }
    Ok(out)
}

/// Key generation: not offered by the family (OpenSC has none; the commands are not public).
/// Sends nothing.
pub fn generate_key(_ch: &mut dyn Channel, _profile: &Profile) -> Result<(), Error> {
    Err(Error::NotSupported(Unsupported::KeyGeneration))
}

/// Loading a private key: not offered. Sends nothing.
pub fn import_key(_ch: &mut dyn Channel, _profile: &Profile) -> Result<(), Error> {
    Err(Error::NotSupported(Unsupported::KeyImport))
}

/// Writing a certificate: not offered (the issuer's tool loads renewed certificates). Sends
/// nothing.
pub fn write_certificate(
    _ch: &mut dyn Channel,
    _profile: &Profile,
    _der: &[u8],
) -> Result<(), Error> {
    Err(Error::NotSupported(Unsupported::CertificateWrite))
}

/// Deleting a certificate or key: not offered. Sends nothing.
pub fn delete_object(_ch: &mut dyn Channel, _profile: &Profile) -> Result<(), Error> {
    Err(Error::NotSupported(Unsupported::ObjectDelete))
}

/// ECDH key derivation: not driven by this driver (OpenSC 0.27 has it for 930+/940 only, in a
/// form the notes do not settle). Sends nothing.
pub fn derive(_ch: &mut dyn Channel, _profile: &Profile) -> Result<(), Error> {
    Err(Error::NotSupported(Unsupported::KeyDerivation))
}
