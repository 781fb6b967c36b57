//! Card-side cryptography of the virtual PIV card: the management-key block cipher, private-key
//! operations (raw RSA, ECDSA over a prehash, ECDH), key generation and import, the PIV `7F49`
//! public-key encoding and the attestation certificates. It knows the byte formats the applet
//! needs but nothing about APDUs, status words or the state file; every failure is a
//! [`CryptoError`] that the applet maps to a status word.

use cipher::generic_array::GenericArray;
use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use der::oid::{AssociatedOid, ObjectIdentifier};
use der::{Decode, Encode};
use ecdsa::signature::hazmat::PrehashSigner;
use ecdsa::signature::{Keypair, Signer};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey};
use serde::{Deserialize, Serialize};
use spki::{
    DynSignatureAlgorithmIdentifier, SignatureBitStringEncoding, SubjectPublicKeyInfoOwned,
};
use std::str::FromStr;
use std::time::Duration;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::AsExtension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// What went wrong in a card-side cryptographic operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Stored or imported key material is not a valid key of the expected kind.
    #[error("invalid key material")]
    InvalidKey,
    /// The operation's input has the wrong size or is not a valid value (e.g. not a point).
    #[error("invalid input")]
    InvalidInput,
    /// The algorithm cannot do this operation (ECDH with RSA, generating RSA-1024, …).
    #[error("operation not supported for this algorithm")]
    Unsupported,
    /// Building a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
}

/// Public exponent of every RSA key the card generates or imports.
pub const RSA_EXPONENT: u32 = 65537;

/// Asymmetric key algorithms, with the PIV (SP 800-78-4) and Yubico 5.7 identifiers used as P1
/// of GENERAL AUTHENTICATE and in GENERATE / IMPORT / GET METADATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// RSA 1024 (0x06); usable and importable, never generated.
    Rsa1024,
    /// RSA 2048 (0x07).
    Rsa2048,
    /// RSA 3072 (0x05, Yubico 5.7).
    Rsa3072,
    /// RSA 4096 (0x16, Yubico 5.7).
    Rsa4096,
    /// ECC P-256 (0x11).
    EccP256,
    /// ECC P-384 (0x14).
    EccP384,
}

impl KeyAlgorithm {
    /// The algorithm identifier byte.
    pub const fn id(self) -> u8 {
        match self {
            Self::Rsa1024 => 0x06,
            Self::Rsa2048 => 0x07,
            Self::Rsa3072 => 0x05,
            Self::Rsa4096 => 0x16,
            Self::EccP256 => 0x11,
            Self::EccP384 => 0x14,
        }
    }

    /// The algorithm for an identifier byte.
    pub const fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0x06 => Self::Rsa1024,
            0x07 => Self::Rsa2048,
            0x05 => Self::Rsa3072,
            0x16 => Self::Rsa4096,
            0x11 => Self::EccP256,
            0x14 => Self::EccP384,
            _ => return None,
        })
    }

    /// Modulus size in bits for RSA, `None` for EC.
    pub const fn rsa_bits(self) -> Option<usize> {
        match self {
            Self::Rsa1024 => Some(1024),
            Self::Rsa2048 => Some(2048),
            Self::Rsa3072 => Some(3072),
            Self::Rsa4096 => Some(4096),
            Self::EccP256 | Self::EccP384 => None,
        }
    }

    /// Size in bytes of the modulus (RSA) or of a field element (EC).
    pub const fn byte_len(self) -> usize {
        match self {
            Self::Rsa1024 => 128,
            Self::Rsa2048 => 256,
            Self::Rsa3072 => 384,
            Self::Rsa4096 => 512,
            Self::EccP256 => 32,
            Self::EccP384 => 48,
        }
    }
}

/// Management key algorithms (card management key, reference 9B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MgmtAlgorithm {
    /// Two-key-or-three-key triple DES, 24-byte key (0x03).
    TripleDes,
    /// AES-128 (0x08).
    Aes128,
    /// AES-192 (0x0A).
    Aes192,
    /// AES-256 (0x0C).
    Aes256,
}

impl MgmtAlgorithm {
    /// The algorithm identifier byte.
    pub const fn id(self) -> u8 {
        match self {
            Self::TripleDes => 0x03,
            Self::Aes128 => 0x08,
            Self::Aes192 => 0x0A,
            Self::Aes256 => 0x0C,
        }
    }

