//! What the IDPrime card computes for each algorithm reference of MSE SET (tag 80): PKCS#1
//! v1.5 and PSS signatures over a hash the host computed (the card adds the DigestInfo and does
//! the padding), ECDSA with a raw r‖s answer, and RSA decryption that removes PKCS#1 v1.5 or
//! OAEP padding on the card. Every primitive comes from RustCrypto; this module only maps the
//! card's references to them and checks input sizes. References from OpenSC's idprime driver
//! (IDPRIME-NOTES.md §3.2).

use crate::crypto::PrivateKey;
use rand_core::OsRng;
use rsa::{Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss};
use zeroize::Zeroizing;

/// A hash the card knows by its nibble in the algorithm reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-1 (only as the MGF1 hash of OAEP reference 1D).
    Sha1,
    /// SHA-256 (reference nibble 4).
    Sha256,
    /// SHA-384 (5).
    Sha384,
    /// SHA-512 (6).
    Sha512,
}

impl Hash {
    /// Length of the hash value in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn from_nibble(n: u8) -> Option<Self> {
        match n {
            0x1 => Some(Self::Sha1),
            0x4 => Some(Self::Sha256),
            0x5 => Some(Self::Sha384),
            0x6 => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// A signature algorithm reference (MSE SET for B6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlgorithm {
    /// PKCS#1 v1.5 over a bare hash: the card builds the DigestInfo (42, 52, 62).
    Pkcs1(Hash),
    /// PKCS#1 v1.5 over a DigestInfo the host built (02). Accepted by MSE SET, refused at PSO
    /// HASH: real IDPrime cards refuse it (OpenSC #1772, #2953), and OpenSC only uses it for
    /// the SHA-1/SHA-224/MD5 DigestInfos those cards do not take.
    Pkcs1DigestInfo,
    /// PSS with MGF1 of the same hash and a salt as long as the hash (45, 55, 65).
    Pss(Hash),
    /// ECDSA over the host's hash (44), zero-padded in front to a multiple of 8 bytes.
    Ecdsa,
}

impl SignAlgorithm {
    /// The algorithm of a reference byte.
    pub fn from_reference(r: u8) -> Option<Self> {
        match r {
            0x02 => Some(Self::Pkcs1DigestInfo),
            0x44 => Some(Self::Ecdsa),
            _ => {
                let hash = Hash::from_nibble(r >> 4).filter(|h| *h != Hash::Sha1)?;
                match r & 0x0F {
                    0x2 => Some(Self::Pkcs1(hash)),
                    0x5 => Some(Self::Pss(hash)),
                    _ => None,
                }
            }
        }
    }

    /// Whether the algorithm is for EC keys (else RSA).
    pub const fn is_ec(self) -> bool {
        matches!(self, Self::Ecdsa)
    }

    /// Whether PSO HASH input of `len` bytes is acceptable for this algorithm.
    pub fn accepts_hash_len(self, len: usize) -> bool {
        match self {
            Self::Pkcs1(h) | Self::Pss(h) => len == h.output_len(),
            Self::Pkcs1DigestInfo => false,
            // SHA-1 (20, padded to 24) up to SHA-512.
            Self::Ecdsa => (20..=64).contains(&len) && len.is_multiple_of(8),
        }
    }
}

/// A decryption algorithm reference (MSE SET for B8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecipherAlgorithm {
    /// PKCS#1 v1.5 encryption padding (1A).
    Pkcs1,
    /// OAEP with MGF1 and label hash of the same function, empty label (1D, 4D, 5D, 6D).
    Oaep(Hash),
}

impl DecipherAlgorithm {
    /// The algorithm of a reference byte.
    pub fn from_reference(r: u8) -> Option<Self> {
        match r {
            0x1A => Some(Self::Pkcs1),
            _ if r & 0x0F == 0x0D => Hash::from_nibble(r >> 4).map(Self::Oaep),
            _ => None,
        }
    }
}

/// Why the card could not compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationError {
    /// The key does not fit the algorithm (EC key for an RSA reference, …).
    WrongKey,
    /// The input has the wrong size or does not decrypt to well-padded data.
    BadInput,
}

/// Signs `input` (what PSO HASH received) with `key`. RSA signatures are as long as the
/// modulus; ECDSA ones are r‖s, each a field element.
pub fn sign(key: &PrivateKey, alg: SignAlgorithm, input: &[u8]) -> Result<Vec<u8>, OperationError> {
    if !alg.accepts_hash_len(input.len()) {
        return Err(OperationError::BadInput);
    }
    match (key, alg) {
        (PrivateKey::Rsa(k), SignAlgorithm::Pkcs1(h)) => {
            let scheme = match h {
                Hash::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
                Hash::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
                Hash::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
                Hash::Sha1 => return Err(OperationError::BadInput),
            };
            k.sign(scheme, input).map_err(|_| OperationError::BadInput)
        }
        (PrivateKey::Rsa(k), SignAlgorithm::Pss(h)) => {
            let scheme = match h {
                Hash::Sha256 => Pss::new_with_salt::<sha2::Sha256>(h.output_len()),
                Hash::Sha384 => Pss::new_with_salt::<sha2::Sha384>(h.output_len()),
                Hash::Sha512 => Pss::new_with_salt::<sha2::Sha512>(h.output_len()),
                Hash::Sha1 => return Err(OperationError::BadInput),
            };
            k.sign_with_rng(&mut OsRng, scheme, input)
                .map_err(|_| OperationError::BadInput)
        }
        (PrivateKey::P256(k), SignAlgorithm::Ecdsa) => {
            use p256::ecdsa::signature::hazmat::PrehashSigner;
            let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                .sign_prehash(input)
                .map_err(|_| OperationError::BadInput)?;
            Ok(sig.to_bytes().to_vec())
        }
        (PrivateKey::P384(k), SignAlgorithm::Ecdsa) => {
            use p384::ecdsa::signature::hazmat::PrehashSigner;
            let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                .sign_prehash(input)
                .map_err(|_| OperationError::BadInput)?;
            Ok(sig.to_bytes().to_vec())
        }
        _ => Err(OperationError::WrongKey),
    }
}

/// Decrypts an RSA cryptogram (exactly the modulus length) and removes its padding on the
/// card: the answer is the plaintext.
pub fn decipher(
    key: &PrivateKey,
    alg: DecipherAlgorithm,
    cryptogram: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OperationError> {
    let PrivateKey::Rsa(k) = key else {
        return Err(OperationError::WrongKey);
    };
    if cryptogram.len() != rsa::traits::PublicKeyParts::size(k.as_ref()) {
        return Err(OperationError::BadInput);
    }
    let plain = match alg {
        DecipherAlgorithm::Pkcs1 => k.decrypt(Pkcs1v15Encrypt, cryptogram),
        DecipherAlgorithm::Oaep(Hash::Sha1) => k.decrypt(Oaep::new::<sha1::Sha1>(), cryptogram),
        DecipherAlgorithm::Oaep(Hash::Sha256) => k.decrypt(Oaep::new::<sha2::Sha256>(), cryptogram),
        DecipherAlgorithm::Oaep(Hash::Sha384) => k.decrypt(Oaep::new::<sha2::Sha384>(), cryptogram),
        DecipherAlgorithm::Oaep(Hash::Sha512) => k.decrypt(Oaep::new::<sha2::Sha512>(), cryptogram),
    };
    plain
        .map(Zeroizing::new)
        .map_err(|_| OperationError::BadInput)
}