    /// The algorithm for an identifier byte.
    pub const fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0x03 => Self::TripleDes,
            0x08 => Self::Aes128,
            0x0A => Self::Aes192,
            0x0C => Self::Aes256,
            _ => return None,
        })
    }

    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::TripleDes | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    /// Cipher block length in bytes (the witness and challenge size).
    pub const fn block_len(self) -> usize {
        match self {
            Self::TripleDes => 8,
            _ => 16,
        }
    }
}

fn ecb<C: BlockEncrypt + BlockDecrypt + KeyInit>(
    key: &[u8],
    block: &[u8],
    encrypt: bool,
) -> Result<Vec<u8>, CryptoError> {
    let cipher = C::new_from_slice(key).map_err(|_| CryptoError::InvalidKey)?;
    let mut b: cipher::Block<C> =
        GenericArray::from_exact_iter(block.iter().copied()).ok_or(CryptoError::InvalidInput)?;
    if encrypt {
        cipher.encrypt_block(&mut b);
    } else {
        cipher.decrypt_block(&mut b);
    }
    Ok(b.to_vec())
}

fn mgmt_block(
    alg: MgmtAlgorithm,
    key: &[u8],
    block: &[u8],
    encrypt: bool,
) -> Result<Vec<u8>, CryptoError> {
    match alg {
        MgmtAlgorithm::TripleDes => ecb::<des::TdesEde3>(key, block, encrypt),
        MgmtAlgorithm::Aes128 => ecb::<aes::Aes128>(key, block, encrypt),
        MgmtAlgorithm::Aes192 => ecb::<aes::Aes192>(key, block, encrypt),
        MgmtAlgorithm::Aes256 => ecb::<aes::Aes256>(key, block, encrypt),
    }
}

/// Encrypts exactly one block with the management key (ECB, no padding).
pub fn mgmt_encrypt(alg: MgmtAlgorithm, key: &[u8], block: &[u8]) -> Result<Vec<u8>, CryptoError> {
    mgmt_block(alg, key, block, true)
}

/// Decrypts exactly one block with the management key (ECB, no padding).
pub fn mgmt_decrypt(alg: MgmtAlgorithm, key: &[u8], block: &[u8]) -> Result<Vec<u8>, CryptoError> {
    mgmt_block(alg, key, block, false)
}

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    OsRng.fill_bytes(&mut out);
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Left-pads `bytes` with zeros to `len` (or keeps the rightmost `len` bytes if longer).
fn left_pad(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(
        bytes
            .get(bytes.len().saturating_sub(len)..)
            .unwrap_or(bytes),
    );
    out
}

/// A private key held by the card.
pub enum PrivateKey {
    /// An RSA key (exponent 65537).
    Rsa(Box<RsaPrivateKey>),
    /// A P-256 key.
    P256(p256::SecretKey),
    /// A P-384 key.
    P384(p384::SecretKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.algorithm() {
            Ok(alg) => write!(f, "PrivateKey({alg:?})"),
            Err(_) => f.write_str("PrivateKey(?)"),
        }
    }
}

impl PrivateKey {
    /// Generates a fresh key. RSA-1024 is refused ([`CryptoError::Unsupported`]).
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, CryptoError> {
        match alg {
            KeyAlgorithm::Rsa1024 => Err(CryptoError::Unsupported),
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let bits = alg.rsa_bits().ok_or(CryptoError::Unsupported)?;
                let key =
                    RsaPrivateKey::new_with_exp(&mut OsRng, bits, &BigUint::from(RSA_EXPONENT))
                        .map_err(|_| CryptoError::InvalidKey)?;
                Ok(Self::Rsa(Box::new(key)))
            }
            KeyAlgorithm::EccP256 => Ok(Self::P256(p256::SecretKey::random(&mut OsRng))),
            KeyAlgorithm::EccP384 => Ok(Self::P384(p384::SecretKey::random(&mut OsRng))),
        }
    }

    /// Loads a key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        if let Ok(k) = RsaPrivateKey::from_pkcs8_der(der) {
            return Ok(Self::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
            return Ok(Self::P384(k));
        }
        Err(CryptoError::InvalidKey)
    }

    /// Encodes the key as PKCS#8 DER.
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let doc = match self {
            Self::Rsa(k) => k.to_pkcs8_der(),
            Self::P256(k) => k.to_pkcs8_der(),
            Self::P384(k) => k.to_pkcs8_der(),
        }
        .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// Rebuilds an RSA key from its primes (the exponent is always 65537). The CRT values a
    /// YubiKey import also carries are recomputed, not trusted.
    pub fn from_rsa_primes(p: &[u8], q: &[u8]) -> Result<Self, CryptoError> {
        let key = RsaPrivateKey::from_p_q(
            BigUint::from_bytes_be(p),
            BigUint::from_bytes_be(q),
            BigUint::from(RSA_EXPONENT),
        )
        .map_err(|_| CryptoError::InvalidKey)?;
        key.validate().map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self::Rsa(Box::new(key)))
    }

    /// Builds an EC key from its private scalar (big-endian, at most the field size).
    pub fn from_ec_scalar(alg: KeyAlgorithm, scalar: &[u8]) -> Result<Self, CryptoError> {
        if scalar.is_empty() || scalar.len() > alg.byte_len() {
            return Err(CryptoError::InvalidKey);
        }
        let padded = Zeroizing::new(left_pad(scalar, alg.byte_len()));
        match alg {
            KeyAlgorithm::EccP256 => p256::SecretKey::from_slice(&padded)
                .map(Self::P256)
                .map_err(|_| CryptoError::InvalidKey),
            KeyAlgorithm::EccP384 => p384::SecretKey::from_slice(&padded)
                .map(Self::P384)
                .map_err(|_| CryptoError::InvalidKey),
            _ => Err(CryptoError::Unsupported),
        }
    }

    /// The key's algorithm (RSA keys of other sizes are [`CryptoError::Unsupported`]).
    pub fn algorithm(&self) -> Result<KeyAlgorithm, CryptoError> {
        match self {
            Self::Rsa(k) => match k.n().bits() {
                1024 => Ok(KeyAlgorithm::Rsa1024),
                2048 => Ok(KeyAlgorithm::Rsa2048),
                3072 => Ok(KeyAlgorithm::Rsa3072),
                4096 => Ok(KeyAlgorithm::Rsa4096),
                _ => Err(CryptoError::Unsupported),
            },
            Self::P256(_) => Ok(KeyAlgorithm::EccP256),
            Self::P384(_) => Ok(KeyAlgorithm::EccP384),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            Self::P256(k) => PublicKey::P256(k.public_key()),
            Self::P384(k) => PublicKey::P384(k.public_key()),
        }
    }

    /// The public key as the content of a PIV `7F49` template (see
    /// [`PublicKey::template`]).
    pub fn public_key_template(&self) -> Vec<u8> {
        self.public_key().template()
    }

    /// The public key as an X.509 SubjectPublicKeyInfo.
    pub fn public_key_spki(&self) -> Result<SubjectPublicKeyInfoOwned, CryptoError> {
        self.public_key().spki()
    }

    /// The raw RSA private-key operation `input^d mod n`. The input must be exactly the modulus
    /// size and smaller than the modulus; the result is left-padded to the modulus size.
    ///
    /// Computed with the CRT and checked with the public exponent (a fault would otherwise leak
    /// a prime). It is not blinded: `rsa`'s blinded `hazmat::rsa_decrypt_and_check` needs the
    /// crate's `hazmat` feature.
    pub fn rsa_raw(&self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let Self::Rsa(key) = self else {
            return Err(CryptoError::Unsupported);
        };
        let size = key.size();
        if input.len() != size {
            return Err(CryptoError::InvalidInput);
        }
        let c = BigUint::from_bytes_be(input);
        if &c >= key.n() {
            return Err(CryptoError::InvalidInput);
        }
        // Blinded CRT private operation, checked against the public key (the rsa crate's).
        let m = rsa::hazmat::rsa_decrypt_and_check(key.as_ref(), Some(&mut OsRng), &c)
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Zeroizing::new(left_pad(&m.to_bytes_be(), size)))
    }

    /// ECDSA over a hash the host computed. The hash is taken as a big-endian integer: shorter
    /// inputs are left-padded, longer ones keep their leftmost field-size bytes (as FIPS 186
    /// truncation would). Returns a DER `ECDSA-Sig-Value`.
    pub fn sign_prehash(&self, hash: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if hash.is_empty() {
            return Err(CryptoError::InvalidInput);
        }
        match self {
            Self::Rsa(_) => Err(CryptoError::Unsupported),
            Self::P256(k) => {
                let z = field_prehash(hash, 32);
                let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                    .sign_prehash(&z)
                    .map_err(|_| CryptoError::InvalidInput)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Self::P384(k) => {
                let z = field_prehash(hash, 48);
                let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                    .sign_prehash(&z)
                    .map_err(|_| CryptoError::InvalidInput)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }

    /// ECDH with a peer's uncompressed point `04‖X‖Y`; returns the shared X coordinate.
    pub fn ecdh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match self {
            Self::Rsa(_) => Err(CryptoError::Unsupported),
            Self::P256(k) => {
                if peer.len() != 65 || peer.first() != Some(&0x04) {
                    return Err(CryptoError::InvalidInput);
                }
                let pk = p256::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| CryptoError::InvalidInput)?;
                let shared = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            Self::P384(k) => {
                if peer.len() != 97 || peer.first() != Some(&0x04) {
                    return Err(CryptoError::InvalidInput);
                }
                let pk = p384::PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| CryptoError::InvalidInput)?;
                let shared = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    }
}

/// The public half of a card key: what the card tells without the PIN (GET METADATA, ATTEST),
/// kept beside the sealed private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA public key.
    Rsa(rsa::RsaPublicKey),
    /// A P-256 point.
    P256(p256::PublicKey),
    /// A P-384 point.
    P384(p384::PublicKey),
}

impl PublicKey {
    /// Parses an X.509 SubjectPublicKeyInfo (DER).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        use pkcs8::DecodePublicKey;
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            return Ok(Self::Rsa(k));
        }
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            return Ok(Self::P384(k));
        }
        Err(CryptoError::InvalidKey)
    }

    /// The SubjectPublicKeyInfo as DER.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, CryptoError> {
        let der = match self {
            Self::Rsa(k) => k.to_public_key_der(),
            Self::P256(k) => k.to_public_key_der(),
            Self::P384(k) => k.to_public_key_der(),
        }
        .map_err(|_| CryptoError::InvalidKey)?;
        Ok(der.as_bytes().to_vec())
    }

    /// The public key as the content of a PIV `7F49` template: `81 n 82 e` for RSA, `86 04‖X‖Y`
    /// for EC. GENERATE wraps it in `7F49`; GET METADATA returns it as tag `04`.
    pub fn template(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Rsa(k) => {
                crate::card::tlv::push_do(&mut out, 0x81, &k.n().to_bytes_be());
                crate::card::tlv::push_do(&mut out, 0x82, &k.e().to_bytes_be());
            }
            Self::P256(k) => {
                let point = k.to_encoded_point(false);
                crate::card::tlv::push_do(&mut out, 0x86, point.as_bytes());
            }
            Self::P384(k) => {
                let point = k.to_encoded_point(false);
                crate::card::tlv::push_do(&mut out, 0x86, point.as_bytes());
            }
        }
        out
    }

    /// The public key as an X.509 SubjectPublicKeyInfo.
    pub fn spki(&self) -> Result<SubjectPublicKeyInfoOwned, CryptoError> {
        SubjectPublicKeyInfoOwned::from_der(&self.to_spki_der()?)
            .map_err(|_| CryptoError::InvalidKey)
    }
}

/// `c^d mod n` through the CRT, or directly when the key lacks precomputed values.
fn field_prehash(hash: &[u8], field: usize) -> Vec<u8> {
    if hash.len() >= field {
        hash.get(..field).unwrap_or(hash).to_vec()
    } else {
        left_pad(hash, field)
    }
}

/// Facts an attestation certificate states about the attested key (Yubico's extensions under
/// 1.3.6.1.4.1.41482.3, so ykman and yubico-piv-tool can read them).
#[derive(Debug, Clone, Copy)]
pub struct AttestedFacts {
    /// Key slot (9A, 9C, …), used in the subject CN.
    pub slot: u8,
    /// Card firmware version.
    pub version: [u8; 3],
    /// Card serial number, when the card family names it in attestations (YubiKey 5 and later).
    pub serial: Option<u32>,
    /// PIN policy byte (1 never, 2 once, 3 always).
    pub pin_policy: u8,
    /// Touch policy byte (1 never, 2 always, 3 cached).
    pub touch_policy: u8,
}

/// Extension whose value is given raw, not re-encoded (Yubico's attestation extensions carry
/// bare bytes inside the OCTET STRING).
macro_rules! raw_extension {
    ($name:ident, $oid:literal) => {
        struct $name(Vec<u8>);
        impl AssociatedOid for $name {
            const OID: ObjectIdentifier = ObjectIdentifier::new_unwrap($oid);
        }
        impl Encode for $name {
            fn encoded_len(&self) -> der::Result<der::Length> {
                der::Length::try_from(self.0.len())
            }
            fn encode(&self, writer: &mut impl der::Writer) -> der::Result<()> {
                writer.write(&self.0)
            }
        }
        impl AsExtension for $name {
            fn critical(&self, _: &Name, _: &[x509_cert::ext::Extension]) -> bool {
                false
            }
        }
    };
}

raw_extension!(FirmwareExt, "1.3.6.1.4.1.41482.3.3");
raw_extension!(SerialExt, "1.3.6.1.4.1.41482.3.7");
raw_extension!(PolicyExt, "1.3.6.1.4.1.41482.3.8");

/// Everything of a certificate except the signer.
struct CertTemplate {
    profile: Profile,
    validity: Validity,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    facts: Option<AttestedFacts>,
}

fn cert_error(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Certificate(e.to_string())
}

fn sign_with<S, Sig>(t: CertTemplate, signer: &S) -> Result<Vec<u8>, CryptoError>
where
    S: Keypair + DynSignatureAlgorithmIdentifier + Signer<Sig>,
    S::VerifyingKey: EncodePublicKey,
    Sig: SignatureBitStringEncoding,
{
    // Positive, non-zero, at most 20 bytes (RFC 5280 §4.1.2.2).
    let mut serial = random_bytes(16);
    if let Some(first) = serial.first_mut() {
        *first = (*first & 0x7F) | 0x01;
    }
    let serial = SerialNumber::new(&serial).map_err(cert_error)?;
    let mut builder =
        CertificateBuilder::new(t.profile, serial, t.validity, t.subject, t.spki, signer)
            .map_err(cert_error)?;
    if let Some(f) = t.facts {
        builder
            .add_extension(&FirmwareExt(f.version.to_vec()))
            .map_err(cert_error)?;
        if let Some(serial) = f.serial {
            builder
                .add_extension(&SerialExt(serial.to_der().map_err(cert_error)?))
                .map_err(cert_error)?;
        }
        builder
            .add_extension(&PolicyExt(vec![f.pin_policy, f.touch_policy]))
            .map_err(cert_error)?;
    }
    let cert = builder.build::<Sig>().map_err(cert_error)?;
    cert.to_der().map_err(cert_error)
}

fn issue(t: CertTemplate, signer: &PrivateKey) -> Result<Vec<u8>, CryptoError> {
    match signer {
        PrivateKey::Rsa(k) => {
            let s = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k.as_ref().clone());
            sign_with::<_, rsa::pkcs1v15::Signature>(t, &s)
        }
        PrivateKey::P256(k) => {
            let s = p256::ecdsa::SigningKey::from(k);
            sign_with::<_, p256::ecdsa::DerSignature>(t, &s)
        }
        PrivateKey::P384(k) => {
            let s = p384::ecdsa::SigningKey::from(k);
            sign_with::<_, p384::ecdsa::DerSignature>(t, &s)
        }
    }
}

/// Validity from now for `years` years.
fn validity_years(years: u64) -> Result<Validity, CryptoError> {
    Validity::from_now(Duration::from_secs(years * 365 * 24 * 3600)).map_err(cert_error)
}

/// The card's self-signed attestation CA certificate (DER) for the slot F9 key.
pub fn attestation_root_certificate(key: &PrivateKey, serial: u32) -> Result<Vec<u8>, CryptoError> {
    let subject = Name::from_str(&format!(
        "CN=Tessera PIV Attestation,OU=Virtual card {serial},O=Tessera"
    ))
    .map_err(cert_error)?;
    let t = CertTemplate {
        profile: Profile::Root,
        validity: validity_years(30)?,
        subject,
        spki: key.public_key_spki()?,
        facts: None,
    };
    issue(t, key)
}

/// An attestation certificate (DER) for `subject_key` (its public half: the card attests keys
/// whose private half stays sealed until the PIN is verified), signed by the attestation key. Issuer
/// name and validity come from the attestation certificate when it parses, as a YubiKey does.
pub fn attestation_certificate(
    attestation_key: &PrivateKey,
    attestation_cert: Option<&[u8]>,
    subject_key: &PublicKey,
    facts: AttestedFacts,
) -> Result<Vec<u8>, CryptoError> {
    let parsed = attestation_cert.and_then(|der| Certificate::from_der(der).ok());
    let (issuer, validity) = match parsed {
        Some(c) => (c.tbs_certificate.subject, c.tbs_certificate.validity),
        None => (
            Name::from_str("CN=Tessera PIV Attestation").map_err(cert_error)?,
            validity_years(30)?,
        ),
    };
    let subject = Name::from_str(&format!("CN=Tessera PIV Attestation {:02x}", facts.slot))
        .map_err(cert_error)?;
    let t = CertTemplate {
        profile: Profile::Leaf {
            issuer,
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        validity,
        subject,
        spki: subject_key.spki()?,
        facts: Some(facts),
    };
    issue(t, attestation_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mgmt_cipher_round_trips_every_algorithm() {
        for (alg, len) in [
            (MgmtAlgorithm::TripleDes, 24),
            (MgmtAlgorithm::Aes128, 16),
            (MgmtAlgorithm::Aes192, 24),
            (MgmtAlgorithm::Aes256, 32),
        ] {
            assert_eq!(alg.key_len(), len);
            assert_eq!(MgmtAlgorithm::from_id(alg.id()), Some(alg));
            let key = random_bytes(len);
            let block = random_bytes(alg.block_len());
            let enc = mgmt_encrypt(alg, &key, &block).unwrap();
            assert_ne!(enc, block);
            assert_eq!(mgmt_decrypt(alg, &key, &enc).unwrap(), block);
            assert_eq!(
                mgmt_encrypt(alg, &key, &block[1..]),
                Err(CryptoError::InvalidInput)
            );
            assert_eq!(
                mgmt_encrypt(alg, &key[1..], &block),
                Err(CryptoError::InvalidKey)
            );
        }
    }

    #[test]
    fn algorithm_ids_round_trip() {
        for id in 0..=255u8 {
            if let Some(a) = KeyAlgorithm::from_id(id) {
                assert_eq!(a.id(), id);
            }
        }
        assert_eq!(KeyAlgorithm::from_id(0x16), Some(KeyAlgorithm::Rsa4096));
        assert_eq!(KeyAlgorithm::from_id(0x05), Some(KeyAlgorithm::Rsa3072));
    }

    #[test]
    fn ec_key_pkcs8_round_trip_and_ecdh() {
        let k = PrivateKey::generate(KeyAlgorithm::EccP384).unwrap();
        let der = k.to_pkcs8().unwrap();
        let k2 = PrivateKey::from_pkcs8(&der).unwrap();
        assert_eq!(k2.algorithm().unwrap(), KeyAlgorithm::EccP384);
        let host = p384::SecretKey::random(&mut OsRng);
        let host_pub = host.public_key().to_encoded_point(false);
        let card = k2.ecdh(host_pub.as_bytes()).unwrap();
        let PrivateKey::P384(ck) = &k2 else { panic!() };
        let expect =
            p384::ecdh::diffie_hellman(host.to_nonzero_scalar(), ck.public_key().as_affine());
        assert_eq!(&card[..], &expect.raw_secret_bytes()[..]);
        assert!(k2.ecdh(&host_pub.as_bytes()[..50]).is_err());
    }

    #[test]
    fn ct_eq_and_padding() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert_eq!(left_pad(&[1, 2], 4), vec![0, 0, 1, 2]);
        assert_eq!(left_pad(&[1, 2, 3], 2), vec![2, 3]);
        assert_eq!(field_prehash(&[1; 64], 32), vec![1; 32]);
    }
}
