//! PKCS#12 (.p12/.pfx) files: reading an e-Cert's private key, certificate and CA chain with
//! the password from the PIN envelope, and writing one (the demo's CA, tests). The file comes
//! from outside, so everything is bounded — its size, every iteration count and their sum, the
//! number of bags and certificates, nesting, the chain's depth (cycles end it) — and a failure
//! names its real cause ([`Problem`]). Secrets (password bytes, derived keys, decrypted
//! contents) live in zeroizing buffers. This module parses and decrypts; it never touches a
//! card and knows nothing of slots or PINs.

use super::{ErrorClass, ManagerError};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{
    BlockCipher, BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit, KeyIvInit, StreamCipher,
};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use cms::enveloped_data::EncryptedContentInfo;
use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, OctetString, OctetStringRef, SetOfVec};
use der::{Decode, Encode, Header, Reader, Sequence, SliceReader, Tag};
use sha1::digest::core_api::BlockSizeUser;
use sha1::digest::{Digest, FixedOutputReset, Mac};
use spki::AlgorithmIdentifierOwned;
use std::fmt;
use std::path::Path;
use x509_cert::attr::Attribute;
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// Largest file read (1 MiB): an e-Cert with its chain takes a few kilobytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most iterations one password derivation may ask for.
pub const MAX_ITERATIONS: u64 = 10_000_000;
/// Most iterations all of a file's password derivations together may ask for.
pub const MAX_TOTAL_ITERATIONS: u64 = 3 * MAX_ITERATIONS;
/// Most safe bags (keys, certificates, anything else) in one file.
pub const MAX_BAGS: usize = 64;
/// Most certificates in one file.
pub const MAX_CERTIFICATES: usize = 32;
/// Most content infos in the authenticated safe.
pub const MAX_SAFES: usize = 16;
/// Most CA certificates above the holder's (the chain stops there).
pub const MAX_CHAIN_DEPTH: usize = 10;
/// Deepest nesting of safeContentsBags.
const MAX_NESTING: usize = 4;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const LOCAL_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.21");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
const AES128_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES192_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.22");
const AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
const DES_EDE3_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.3.7");

/// Names for algorithm identifiers this module may meet, for messages.
const NAMES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.12.1.1", "pbeWithSHAAnd128BitRC4"),
    ("1.2.840.113549.1.12.1.2", "pbeWithSHAAnd40BitRC4"),
    ("1.2.840.113549.1.12.1.3", "pbeWithSHAAnd3-KeyTripleDES-CBC"),
    ("1.2.840.113549.1.12.1.4", "pbeWithSHAAnd2-KeyTripleDES-CBC"),
    ("1.2.840.113549.1.12.1.5", "pbeWithSHAAnd128BitRC2-CBC"),
    ("1.2.840.113549.1.12.1.6", "pbeWithSHAAnd40BitRC2-CBC"),
    ("1.2.840.113549.1.5.1", "pbeWithMD2AndDES-CBC (PKCS#5 v1.5)"),
    ("1.2.840.113549.1.5.3", "pbeWithMD5AndDES-CBC (PKCS#5 v1.5)"),
    ("1.2.840.113549.1.5.4", "pbeWithMD2AndRC2-CBC (PKCS#5 v1.5)"),
    ("1.2.840.113549.1.5.6", "pbeWithMD5AndRC2-CBC (PKCS#5 v1.5)"),
    (
        "1.2.840.113549.1.5.10",
        "pbeWithSHA1AndDES-CBC (PKCS#5 v1.5)",
    ),
    (
        "1.2.840.113549.1.5.11",
        "pbeWithSHA1AndRC2-CBC (PKCS#5 v1.5)",
    ),
    ("1.2.840.113549.1.5.12", "PBKDF2"),
    ("1.2.840.113549.1.5.13", "PBES2"),
    ("1.2.840.113549.1.5.14", "PBMAC1"),
    ("1.3.6.1.4.1.11591.4.11", "scrypt"),
    ("1.3.14.3.2.7", "DES-CBC (single DES)"),
    ("1.2.840.113549.3.2", "RC2-CBC"),
    ("1.2.840.113549.3.4", "RC4"),
    ("1.2.840.113549.3.7", "DES-EDE3-CBC"),
    ("2.16.840.1.101.3.4.1.2", "AES-128-CBC"),
    ("2.16.840.1.101.3.4.1.22", "AES-192-CBC"),
    ("2.16.840.1.101.3.4.1.42", "AES-256-CBC"),
    ("2.16.840.1.101.3.4.1.6", "AES-128-GCM"),
    ("2.16.840.1.101.3.4.1.26", "AES-192-GCM"),
    ("2.16.840.1.101.3.4.1.46", "AES-256-GCM"),
    ("1.2.392.200011.61.1.1.1.2", "CAMELLIA-128-CBC"),
    ("1.2.392.200011.61.1.1.1.3", "CAMELLIA-192-CBC"),
    ("1.2.392.200011.61.1.1.1.4", "CAMELLIA-256-CBC"),
    ("1.2.410.200046.1.1.2", "ARIA-128-CBC"),
    ("1.2.410.200046.1.1.7", "ARIA-192-CBC"),
    ("1.2.410.200046.1.1.12", "ARIA-256-CBC"),
    ("1.2.156.10197.1.104.2", "SM4-CBC"),
    ("1.2.840.113549.2.2", "MD2"),
    ("1.2.840.113549.2.5", "MD5"),
    ("1.3.14.3.2.26", "SHA-1"),
    ("2.16.840.1.101.3.4.2.1", "SHA-256"),
    ("2.16.840.1.101.3.4.2.2", "SHA-384"),
    ("2.16.840.1.101.3.4.2.3", "SHA-512"),
    ("2.16.840.1.101.3.4.2.4", "SHA-224"),
    ("2.16.840.1.101.3.4.2.5", "SHA-512/224"),
    ("2.16.840.1.101.3.4.2.6", "SHA-512/256"),
    ("2.16.840.1.101.3.4.2.7", "SHA3-224"),
    ("2.16.840.1.101.3.4.2.8", "SHA3-256"),
    ("2.16.840.1.101.3.4.2.9", "SHA3-384"),
    ("2.16.840.1.101.3.4.2.10", "SHA3-512"),
    ("1.2.156.10197.1.401", "SM3"),
    ("1.2.643.7.1.1.2.2", "GOST R 34.11-2012 (256 bits)"),
    ("1.2.643.7.1.1.2.3", "GOST R 34.11-2012 (512 bits)"),
    ("1.2.840.113549.2.7", "hmacWithSHA1"),
    ("1.2.840.113549.2.8", "hmacWithSHA224"),
    ("1.2.840.113549.2.9", "hmacWithSHA256"),
    ("1.2.840.113549.2.10", "hmacWithSHA384"),
    ("1.2.840.113549.2.11", "hmacWithSHA512"),
    ("1.2.840.113549.2.12", "hmacWithSHA512-224"),
    ("1.2.840.113549.2.13", "hmacWithSHA512-256"),
];

/// "name (OID)" for an algorithm identifier, or the OID alone.
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    let known = NAMES
        .iter()
        .find(|(o, _)| *o == dotted)
        .map(|(_, n)| (*n).to_owned())
        .or_else(|| const_oid::db::DB.by_oid(oid).map(str::to_owned));
    match known {
        Some(name) => format!("{name} ({dotted})"),
        None => format!("the algorithm {dotted}"),
    }
}

// ---- errors ---------------------------------------------------------------------------------

/// What is wrong with a PKCS#12 file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be read (missing, no permission, a directory).
    Unreadable {
        /// The system's words.
        reason: String,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Zero bytes.
    Empty,
    /// Not a PKCS#12 file at all (PEM text, a certificate, a key, anything else).
    NotPkcs12 {
        /// What it looks like instead.
        why: String,
    },
    /// Cut short: the file says how long it is and is shorter.
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes the file's outer structure announces (`None`: it ends inside the announcement).
        need: Option<usize>,
    },
    /// A PKCS#12 file whose structure is broken at the named place.
    Damaged {
        /// Where.
        at: String,
    },
    /// The password does not open the file: its MAC says so or, in a file without a MAC, the
    /// decrypted contents are not what they must be.
    WrongPassword,
    /// Protected with an algorithm Tessera does not implement.
    UnsupportedAlgorithm {
        /// Its name and OID.
        algorithm: String,
    },
    /// A PKCS#12 form Tessera does not read (public-key integrity or privacy modes, BER).
    UnsupportedFormat {
        /// Which one.
        what: String,
    },
    /// A password derivation asks for more than [`MAX_ITERATIONS`] iterations, or all of them
    /// together for more than [`MAX_TOTAL_ITERATIONS`].
    TooManyIterations {
        /// The count asked for.
        count: u64,
        /// The limit it exceeds.
        limit: u64,
        /// Which derivation ("its MAC", "the private key", "all its derivations together").
        of: String,
    },
    /// More bags, certificates or contents than any e-Cert file holds.
    TooManyEntries {
        /// Of what.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// No private key in the file (certificates only).
    NoPrivateKey,
    /// Private keys, but no certificate belongs to any of them.
    NoCertificateForKey {
        /// How many certificates the file holds.
        certificates: usize,
    },
}

/// A PKCS#12 file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P12Error {
    file: String,
    problem: Problem,
}

impl P12Error {
    /// The file (as given), for messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// What is wrong.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The password is wrong (worth asking again); everything else is about the file.
    pub fn is_wrong_password(&self) -> bool {
        self.problem == Problem::WrongPassword
    }
}

impl fmt::Display for P12Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = &self.file;
        match &self.problem {
            Problem::Unreadable { reason } => write!(f, "cannot read {file}: {reason}"),
            Problem::TooLarge { limit } => write!(
                f,
                "{file} is larger than {limit} bytes ({} KiB): not an e-Cert file (one with its chain takes a few kilobytes); refusing to read it",
                limit / 1024
            ),
            Problem::Empty => write!(f, "{file} is empty: not a PKCS#12 file"),
            Problem::NotPkcs12 { why } => write!(f, "{file} is not a PKCS#12 file: {why}"),
            Problem::Truncated {
                have,
                need: Some(need),
            } => write!(
                f,
                "{file} is damaged: truncated after {have} of its {need} bytes; copy or download it again"
            ),
            Problem::Truncated { have, need: None } => write!(
                f,
                "{file} is damaged: truncated after {have} bytes; copy or download it again"
            ),
            Problem::Damaged { at } => write!(f, "{file} is damaged at {at}"),
            Problem::WrongPassword => write!(f, "wrong password for {file}"),
            Problem::UnsupportedAlgorithm { algorithm } => write!(
                f,
                "{file} is protected with {algorithm}, which Tessera cannot open; export it again with AES-256 (PBES2) protection"
            ),
            Problem::UnsupportedFormat { what } => {
                write!(f, "{file} uses {what}, which Tessera cannot read")
            }
            Problem::TooManyIterations { count, limit, of } => write!(
                f,
                "{file} asks for {count} iterations of password derivation ({of}); Tessera refuses more than {limit}: no genuine e-Cert file needs that many"
            ),
            Problem::TooManyEntries { what, limit } => write!(
                f,
                "{file} holds more than {limit} {what}; no e-Cert file holds that many, refusing it"
            ),
            Problem::NoPrivateKey => write!(
                f,
                "{file} holds no private key (only certificates); the e-Cert file holds the key and its certificate together"
            ),
            Problem::NoCertificateForKey { certificates: 0 } => {
                write!(f, "{file} holds a private key but no certificate")
            }
            Problem::NoCertificateForKey { certificates } => write!(
                f,
                "{file} holds a private key, but none of its {certificates} certificates belongs to it (neither by localKeyID nor by public key)"
            ),
        }
    }
}

impl std::error::Error for P12Error {}

impl From<P12Error> for ManagerError {
    fn from(e: P12Error) -> Self {
        let class = match e.problem() {
            Problem::WrongPassword => ErrorClass::Credential,
            Problem::Unreadable { .. } => ErrorClass::Usage,
            _ => ErrorClass::Damaged,
        };
        ManagerError {
            class,
            message: e.to_string(),
        }
    }
}

type Res<T> = std::result::Result<T, Problem>;

fn damaged(at: impl fmt::Display) -> Problem {
    Problem::Damaged { at: at.to_string() }
}

fn unsupported(oid: &ObjectIdentifier) -> Problem {
    Problem::UnsupportedAlgorithm {
        algorithm: algorithm_name(oid),
    }
}

// ---- ASN.1 (RFC 7292, RFC 8018), decoded by `der` ---------------------------------------------

/// PFX ::= SEQUENCE { version INTEGER {v3(3)}, authSafe ContentInfo, macData MacData OPTIONAL }
#[derive(Clone, Debug, Sequence)]
struct Pfx {
    version: u64,
    auth_safe: ContentInfo,
    mac_data: Option<MacData>,
}

#[derive(Clone, Debug, Sequence)]
struct MacData {
    mac: DigestInfo,
    mac_salt: OctetString,
    #[asn1(default = "one")]
    iterations: u64,
}

fn one() -> u64 {
    1
}

#[derive(Clone, Debug, Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// SafeBag, borrowing its value from the (possibly decrypted, zeroizing) safe contents.
#[derive(Clone, Debug, Sequence)]
struct SafeBag<'a> {
    bag_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    bag_value: AnyRef<'a>,
    bag_attributes: Option<SetOfVec<Attribute>>,
}

#[derive(Clone, Debug, Sequence)]
struct CertBag<'a> {
    cert_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    cert_value: OctetStringRef<'a>,
}

#[derive(Clone, Debug, Sequence)]
struct EncryptedPrivateKeyInfo<'a> {
    encryption_algorithm: AlgorithmIdentifierOwned,
    encrypted_data: OctetStringRef<'a>,
}

/// pkcs-12PbeParams
#[derive(Clone, Debug, Sequence)]
struct Pkcs12PbeParams {
    salt: OctetString,
    iterations: u64,
}

#[derive(Clone, Debug, Sequence)]
struct Pbes2Params {
    kdf: AlgorithmIdentifierOwned,
    encryption: AlgorithmIdentifierOwned,
}

#[derive(Clone, Debug, Sequence)]
struct Pbkdf2Params {
    salt: OctetString,
    iteration_count: u64,
    key_length: Option<u64>,
    /// DEFAULT hmacWithSHA1 when absent.
    prf: Option<AlgorithmIdentifierOwned>,
}

// ---- hashes: the PKCS#12 KDF, HMAC, PBKDF2 ---------------------------------------------------

/// The digests of MACs and password derivations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha512_224,
    Sha512_256,
}

const HASHES: [Hash; 8] = [
    Hash::Md5,
    Hash::Sha1,
    Hash::Sha224,
    Hash::Sha256,
    Hash::Sha384,
    Hash::Sha512,
    Hash::Sha512_224,
    Hash::Sha512_256,
];

const fn oid(dotted: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(dotted)
}

impl Hash {
    /// The digest's OID and, where PBKDF2 has one, its HMAC's (hmacWithSHA…).
    fn oids(self) -> (ObjectIdentifier, Option<ObjectIdentifier>) {
        match self {
            Hash::Md5 => (oid("1.2.840.113549.2.5"), None),
            Hash::Sha1 => (oid("1.3.14.3.2.26"), Some(oid("1.2.840.113549.2.7"))),
            Hash::Sha224 => (
                oid("2.16.840.1.101.3.4.2.4"),
                Some(oid("1.2.840.113549.2.8")),
            ),
            Hash::Sha256 => (
                oid("2.16.840.1.101.3.4.2.1"),
                Some(oid("1.2.840.113549.2.9")),
            ),
            Hash::Sha384 => (
                oid("2.16.840.1.101.3.4.2.2"),
                Some(oid("1.2.840.113549.2.10")),
            ),
            Hash::Sha512 => (
                oid("2.16.840.1.101.3.4.2.3"),
                Some(oid("1.2.840.113549.2.11")),
            ),
            Hash::Sha512_224 => (
                oid("2.16.840.1.101.3.4.2.5"),
                Some(oid("1.2.840.113549.2.12")),
            ),
            Hash::Sha512_256 => (
                oid("2.16.840.1.101.3.4.2.6"),
                Some(oid("1.2.840.113549.2.13")),
            ),
        }
    }

    /// The digest named by a MAC's DigestInfo.
    fn from_digest_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        HASHES.into_iter().find(|h| h.oids().0 == *oid)
    }

    /// The digest of a PBKDF2 pseudo-random function (hmacWithSHA…).
    fn from_hmac_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        HASHES.into_iter().find(|h| h.oids().1 == Some(*oid))
    }

    fn digest_oid(self) -> ObjectIdentifier {
        self.oids().0
    }

    /// The HMAC's OID (MD5, which has none in PBKDF2, gets SHA-1's).
    fn hmac_oid(self) -> ObjectIdentifier {
        self.oids().1.unwrap_or_else(|| oid("1.2.840.113549.2.7"))
    }

    fn output_len(self) -> usize {
        match self {
            Hash::Md5 => 16,
            Hash::Sha1 => 20,
            Hash::Sha224 | Hash::Sha512_224 => 28,
            Hash::Sha256 | Hash::Sha512_256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// RFC 7292 appendix B.2 with this digest.
    fn pkcs12_kdf(
        self,
        password: &[u8],
        salt: &[u8],
        id: u8,
        iterations: u64,
        len: usize,
    ) -> Zeroizing<Vec<u8>> {
        match self {
            Hash::Md5 => pkcs12_kdf::<md5::Md5>(password, salt, id, iterations, len),
            Hash::Sha1 => pkcs12_kdf::<sha1::Sha1>(password, salt, id, iterations, len),
            Hash::Sha224 => pkcs12_kdf::<sha2::Sha224>(password, salt, id, iterations, len),
            Hash::Sha256 => pkcs12_kdf::<sha2::Sha256>(password, salt, id, iterations, len),
            Hash::Sha384 => pkcs12_kdf::<sha2::Sha384>(password, salt, id, iterations, len),
            Hash::Sha512 => pkcs12_kdf::<sha2::Sha512>(password, salt, id, iterations, len),
            Hash::Sha512_224 => pkcs12_kdf::<sha2::Sha512_224>(password, salt, id, iterations, len),
            Hash::Sha512_256 => pkcs12_kdf::<sha2::Sha512_256>(password, salt, id, iterations, len),
        }
    }

    /// HMAC of `data` under `key`.
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Md5 => hmac_tag::<md5::Md5>(key, data),
            Hash::Sha1 => hmac_tag::<sha1::Sha1>(key, data),
            Hash::Sha224 => hmac_tag::<sha2::Sha224>(key, data),
            Hash::Sha256 => hmac_tag::<sha2::Sha256>(key, data),
            Hash::Sha384 => hmac_tag::<sha2::Sha384>(key, data),
            Hash::Sha512 => hmac_tag::<sha2::Sha512>(key, data),
            Hash::Sha512_224 => hmac_tag::<sha2::Sha512_224>(key, data),
            Hash::Sha512_256 => hmac_tag::<sha2::Sha512_256>(key, data),
        }
    }

    /// PBKDF2 with HMAC over this digest (RFC 8018 §5.2).
    fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        use pbkdf2::pbkdf2_hmac;
        match self {
            Hash::Md5 => pbkdf2_hmac::<md5::Md5>(password, salt, iterations, out),
            Hash::Sha1 => pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
            Hash::Sha224 => pbkdf2_hmac::<sha2::Sha224>(password, salt, iterations, out),
            Hash::Sha256 => pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
            Hash::Sha384 => pbkdf2_hmac::<sha2::Sha384>(password, salt, iterations, out),
            Hash::Sha512 => pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, out),
            Hash::Sha512_224 => pbkdf2_hmac::<sha2::Sha512_224>(password, salt, iterations, out),
            Hash::Sha512_256 => pbkdf2_hmac::<sha2::Sha512_256>(password, salt, iterations, out),
        }
    }
}

/// The PKCS#12 key derivation (RFC 7292 appendix B.2): `len` bytes of purpose `id` (1 key,
/// 2 IV, 3 MAC key) from the BMPString password and the salt.
fn pkcs12_kdf<D: Digest + BlockSizeUser + FixedOutputReset>(
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u64,
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let v = D::block_size();
    // S and P: salt and password repeated to a multiple of v bytes; I = S || P.
    let fill = |src: &[u8]| -> Zeroizing<Vec<u8>> {
        let n = v * src.len().div_ceil(v);
        Zeroizing::new(src.iter().copied().cycle().take(n).collect())
    };
    let mut i_block = fill(salt);
    i_block.extend_from_slice(&fill(password));
    let diversifier = vec![id; v];
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let mut hasher = D::new();
    let mut a = Zeroizing::new(sha1::digest::Output::<D>::default());
    let mut b = Zeroizing::new(vec![0u8; v]);
    while out.len() < len {
        Digest::update(&mut hasher, &diversifier);
        Digest::update(&mut hasher, i_block.as_slice());
        Digest::finalize_into_reset(&mut hasher, &mut a);
        for _ in 1..iterations {
            Digest::update(&mut hasher, a.as_slice());
            Digest::finalize_into_reset(&mut hasher, &mut a);
        }
        let take = a.len().min(len - out.len());
        out.extend(a.iter().take(take));
        if out.len() >= len {
            break;
        }
        // B: A repeated to v bytes; every v-byte block I_j of I becomes (I_j + B + 1) mod 2^v.
        for (dst, src) in b.iter_mut().zip(a.iter().cycle()) {
            *dst = *src;
        }
        for block in i_block.chunks_exact_mut(v) {
            let mut carry = 1u16;
            for (x, y) in block.iter_mut().rev().zip(b.iter().rev()) {
                let [low, high] = (u16::from(*x) + u16::from(*y) + carry).to_le_bytes();
                *x = low;
                carry = u16::from(high);
            }
        }
    }
    out
}

fn hmac_tag<D: Digest + BlockSizeUser>(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <hmac::SimpleHmac<D> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => Vec::new(),
    }
}

/// Constant-time equality of two MAC values.
fn same_tag(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- passwords and ciphers -------------------------------------------------------------------

/// The password in both encodings a PKCS#12 file uses.
struct Password {
    /// UTF-8 bytes (PBES2/PBKDF2).
    utf8: Zeroizing<Vec<u8>>,
    /// BMPString with its two-byte terminator (the PKCS#12 KDF), as OpenSSL makes it.
    bmp: Zeroizing<Vec<u8>>,
}

impl Password {
    fn new(password: &str) -> Password {
        let mut bmp = Zeroizing::new(Vec::with_capacity(password.len() * 4 + 2));
        for unit in password.encode_utf16() {
            bmp.extend_from_slice(&unit.to_be_bytes());
        }
        bmp.extend_from_slice(&[0, 0]);
        Password {
            utf8: Zeroizing::new(password.as_bytes().to_vec()),
            bmp,
        }
    }
}

/// A PKCS#12 PBE's cipher (RFC 7292 appendix C), keyed by the PKCS#12 KDF with SHA-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LegacyCipher {
    Rc4_128,
    Rc4_40,
    TdesEde3,
    TdesEde2,
    Rc2_128,
    Rc2_40,
}

impl LegacyCipher {
    fn from_oid(oid: &ObjectIdentifier) -> Option<LegacyCipher> {
        Some(match oid {
            o if *o == pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC4 => LegacyCipher::Rc4_128,
            o if *o == pkcs12::PKCS_12_PBE_WITH_SHAAND40_BIT_RC4 => LegacyCipher::Rc4_40,
            o if *o == pkcs12::PKCS_12_PBE_WITH_SHAAND3_KEY_TRIPLE_DES_CBC => {
                LegacyCipher::TdesEde3
            }
            o if *o == pkcs12::PKCS_12_PBE_WITH_SHAAND2_KEY_TRIPLE_DES_CBC => {
                LegacyCipher::TdesEde2
            }
            o if *o == pkcs12::PKCS_12_PBE_WITH_SHAAND128_BIT_RC2_CBC => LegacyCipher::Rc2_128,
            o if *o == pkcs12::PKCS_12_PBEWITH_SHAAND40_BIT_RC2_CBC => LegacyCipher::Rc2_40,
            _ => return None,
        })
    }

    /// Key and IV lengths.
    fn sizes(self) -> (usize, usize) {
        match self {
            LegacyCipher::Rc4_128 => (16, 0),
            LegacyCipher::Rc4_40 => (5, 0),
            LegacyCipher::TdesEde3 => (24, 8),
            LegacyCipher::TdesEde2 => (16, 8),
            LegacyCipher::Rc2_128 => (16, 8),
            LegacyCipher::Rc2_40 => (5, 8),
        }
    }
}

/// A PBES2 cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pbes2Cipher {
    Aes128,
    Aes192,
    Aes256,
    TdesEde3,
}

impl Pbes2Cipher {
    fn from_oid(oid: &ObjectIdentifier) -> Option<Pbes2Cipher> {
        Some(match *oid {
            AES128_CBC => Pbes2Cipher::Aes128,
            AES192_CBC => Pbes2Cipher::Aes192,
            AES256_CBC => Pbes2Cipher::Aes256,
            DES_EDE3_CBC => Pbes2Cipher::TdesEde3,
            _ => return None,
        })
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Pbes2Cipher::Aes128 => AES128_CBC,
            Pbes2Cipher::Aes192 => AES192_CBC,
            Pbes2Cipher::Aes256 => AES256_CBC,
            Pbes2Cipher::TdesEde3 => DES_EDE3_CBC,
        }
    }

    /// Key and IV (block) lengths.
    fn sizes(self) -> (usize, usize) {
        match self {
            Pbes2Cipher::Aes128 => (16, 16),
            Pbes2Cipher::Aes192 => (24, 16),
            Pbes2Cipher::Aes256 => (32, 16),
            Pbes2Cipher::TdesEde3 => (24, 8),
        }
    }
}

/// A password-based encryption, parsed and checked against the limits before any work.
#[derive(Clone, Debug)]
enum Scheme {
    Legacy {
        cipher: LegacyCipher,
        salt: Vec<u8>,
        iterations: u64,
    },
    Pbes2 {
        prf: Hash,
        salt: Vec<u8>,
        iterations: u64,
        cipher: Pbes2Cipher,
        iv: Vec<u8>,
    },
}

/// The iteration count, if within [`MAX_ITERATIONS`].
fn capped(count: u64, of: &str) -> Res<u64> {
    if count > MAX_ITERATIONS {
        return Err(Problem::TooManyIterations {
            count,
            limit: MAX_ITERATIONS,
            of: of.to_owned(),
        });
    }
    if count == 0 {
        return Err(damaged(format!("{of} (an iteration count of 0)")));
    }
    Ok(count)
}

impl Scheme {
    /// Parses an encryption AlgorithmIdentifier; `of` names what it protects.
    fn parse(alg: &AlgorithmIdentifierOwned, of: &str) -> Res<Scheme> {
        let params = |what: &str| -> Res<&der::Any> {
            alg.parameters
                .as_ref()
                .ok_or_else(|| damaged(format!("{of} ({what} without parameters)")))
        };
        if let Some(cipher) = LegacyCipher::from_oid(&alg.oid) {
            let p: Pkcs12PbeParams = params("PBE")?
                .decode_as()
                .map_err(|e| damaged(format!("{of} (PBE parameters: {e})")))?;
            return Ok(Scheme::Legacy {
                cipher,
                salt: p.salt.into_bytes(),
                iterations: capped(p.iterations, of)?,
            });
        }
        if alg.oid != PBES2 {
            return Err(unsupported(&alg.oid));
        }
        let p: Pbes2Params = params("PBES2")?
            .decode_as()
            .map_err(|e| damaged(format!("{of} (PBES2 parameters: {e})")))?;
        if p.kdf.oid != PBKDF2 {
            return Err(unsupported(&p.kdf.oid));
        }
        let cipher = Pbes2Cipher::from_oid(&p.encryption.oid)
            .ok_or_else(|| unsupported(&p.encryption.oid))?;
        let k: Pbkdf2Params = p
            .kdf
            .parameters
            .as_ref()
            .ok_or_else(|| damaged(format!("{of} (PBKDF2 without parameters)")))?
            .decode_as()
            .map_err(|e| damaged(format!("{of} (PBKDF2 parameters: {e})")))?;
        let prf = match &k.prf {
            None => Hash::Sha1,
            Some(alg) => Hash::from_hmac_oid(&alg.oid).ok_or_else(|| unsupported(&alg.oid))?,
        };
        let (key_len, iv_len) = cipher.sizes();
        if k.key_length.is_some_and(|n| n != key_len as u64) {
            return Err(damaged(format!(
                "{of} (PBKDF2 key length {} for {})",
                k.key_length.unwrap_or_default(),
                algorithm_name(&cipher.oid())
            )));
        }
        let iv: OctetString = p
            .encryption
            .parameters
            .as_ref()
            .ok_or_else(|| damaged(format!("{of} (no IV)")))?
            .decode_as()
            .map_err(|e| damaged(format!("{of} (IV: {e})")))?;
        if iv.as_bytes().len() != iv_len {
            return Err(damaged(format!(
                "{of} (an IV of {} bytes)",
                iv.as_bytes().len()
            )));
        }
        Ok(Scheme::Pbes2 {
            prf,
            salt: k.salt.into_bytes(),
            iterations: capped(k.iteration_count, of)?,
            cipher,
            iv: iv.into_bytes(),
        })
    }

    /// The iterations one decryption costs (key and IV derivations).
    fn cost(&self) -> u64 {
        match self {
            Scheme::Legacy {
                cipher, iterations, ..
            } if cipher.sizes().1 > 0 => iterations.saturating_mul(2),
            Scheme::Legacy { iterations, .. } | Scheme::Pbes2 { iterations, .. } => *iterations,
        }
    }

    /// Decrypts; `Ok(None)` when the padding is wrong (a wrong password, mostly).
    fn decrypt(&self, password: &Password, data: &[u8]) -> Res<Option<Zeroizing<Vec<u8>>>> {
        match self {
            Scheme::Legacy {
                cipher,
                salt,
                iterations,
            } => {
                let (key_len, iv_len) = cipher.sizes();
                let key = Hash::Sha1.pkcs12_kdf(&password.bmp, salt, 1, *iterations, key_len);
                let iv = Hash::Sha1.pkcs12_kdf(&password.bmp, salt, 2, *iterations, iv_len);
                match cipher {
                    LegacyCipher::Rc4_128 => rc4_apply::<rc4::consts::U16>(&key, data),
                    LegacyCipher::Rc4_40 => rc4_apply::<rc4::consts::U5>(&key, data),
                    LegacyCipher::TdesEde3 => cbc_decrypt::<des::TdesEde3>(&key, &iv, data),
                    LegacyCipher::TdesEde2 => cbc_decrypt::<des::TdesEde2>(&key, &iv, data),
                    LegacyCipher::Rc2_128 | LegacyCipher::Rc2_40 => {
                        let bits = if *cipher == LegacyCipher::Rc2_128 {
                            128
                        } else {
                            40
                        };
                        let rc2 = rc2::Rc2::new_with_eff_key_len(&key, bits);
                        let dec = cbc::Decryptor::inner_iv_slice_init(rc2, &iv)
                            .map_err(|_| damaged("an RC2 IV"))?;
                        cbc_finish(dec, 8, data)
                    }
                }
            }
            Scheme::Pbes2 {
                prf,
                salt,
                iterations,
                cipher,
                iv,
            } => {
                let (key_len, _) = cipher.sizes();
                let mut key = Zeroizing::new(vec![0u8; key_len]);
                let rounds = u32::try_from(*iterations).unwrap_or(u32::MAX);
                prf.pbkdf2(&password.utf8, salt, rounds, &mut key);
                match cipher {
                    Pbes2Cipher::Aes128 => cbc_decrypt::<aes::Aes128>(&key, iv, data),
                    Pbes2Cipher::Aes192 => cbc_decrypt::<aes::Aes192>(&key, iv, data),
                    Pbes2Cipher::Aes256 => cbc_decrypt::<aes::Aes256>(&key, iv, data),
                    Pbes2Cipher::TdesEde3 => cbc_decrypt::<des::TdesEde3>(&key, iv, data),
                }
            }
        }
    }
}

fn rc4_apply<N>(key: &[u8], data: &[u8]) -> Res<Option<Zeroizing<Vec<u8>>>>
where
    N: rc4::cipher::ArrayLength<u8>,
{
    let mut cipher =
        <rc4::Rc4<N> as KeyInit>::new_from_slice(key).map_err(|_| damaged("an RC4 key"))?;
    let mut buf = Zeroizing::new(data.to_vec());
    cipher.apply_keystream(&mut buf);
    Ok(Some(buf))
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Res<Option<Zeroizing<Vec<u8>>>>
where
    C: BlockDecryptMut + BlockCipher + KeyInit,
{
    let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| damaged("a key or IV"))?;
    cbc_finish(dec, C::block_size(), data)
}

fn cbc_finish<C>(
    dec: cbc::Decryptor<C>,
    block: usize,
    data: &[u8],
) -> Res<Option<Zeroizing<Vec<u8>>>>
where
    C: BlockDecryptMut + BlockCipher,
{
    if data.is_empty() || !data.len().is_multiple_of(block) {
        return Err(damaged(format!(
            "encrypted contents of {} bytes (not whole {block}-byte blocks)",
            data.len()
        )));
    }
    let mut buf = Zeroizing::new(data.to_vec());
    let n = match dec.decrypt_padded_mut::<Pkcs7>(&mut buf) {
        Ok(plain) => plain.len(),
        Err(_) => return Ok(None),
    };
    buf.truncate(n);
    Ok(Some(buf))
}

// ---- reading ---------------------------------------------------------------------------------

/// A decrypted PKCS#12 file: the e-Cert's key, certificate and CA chain.
pub struct P12 {
    /// The private key, PKCS#8 DER.
    pub key: Zeroizing<Vec<u8>>,
    /// The holder's certificate, DER.
    pub certificate: Vec<u8>,
    /// The CA certificates above it, DER, the certificate's issuer first.
    pub chain: Vec<Vec<u8>>,
}

/// A PKCS#12 file read once and checked as far as possible without its password (size,
/// structure, algorithms, iteration counts), on which passwords can then be tried.
pub struct P12File {
    name: String,
    bytes: Vec<u8>,
}

impl P12File {
    /// Reads (at most [`MAX_FILE_BYTES`]) and checks the file at `path`.
    pub fn open(path: &Path) -> Result<P12File, P12Error> {
        let name = path.display().to_string();
        let fail = |problem| P12Error {
            file: name.clone(),
            problem,
        };
        let f = std::fs::File::open(path).map_err(|e| {
            fail(Problem::Unreadable {
                reason: e.to_string(),
            })
        })?;
        let bytes = super::secret::read_bounded(f, MAX_FILE_BYTES)
            .map_err(|e| {
                fail(Problem::Unreadable {
                    reason: e.to_string(),
                })
            })?
            .ok_or_else(|| {
                fail(Problem::TooLarge {
                    limit: MAX_FILE_BYTES,
                })
            })?;
        P12File::from_bytes(&name, bytes)
    }

    /// Checks `bytes` (at most [`MAX_FILE_BYTES`]) as a PKCS#12 file called `name` in messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<P12File, P12Error> {
        let file = P12File {
            name: name.to_owned(),
            bytes,
        };
        if file.bytes.len() > MAX_FILE_BYTES {
            return Err(file.error(Problem::TooLarge {
                limit: MAX_FILE_BYTES,
            }));
        }
        file.walk(None).map_err(|p| file.error(p))?;
        Ok(file)
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens the file with `password`: the key, the certificate that belongs to it and the CA
    /// chain above that certificate. Only [`Problem::WrongPassword`] says the password is wrong.
    pub fn decrypt(&self, password: &str) -> Result<P12, P12Error> {
        let password = Password::new(password);
        let found = self.walk(Some(password)).map_err(|p| self.error(p))?;
        assemble(found).map_err(|p| self.error(p))
    }

    fn error(&self, problem: Problem) -> P12Error {
        P12Error {
            file: self.name.clone(),
            problem,
        }
    }

    /// Parses the whole file; with a password also verifies the MAC and decrypts.
    fn walk(&self, password: Option<Password>) -> Res<Found> {
        let pfx = outer(&self.bytes)?;
        if pfx.version != 3 {
            return Err(Problem::UnsupportedFormat {
                what: format!("PKCS#12 version {} (only version 3 exists)", pfx.version),
            });
        }
        let auth_safe = &pfx.auth_safe;
        if auth_safe.content_type == ID_SIGNED_DATA {
            return Err(Problem::UnsupportedFormat {
                what: "public-key integrity mode (a signed authenticated safe)".into(),
            });
        }
        if auth_safe.content_type != ID_DATA {
            return Err(damaged(format!(
                "the authenticated safe (content type {})",
                auth_safe.content_type
            )));
        }
        let data: OctetStringRef<'_> = auth_safe
            .content
            .decode_as()
            .map_err(|e| damaged(format!("the authenticated safe ({e})")))?;
        let mut walker = Walker {
            password,
            mac_verified: false,
            spent: 0,
            bags: 0,
            found: Found::default(),
        };
        if let Some(mac) = &pfx.mac_data {
            walker.verify_mac(mac, data.as_bytes())?;
        }
        let safes = Vec::<ContentInfo>::from_der(data.as_bytes())
            .map_err(|e| damaged(format!("the list of contents ({e})")))?;
        if safes.len() > MAX_SAFES {
            return Err(Problem::TooManyEntries {
                what: "contents",
                limit: MAX_SAFES,
            });
        }
        let total = safes.len();
        // Cheap checks of every content first: an unsupported algorithm or an absurd
        // iteration count is refused before any password derivation runs.
        let mut schemes = Vec::with_capacity(total);
        for (n, ci) in safes.iter().enumerate() {
            let at = format!("content {} of {total}", n + 1);
            schemes.push(walker.content_scheme(ci, &at)?);
        }
        for ((n, ci), scheme) in safes.iter().enumerate().zip(schemes) {
            let at = format!("content {} of {total}", n + 1);
            walker.content(ci, scheme, &at)?;
        }
        Ok(walker.found)
    }
}

/// Reads and opens the PKCS#12 file at `path` with `password`.
pub fn read(path: &Path, password: &str) -> Result<P12, P12Error> {
    P12File::open(path)?.decrypt(password)
}

/// The outer PFX structure, with the file's first bytes telling "not PKCS#12" from "damaged".
fn outer(bytes: &[u8]) -> Res<Pfx> {
    if bytes.is_empty() {
        return Err(Problem::Empty);
    }
    let start = bytes.get(..64).unwrap_or(bytes);
    if start.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(Problem::NotPkcs12 {
            why: "it is PEM text; a .p12/.pfx file is binary (`openssl pkcs12 -export` makes one from PEM files)".into(),
        });
    }
    if bytes.first() != Some(&0x30) {
        let why = if start
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        {
            "it is text".to_owned()
        } else {
            "it does not begin as one does".to_owned()
        };
        return Err(Problem::NotPkcs12 { why });
    }
    let mut reader = SliceReader::new(bytes).map_err(damaged)?;
    let header = match Header::decode(&mut reader) {
        Ok(h) => h,
        Err(e) if e.kind() == der::ErrorKind::IndefiniteLength => {
            return Err(Problem::UnsupportedFormat {
                what: "BER indefinite-length encoding".into(),
            })
        }
        Err(_) => {
            return Err(Problem::Truncated {
                have: bytes.len(),
                need: None,
            })
        }
    };
    let header_len = usize::try_from(reader.position()).unwrap_or(usize::MAX);
    let body_len = usize::try_from(header.length).unwrap_or(usize::MAX);
    let need = header_len.saturating_add(body_len);
    let Some(whole) = bytes.get(..need) else {
        return Err(Problem::Truncated {
            have: bytes.len(),
            need: Some(need),
        });
    };
    // The first element must be the version INTEGER: otherwise this is another DER file.
    if bytes.get(header_len) != Some(&0x02) {
        return Err(Problem::NotPkcs12 {
            why: "it is DER, but not PKCS#12 (a certificate, a key or a request?)".into(),
        });
    }
    Pfx::from_der(whole).map_err(|e| match e.kind() {
        der::ErrorKind::IndefiniteLength => Problem::UnsupportedFormat {
            what: "BER indefinite-length encoding".into(),
        },
        _ => damaged(format!("its outer structure ({e})")),
    })
}

/// One key found in the file.
struct KeyEntry {
    pkcs8: Zeroizing<Vec<u8>>,
    local_key_id: Option<Vec<u8>>,
}

/// One X.509 certificate found in the file.
struct CertEntry {
    der: Vec<u8>,
    cert: Certificate,
    local_key_id: Option<Vec<u8>>,
}

#[derive(Default)]
struct Found {
    keys: Vec<KeyEntry>,
    certs: Vec<CertEntry>,
}

/// One pass over a file's contents.
struct Walker {
    /// `None`: check the structure only.
    password: Option<Password>,
    mac_verified: bool,
    /// Iterations spent so far (checked against [`MAX_TOTAL_ITERATIONS`]).
    spent: u64,
    bags: usize,
    found: Found,
}

impl Walker {
    /// Counts `count` iterations against the file's total.
    fn spend(&mut self, count: u64) -> Res<()> {
        self.spent = self.spent.saturating_add(count);
        if self.spent > MAX_TOTAL_ITERATIONS {
            return Err(Problem::TooManyIterations {
                count: self.spent,
                limit: MAX_TOTAL_ITERATIONS,
                of: "all its derivations together".into(),
            });
        }
        Ok(())
    }

    /// What a failed decryption means: without a MAC, the password; with a verified MAC, damage.
    fn undecryptable(&self, at: &str) -> Problem {
        if self.mac_verified {
            damaged(format!(
                "{at} (it does not decrypt with the password that verified the file's MAC)"
            ))
        } else {
            Problem::WrongPassword
        }
    }

    fn verify_mac(&mut self, mac: &MacData, data: &[u8]) -> Res<()> {
        let alg = &mac.mac.algorithm.oid;
        let hash = Hash::from_digest_oid(alg).ok_or_else(|| unsupported(alg))?;
        let iterations = capped(mac.iterations, "its MAC")?;
        let Some(password) = &self.password else {
            return self.spend(iterations);
        };
        // OpenSSL writes an empty password as the BMPString terminator alone, older tools as
        // nothing at all: try both, and decrypt with the one the MAC takes.
        let mut candidates = vec![password.bmp.clone()];
        if password.utf8.is_empty() {
            candidates.push(Zeroizing::new(Vec::new()));
        }
        let salt = mac.mac_salt.as_bytes();
        for candidate in candidates {
            self.spend(iterations)?;
            let key = hash.pkcs12_kdf(&candidate, salt, 3, iterations, hash.output_len());
            if same_tag(&hash.hmac(&key, data), mac.mac.digest.as_bytes()) {
                if let Some(p) = &mut self.password {
                    p.bmp = candidate;
                }
                self.mac_verified = true;
                return Ok(());
            }
        }
        Err(Problem::WrongPassword)
    }

    /// The encryption of a content info, parsed and checked (`None`: not encrypted).
    fn content_scheme(&mut self, ci: &ContentInfo, at: &str) -> Res<Option<Scheme>> {
        match ci.content_type {
            ID_DATA => Ok(None),
            ID_ENCRYPTED_DATA => {
                let ed: EncryptedData = ci
                    .content
                    .decode_as()
                    .map_err(|e| damaged(format!("{at} ({e})")))?;
                let scheme = Scheme::parse(
                    &ed.enc_content_info.content_enc_alg,
                    "the encrypted certificates",
                )?;
                self.spend(scheme.cost())?;
                Ok(Some(scheme))
            }
            ID_ENVELOPED_DATA => Err(Problem::UnsupportedFormat {
                what: "public-key privacy mode (contents enveloped to a certificate)".into(),
            }),
            other => Err(damaged(format!("{at} (content type {other})"))),
        }
    }

    fn content(&mut self, ci: &ContentInfo, scheme: Option<Scheme>, at: &str) -> Res<()> {
        let Some(scheme) = scheme else {
            let data: OctetStringRef<'_> = ci
                .content
                .decode_as()
                .map_err(|e| damaged(format!("{at} ({e})")))?;
            return self.bags(data.as_bytes(), 0, at, false);
        };
        let Some(password) = &self.password else {
            return Ok(());
        };
        let ed: EncryptedData = ci
            .content
            .decode_as()
            .map_err(|e| damaged(format!("{at} ({e})")))?;
        let EncryptedContentInfo {
            encrypted_content, ..
        } = ed.enc_content_info;
        let Some(encrypted) = encrypted_content else {
            return Err(damaged(format!("{at} (no encrypted content)")));
        };
        let plain = scheme
            .decrypt(password, encrypted.as_bytes())
            .map_err(|p| match p {
                Problem::Damaged { at: what } => damaged(format!("{at} ({what})")),
                other => other,
            })?;
        let Some(plain) = plain else {
            return Err(self.undecryptable(at));
        };
        self.bags(&plain, 0, at, true)
    }

    /// The bags of one SafeContents; `decrypted` when it came out of a decryption (then a
    /// broken structure may mean a wrong password).
    fn bags(&mut self, safe: &[u8], depth: usize, at: &str, decrypted: bool) -> Res<()> {
        let list = match Vec::<SafeBag<'_>>::from_der(safe) {
            Ok(list) => list,
            Err(_) if decrypted => return Err(self.undecryptable(at)),
            Err(e) => return Err(damaged(format!("{at} ({e})"))),
        };
        for (n, bag) in list.iter().enumerate() {
            self.bags += 1;
            if self.bags > MAX_BAGS {
                return Err(Problem::TooManyEntries {
                    what: "bags (keys, certificates and others)",
                    limit: MAX_BAGS,
                });
            }
            let at = format!("{at}, bag {}", n + 1);
            self.bag(bag, depth, &at)?;
        }
        Ok(())
    }

    fn bag(&mut self, bag: &SafeBag<'_>, depth: usize, at: &str) -> Res<()> {
        let local_key_id = local_key_id(bag);
        let broken = |e: der::Error| damaged(format!("{at} ({e})"));
        match bag.bag_id {
            pkcs12::PKCS_12_KEY_BAG_OID => {
                let pkcs8 = Zeroizing::new(bag.bag_value.to_der().map_err(broken)?);
                if pkcs8::PrivateKeyInfo::try_from(pkcs8.as_slice()).is_err() {
                    return Err(damaged(format!("{at} (the private key is not PKCS#8)")));
                }
                self.found.keys.push(KeyEntry {
                    pkcs8,
                    local_key_id,
                });
            }
            pkcs12::PKCS_12_PKCS8_KEY_BAG_OID => {
                let info: EncryptedPrivateKeyInfo<'_> =
                    bag.bag_value.decode_as().map_err(broken)?;
                let scheme = Scheme::parse(&info.encryption_algorithm, "the private key")?;
                self.spend(scheme.cost())?;
                let Some(password) = &self.password else {
                    return Ok(());
                };
                let plain = scheme
                    .decrypt(password, info.encrypted_data.as_bytes())
                    .map_err(|p| match p {
                        Problem::Damaged { at: what } => damaged(format!("{at} ({what})")),
                        other => other,
                    })?;
                let pkcs8 = match plain {
                    Some(p) if pkcs8::PrivateKeyInfo::try_from(p.as_slice()).is_ok() => p,
                    _ => return Err(self.undecryptable(&format!("{at} (the private key)"))),
                };
                self.found.keys.push(KeyEntry {
                    pkcs8,
                    local_key_id,
                });
            }
            pkcs12::PKCS_12_CERT_BAG_OID => {
                let cert_bag: CertBag<'_> = bag.bag_value.decode_as().map_err(broken)?;
                if cert_bag.cert_id != pkcs12::PKCS_12_X509_CERT_OID {
                    return Ok(());
                }
                if self.found.certs.len() >= MAX_CERTIFICATES {
                    return Err(Problem::TooManyEntries {
                        what: "certificates",
                        limit: MAX_CERTIFICATES,
                    });
                }
                let der = cert_bag.cert_value.as_bytes().to_vec();
                let cert = Certificate::from_der(&der)
                    .map_err(|e| damaged(format!("{at} (the certificate is not X.509: {e})")))?;
                self.found.certs.push(CertEntry {
                    der,
                    cert,
                    local_key_id,
                });
            }
            pkcs12::PKCS_12_SAFE_CONTENTS_BAG_OID => {
                if depth + 1 >= MAX_NESTING {
                    return Err(Problem::TooManyEntries {
                        what: "levels of nested safe contents",
                        limit: MAX_NESTING,
                    });
                }
                let inner = bag.bag_value.to_der().map_err(broken)?;
                self.bags(&inner, depth + 1, at, false)?;
            }
            // CRLs, secrets and anything newer are not part of an e-Cert.
            _ => {}
        }
        Ok(())
    }
}

/// The localKeyID attribute's value.
fn local_key_id(bag: &SafeBag<'_>) -> Option<Vec<u8>> {
    let attrs = bag.bag_attributes.as_ref()?;
    let attr = attrs.iter().find(|a| a.oid == LOCAL_KEY_ID)?;
    let value = attr.values.iter().next()?;
    let octets: OctetStringRef<'_> = value.decode_as().ok()?;
    Some(octets.as_bytes().to_vec())
}

/// A public key in a form that compares equal however it was encoded: RSA and NIST EC keys
/// re-encoded canonically (uncompressed points), others as their SubjectPublicKeyInfo.
fn canonical_spki(spki: &[u8]) -> Option<Vec<u8>> {
    use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(spki) {
        return k.to_public_key_der().ok().map(|d| d.into_vec());
    }
    if let Ok(k) = p256::PublicKey::from_public_key_der(spki) {
        return k.to_public_key_der().ok().map(|d| d.into_vec());
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(spki) {
        return k.to_public_key_der().ok().map(|d| d.into_vec());
    }
    Some(spki.to_vec())
}

/// The public key of a PKCS#8 private key, canonical as [`canonical_spki`].
fn key_public(pkcs8: &[u8]) -> Option<Vec<u8>> {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8) {
        return rsa::RsaPublicKey::from(&k)
            .to_public_key_der()
            .ok()
            .map(|d| d.into_vec());
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(pkcs8) {
        return k
            .public_key()
            .to_public_key_der()
            .ok()
            .map(|d| d.into_vec());
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_der(pkcs8) {
        return k
            .public_key()
            .to_public_key_der()
            .ok()
            .map(|d| d.into_vec());
    }
    // Other algorithms: the public key a PKCS#8 v2 (OneAsymmetricKey) file may carry.
    let info = pkcs8::PrivateKeyInfo::try_from(pkcs8).ok()?;
    let public = info.public_key?;
    let spki = spki::SubjectPublicKeyInfoRef {
        algorithm: info.algorithm,
        subject_public_key: der::asn1::BitStringRef::from_bytes(public).ok()?,
    };
    spki.to_der().ok()
}

/// The key with its certificate (by localKeyID, else by public key) and the chain above it.
fn assemble(found: Found) -> Res<P12> {
    let Found { keys, certs } = found;
    if keys.is_empty() {
        return Err(Problem::NoPrivateKey);
    }
    let cert_keys: Vec<Option<Vec<u8>>> = certs
        .iter()
        .map(|c| {
            c.cert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .ok()
                .and_then(|d| canonical_spki(&d))
        })
        .collect();
    let by_id = |key: &KeyEntry| {
        key.local_key_id.as_ref().and_then(|id| {
            certs
                .iter()
                .position(|c| c.local_key_id.as_ref() == Some(id))
        })
    };
    let by_public = |key: &KeyEntry| {
        let public = key_public(&key.pkcs8)?;
        cert_keys.iter().position(|c| c.as_ref() == Some(&public))
    };
    // OpenSSL's order: the first key with a certificate; localKeyID first (as the file's
    // writer paired them, so a mismatched pair is reported as such by the caller).
    let matched = keys
        .iter()
        .enumerate()
        .find_map(|(k, key)| by_id(key).map(|c| (k, c)))
        .or_else(|| {
            keys.iter()
                .enumerate()
                .find_map(|(k, key)| by_public(key).map(|c| (k, c)))
        });
    let Some((key_index, leaf_index)) = matched else {
        return Err(Problem::NoCertificateForKey {
            certificates: certs.len(),
        });
    };
    let chain = chain_above(&certs, leaf_index);
    let count = certs.len();
    let key = keys
        .into_iter()
        .nth(key_index)
        .map(|k| k.pkcs8)
        .ok_or(Problem::NoPrivateKey)?;
    let certificate =
        certs
            .into_iter()
            .nth(leaf_index)
            .map(|c| c.der)
            .ok_or(Problem::NoCertificateForKey {
                certificates: count,
            })?;
    Ok(P12 {
        key,
        certificate,
        chain,
    })
}

/// The CA certificates above `certs[leaf]`, issuer first: by issuer/subject name (preferring
/// the one whose subjectKeyIdentifier is the authorityKeyIdentifier), every certificate used
/// at most once (a cycle ends the chain), at most [`MAX_CHAIN_DEPTH`] of them, ending at a
/// self-issued certificate.
fn chain_above(certs: &[CertEntry], leaf: usize) -> Vec<Vec<u8>> {
    use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};
    type Names = (Option<Vec<u8>>, Option<Vec<u8>>);
    let names: Vec<Names> = certs
        .iter()
        .map(|c| {
            let tbs = &c.cert.tbs_certificate;
            (tbs.subject.to_der().ok(), tbs.issuer.to_der().ok())
        })
        .collect();
    let ski = |c: &CertEntry| -> Option<Vec<u8>> {
        let (_, s) = c
            .cert
            .tbs_certificate
            .get::<SubjectKeyIdentifier>()
            .ok()??;
        Some(s.0.as_bytes().to_vec())
    };
    let aki = |c: &CertEntry| -> Option<Vec<u8>> {
        let (_, a) = c
            .cert
            .tbs_certificate
            .get::<AuthorityKeyIdentifier>()
            .ok()??;
        Some(a.key_identifier?.as_bytes().to_vec())
    };
    let mut used = vec![leaf];
    let mut chain = Vec::new();
    let mut current = leaf;
    while chain.len() < MAX_CHAIN_DEPTH {
        let Some((Some(subject), Some(issuer))) = names.get(current) else {
            break;
        };
        if subject == issuer {
            break;
        }
        let candidates: Vec<usize> = (0..certs.len())
            .filter(|i| !used.contains(i))
            .filter(|i| names.get(*i).and_then(|n| n.0.as_ref()) == Some(issuer))
            .collect();
        let wanted = certs.get(current).and_then(aki);
        let next = candidates
            .iter()
            .copied()
            .find(|i| wanted.is_some() && certs.get(*i).and_then(ski) == wanted)
            .or_else(|| candidates.first().copied());
        let Some(next) = next else {
            break;
        };
        let Some(entry) = certs.get(next) else {
            break;
        };
        used.push(next);
        chain.push(entry.der.clone());
        current = next;
    }
    chain
}

// ---- writing ---------------------------------------------------------------------------------

/// How [`write`] protects a file.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Iterations of PBKDF2 and of the MAC's key derivation.
    pub iterations: u32,
    /// Tag the key and its certificate with a localKeyID (as every tool does); without it a
    /// reader pairs them by public key.
    pub local_key_id: bool,
    /// Protect the file's integrity with an HMAC-SHA-256 MAC.
    pub mac: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            iterations: 10_000,
            local_key_id: true,
            mac: true,
        }
    }
}

/// A PKCS#12 file holding `key` (PKCS#8 DER), its `certificate` and the CA `chain`, protected
/// as `openssl pkcs12 -export` does by default: PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC) for
/// the key and for the certificates, an HMAC-SHA-256 MAC over everything.
pub fn write(
    key: &[u8],
    certificate: &[u8],
    chain: &[Vec<u8>],
    password: &str,
    options: &WriteOptions,
) -> der::Result<Vec<u8>> {
    let password = Password::new(password);
    let id = options
        .local_key_id
        .then(|| sha1::Sha1::digest(certificate).to_vec());
    let mut cert_bags = Vec::new();
    for (n, der) in std::iter::once(certificate)
        .chain(chain.iter().map(Vec::as_slice))
        .enumerate()
    {
        let value = CertBag {
            cert_id: pkcs12::PKCS_12_X509_CERT_OID,
            cert_value: OctetStringRef::new(der)?,
        }
        .to_der()?;
        let holder_id = if n == 0 { id.as_deref() } else { None };
        cert_bags.push(encode_bag(pkcs12::PKCS_12_CERT_BAG_OID, &value, holder_id)?);
    }
    let certs_plain = Zeroizing::new(cert_bags.concat());
    let certs_safe = encode_sequence(&certs_plain)?;
    let (alg, encrypted) = encrypt_pbes2(
        &password,
        &certs_safe,
        options.iterations,
        Hash::Sha256,
        Pbes2Cipher::Aes256,
    )?;
    let encrypted_certs = ContentInfo {
        content_type: ID_ENCRYPTED_DATA,
        content: der::Any::encode_from(&EncryptedData {
            version: cms::content_info::CmsVersion::V0,
            enc_content_info: EncryptedContentInfo {
                content_type: ID_DATA,
                content_enc_alg: alg,
                encrypted_content: Some(OctetString::new(encrypted)?),
            },
            unprotected_attrs: None,
        })?,
    };
    let (alg, encrypted) = encrypt_pbes2(
        &password,
        key,
        options.iterations,
        Hash::Sha256,
        Pbes2Cipher::Aes256,
    )?;
    let shrouded = EncryptedPrivateKeyInfo {
        encryption_algorithm: alg,
        encrypted_data: OctetStringRef::new(&encrypted)?,
    }
    .to_der()?;
    let key_bag = encode_bag(pkcs12::PKCS_12_PKCS8_KEY_BAG_OID, &shrouded, id.as_deref())?;
    let key_safe = encode_sequence(&key_bag)?;
    let key_content = ContentInfo {
        content_type: ID_DATA,
        content: der::Any::encode_from(&OctetString::new(key_safe)?)?,
    };
    let auth_safe = vec![encrypted_certs, key_content].to_der()?;
    let mac_data = if options.mac {
        Some(mac_data(
            Hash::Sha256,
            &password.bmp,
            &auth_safe,
            options.iterations,
        )?)
    } else {
        None
    };
    Pfx {
        version: 3,
        auth_safe: ContentInfo {
            content_type: ID_DATA,
            content: der::Any::encode_from(&OctetString::new(auth_safe)?)?,
        },
        mac_data,
    }
    .to_der()
}

/// A SEQUENCE around already encoded elements.
fn encode_sequence(content: &[u8]) -> der::Result<Vec<u8>> {
    let header = Header::new(Tag::Sequence, content.len())?;
    let mut out = header.to_der()?;
    out.extend_from_slice(content);
    Ok(out)
}

/// A SafeBag of type `bag_id` around the encoded `value`, with a localKeyID when given.
fn encode_bag(bag_id: ObjectIdentifier, value: &[u8], id: Option<&[u8]>) -> der::Result<Vec<u8>> {
    let bag_attributes = match id {
        Some(id) => {
            let mut values = SetOfVec::new();
            values.insert(der::Any::encode_from(&OctetStringRef::new(id)?)?)?;
            let mut attrs = SetOfVec::new();
            attrs.insert(Attribute {
                oid: LOCAL_KEY_ID,
                values,
            })?;
            Some(attrs)
        }
        None => None,
    };
    SafeBag {
        bag_id,
        bag_value: AnyRef::from_der(value)?,
        bag_attributes,
    }
    .to_der()
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut v);
    v
}

/// PBES2 encryption of `plain`: its AlgorithmIdentifier and the ciphertext.
fn encrypt_pbes2(
    password: &Password,
    plain: &[u8],
    iterations: u32,
    prf: Hash,
    cipher: Pbes2Cipher,
) -> der::Result<(AlgorithmIdentifierOwned, Vec<u8>)> {
    let (key_len, iv_len) = cipher.sizes();
    let salt = random(16);
    let iv = random(iv_len);
    let mut key = Zeroizing::new(vec![0u8; key_len]);
    prf.pbkdf2(&password.utf8, &salt, iterations, &mut key);
    let encrypted = match cipher {
        Pbes2Cipher::Aes128 => cbc_encrypt::<aes::Aes128>(&key, &iv, plain),
        Pbes2Cipher::Aes192 => cbc_encrypt::<aes::Aes192>(&key, &iv, plain),
        Pbes2Cipher::Aes256 => cbc_encrypt::<aes::Aes256>(&key, &iv, plain),
        Pbes2Cipher::TdesEde3 => cbc_encrypt::<des::TdesEde3>(&key, &iv, plain),
    }
    .ok_or_else(|| der::Error::from(der::ErrorKind::Failed))?;
    let prf_alg = AlgorithmIdentifierOwned {
        oid: prf.hmac_oid(),
        parameters: Some(der::asn1::Null.into()),
    };
    let kdf = Pbkdf2Params {
        salt: OctetString::new(salt)?,
        iteration_count: u64::from(iterations),
        key_length: None,
        prf: Some(prf_alg),
    };
    let params = Pbes2Params {
        kdf: AlgorithmIdentifierOwned {
            oid: PBKDF2,
            parameters: Some(der::Any::encode_from(&kdf)?),
        },
        encryption: AlgorithmIdentifierOwned {
            oid: cipher.oid(),
            parameters: Some(der::Any::encode_from(&OctetString::new(iv)?)?),
        },
    };
    Ok((
        AlgorithmIdentifierOwned {
            oid: PBES2,
            parameters: Some(der::Any::encode_from(&params)?),
        },
        encrypted,
    ))
}

fn cbc_encrypt<C>(key: &[u8], iv: &[u8], plain: &[u8]) -> Option<Vec<u8>>
where
    C: BlockEncryptMut + BlockCipher + KeyInit,
{
    let enc = cbc::Encryptor::<C>::new_from_slices(key, iv).ok()?;
    let block = C::block_size();
    let mut buf = Zeroizing::new(vec![0u8; plain.len() + block]);
    buf.get_mut(..plain.len())?.copy_from_slice(plain);
    let n = enc
        .encrypt_padded_mut::<Pkcs7>(&mut buf, plain.len())
        .ok()?
        .len();
    buf.get(..n).map(<[u8]>::to_vec)
}

/// The MacData over `auth_safe` with a fresh salt.
fn mac_data(
    hash: Hash,
    bmp_password: &[u8],
    auth_safe: &[u8],
    iterations: u32,
) -> der::Result<MacData> {
    let salt = random(16);
    let key = hash.pkcs12_kdf(
        bmp_password,
        &salt,
        3,
        u64::from(iterations),
        hash.output_len(),
    );
    Ok(MacData {
        mac: DigestInfo {
            algorithm: AlgorithmIdentifierOwned {
                oid: hash.digest_oid(),
                parameters: Some(der::asn1::Null.into()),
            },
            digest: OctetString::new(hash.hmac(&key, auth_safe))?,
        },
        mac_salt: OctetString::new(salt)?,
        iterations: u64::from(iterations),
    })
}

#[cfg(test)]
mod tests {
    //! Hostile files built from the parts above (openssl-made files: tests/p12_inputs.rs).
    use super::*;
    use std::str::FromStr;
    use std::time::{Duration, Instant};

    const PW: &str = "envelope-2468";

    /// A P-256 key (PKCS#8) and a self-signed certificate for it.
    fn holder(cn: &str) -> (Zeroizing<Vec<u8>>, Vec<u8>) {
        use p256::pkcs8::EncodePrivateKey;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let spki = spki::SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap();
        let name = x509_cert::name::Name::from_str(&format!("CN={cn}")).unwrap();
        let validity = x509_cert::time::Validity::from_now(Duration::from_secs(3600)).unwrap();
        let serial = x509_cert::serial_number::SerialNumber::from(1u32);
        let cert = CertificateBuilder::new(Profile::Root, serial, validity, name, spki, &key)
            .unwrap()
            .build::<p256::ecdsa::DerSignature>()
            .unwrap()
            .to_der()
            .unwrap();
        let pkcs8 = Zeroizing::new(key.to_pkcs8_der().unwrap().as_bytes().to_vec());
        (pkcs8, cert)
    }

    fn open(bytes: Vec<u8>) -> Result<P12File, P12Error> {
        P12File::from_bytes("test.p12", bytes)
    }

    fn problem<T>(r: Result<T, P12Error>) -> Problem {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.problem().clone(),
        }
    }

    /// A PFX around `safes` (plain data contents), with a MAC over them when `mac`.
    fn pfx(safes: Vec<ContentInfo>, mac: Option<MacData>) -> Vec<u8> {
        let auth_safe = safes.to_der().unwrap();
        Pfx {
            version: 3,
            auth_safe: data(auth_safe),
            mac_data: mac,
        }
        .to_der()
        .unwrap()
    }

    fn data(bytes: Vec<u8>) -> ContentInfo {
        ContentInfo {
            content_type: ID_DATA,
            content: der::Any::encode_from(&OctetString::new(bytes).unwrap()).unwrap(),
        }
    }

    /// A plain SafeContents of the given encoded bags.
    fn safe(bags: &[Vec<u8>]) -> ContentInfo {
        data(encode_sequence(&bags.concat()).unwrap())
    }

    fn cert_bag(cert: &[u8]) -> Vec<u8> {
        let value = CertBag {
            cert_id: pkcs12::PKCS_12_X509_CERT_OID,
            cert_value: OctetStringRef::new(cert).unwrap(),
        }
        .to_der()
        .unwrap();
        encode_bag(pkcs12::PKCS_12_CERT_BAG_OID, &value, None).unwrap()
    }

    fn key_bag(pkcs8: &[u8]) -> Vec<u8> {
        encode_bag(pkcs12::PKCS_12_KEY_BAG_OID, pkcs8, None).unwrap()
    }

    /// A shrouded key bag claiming `iterations` of PBKDF2 (ciphertext never decrypted).
    fn claimed_shrouded_bag(iterations: u64) -> Vec<u8> {
        let kdf = Pbkdf2Params {
            salt: OctetString::new(vec![1; 8]).unwrap(),
            iteration_count: iterations,
            key_length: None,
            prf: None,
        };
        let params = Pbes2Params {
            kdf: AlgorithmIdentifierOwned {
                oid: PBKDF2,
                parameters: Some(der::Any::encode_from(&kdf).unwrap()),
            },
            encryption: AlgorithmIdentifierOwned {
                oid: AES256_CBC,
                parameters: Some(
                    der::Any::encode_from(&OctetString::new(vec![0; 16]).unwrap()).unwrap(),
                ),
            },
        };
        let info = EncryptedPrivateKeyInfo {
            encryption_algorithm: AlgorithmIdentifierOwned {
                oid: PBES2,
                parameters: Some(der::Any::encode_from(&params).unwrap()),
            },
            encrypted_data: OctetStringRef::new(&[0u8; 32]).unwrap(),
        }
        .to_der()
        .unwrap();
        encode_bag(pkcs12::PKCS_12_PKCS8_KEY_BAG_OID, &info, None).unwrap()
    }

    #[test]
    fn written_files_read_back() {
        let (key, cert) = holder("Holder");
        let bytes = write(&key, &cert, &[], PW, &WriteOptions::default()).unwrap();
        let p12 = open(bytes).unwrap().decrypt(PW).unwrap();
        assert_eq!(p12.key, key);
        assert_eq!(p12.certificate, cert);
        assert!(p12.chain.is_empty());
    }

    #[test]
    fn a_fifty_million_iteration_mac_is_refused_before_any_work() {
        let (key, cert) = holder("Holder");
        let bytes = write(&key, &cert, &[], PW, &WriteOptions::default()).unwrap();
        let mut pfx = Pfx::from_der(&bytes).unwrap();
        if let Some(mac) = pfx.mac_data.as_mut() {
            mac.iterations = 50_000_000;
        }
        let start = Instant::now();
        let e = open(pfx.to_der().unwrap()).err().unwrap();
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(
            *e.problem(),
            Problem::TooManyIterations {
                count: 50_000_000,
                limit: MAX_ITERATIONS,
                of: "its MAC".into()
            }
        );
        assert!(e.to_string().contains("50000000 iterations"), "{e}");
    }

    #[test]
    fn a_fifty_million_iteration_key_is_refused_before_any_work() {
        let bytes = pfx(vec![safe(&[claimed_shrouded_bag(50_000_000)])], None);
        let start = Instant::now();
        assert!(matches!(
            problem(open(bytes)),
            Problem::TooManyIterations {
                count: 50_000_000,
                ..
            }
        ));
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn many_derivations_within_the_limit_each_are_refused_together() {
        let bags: Vec<Vec<u8>> = (0..4).map(|_| claimed_shrouded_bag(9_000_000)).collect();
        let start = Instant::now();
        match problem(open(pfx(vec![safe(&bags)], None))) {
            Problem::TooManyIterations { limit, of, .. } => {
                assert_eq!(limit, MAX_TOTAL_ITERATIONS);
                assert!(of.contains("together"), "{of}");
            }
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn too_many_bags_and_certificates() {
        let (_, cert) = holder("Many");
        let bags: Vec<Vec<u8>> = (0..=MAX_CERTIFICATES).map(|_| cert_bag(&cert)).collect();
        assert_eq!(
            problem(open(pfx(vec![safe(&bags)], None))),
            Problem::TooManyEntries {
                what: "certificates",
                limit: MAX_CERTIFICATES
            }
        );
        let other = encode_bag(pkcs12::PKCS_12_SECRET_BAG_OID, &[0x05, 0x00], None).unwrap();
        let bags = vec![other; MAX_BAGS + 1];
        assert!(matches!(
            problem(open(pfx(vec![safe(&bags)], None))),
            Problem::TooManyEntries {
                limit: MAX_BAGS,
                ..
            }
        ));
        let safes = vec![safe(&[]); MAX_SAFES + 1];
        assert!(matches!(
            problem(open(pfx(safes, None))),
            Problem::TooManyEntries {
                limit: MAX_SAFES,
                ..
            }
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let (key, _) = holder("Nested");
        let mut contents = encode_sequence(&key_bag(&key)).unwrap();
        for _ in 0..MAX_NESTING + 1 {
            let bag = encode_bag(pkcs12::PKCS_12_SAFE_CONTENTS_BAG_OID, &contents, None).unwrap();
            contents = encode_sequence(&bag).unwrap();
        }
        assert!(matches!(
            problem(open(pfx(vec![data(contents)], None))),
            Problem::TooManyEntries {
                limit: MAX_NESTING,
                ..
            }
        ));
    }

    #[test]
    fn unencrypted_key_bag_without_local_key_id_pairs_by_public_key() {
        let (key, cert) = holder("Plain");
        let (_, other) = holder("Someone else");
        // the foreign certificate first: pairing must not take "the first certificate"
        let bytes = pfx(
            vec![safe(&[cert_bag(&other), cert_bag(&cert), key_bag(&key)])],
            None,
        );
        let p12 = open(bytes)
            .unwrap()
            .decrypt("any password: nothing is protected")
            .unwrap();
        assert_eq!(p12.certificate, cert);
        assert_eq!(p12.key, key);
    }

    #[test]
    fn several_keys_the_one_with_a_certificate_wins() {
        let (lonely, _) = holder("No certificate");
        let (key, cert) = holder("Holder");
        let bytes = pfx(
            vec![safe(&[key_bag(&lonely), key_bag(&key), cert_bag(&cert)])],
            None,
        );
        let p12 = open(bytes).unwrap().decrypt(PW).unwrap();
        assert_eq!(p12.key, key);
        let bytes = pfx(vec![safe(&[key_bag(&lonely), cert_bag(&cert)])], None);
        assert_eq!(
            problem(open(bytes).unwrap().decrypt(PW)),
            Problem::NoCertificateForKey { certificates: 1 }
        );
    }

    #[test]
    fn forms_tessera_does_not_read_are_named() {
        let signed = Pfx {
            version: 3,
            auth_safe: ContentInfo {
                content_type: ID_SIGNED_DATA,
                content: der::Any::encode_from(&OctetString::new(vec![1]).unwrap()).unwrap(),
            },
            mac_data: None,
        }
        .to_der()
        .unwrap();
        assert!(matches!(
            problem(open(signed)),
            Problem::UnsupportedFormat { .. }
        ));
        let enveloped = ContentInfo {
            content_type: ID_ENVELOPED_DATA,
            content: der::Any::encode_from(&OctetString::new(vec![1]).unwrap()).unwrap(),
        };
        assert!(matches!(
            problem(open(pfx(vec![enveloped], None))),
            Problem::UnsupportedFormat { .. }
        ));
        let mut v2 = Pfx::from_der(&pfx(vec![], None)).unwrap();
        v2.version = 2;
        assert!(matches!(
            problem(open(v2.to_der().unwrap())),
            Problem::UnsupportedFormat { .. }
        ));
        assert!(matches!(
            problem(open(vec![0x30, 0x80, 0x02, 0x01, 0x03, 0x00, 0x00])),
            Problem::UnsupportedFormat { .. }
        ));
    }

    #[test]
    fn every_pbes2_variant_round_trips_and_a_wrong_password_without_mac_is_wrong_password() {
        let (key, cert) = holder("PBES2");
        for prf in [
            Hash::Sha1,
            Hash::Sha224,
            Hash::Sha256,
            Hash::Sha384,
            Hash::Sha512,
        ] {
            for cipher in [
                Pbes2Cipher::Aes128,
                Pbes2Cipher::Aes192,
                Pbes2Cipher::Aes256,
                Pbes2Cipher::TdesEde3,
            ] {
                let password = Password::new(PW);
                let (alg, encrypted) = encrypt_pbes2(&password, &key, 1000, prf, cipher).unwrap();
                let info = EncryptedPrivateKeyInfo {
                    encryption_algorithm: alg,
                    encrypted_data: OctetStringRef::new(&encrypted).unwrap(),
                }
                .to_der()
                .unwrap();
                let shrouded = encode_bag(pkcs12::PKCS_12_PKCS8_KEY_BAG_OID, &info, None).unwrap();
                let file = open(pfx(vec![safe(&[shrouded, cert_bag(&cert)])], None)).unwrap();
                let p12 = file.decrypt(PW).unwrap();
                assert_eq!(p12.key, key, "{prf:?} {cipher:?}");
                assert_eq!(
                    problem(file.decrypt("wrong")),
                    Problem::WrongPassword,
                    "{prf:?} {cipher:?}"
                );
            }
        }
    }

    #[test]
    fn empty_password_both_encodings() {
        let (key, cert) = holder("Empty");
        let bytes = write(&key, &cert, &[], "", &WriteOptions::default()).unwrap();
        assert_eq!(open(bytes.clone()).unwrap().decrypt("").unwrap().key, key);
        // a MAC over the password as no bytes at all (older writers)
        let mut pfx = Pfx::from_der(&bytes).unwrap();
        let data: OctetStringRef<'_> = pfx.auth_safe.content.decode_as().unwrap();
        let mac = mac_data(Hash::Sha1, &[], data.as_bytes(), 2048).unwrap();
        pfx.mac_data = Some(mac);
        assert_eq!(
            open(pfx.to_der().unwrap())
                .unwrap()
                .decrypt("")
                .unwrap()
                .key,
            key
        );
    }

    #[test]
    fn a_chain_is_at_most_max_depth_long() {
        // a long chain of distinct CAs, each "issued" by the next (names only; signatures are
        // not the reader's business)
        let (key, leaf) = holder("Leaf");
        let leaf_entry = |der: Vec<u8>, subject: &str, issuer: &str| {
            let mut cert = Certificate::from_der(&der).unwrap();
            cert.tbs_certificate.subject = x509_cert::name::Name::from_str(subject).unwrap();
            cert.tbs_certificate.issuer = x509_cert::name::Name::from_str(issuer).unwrap();
            let der = cert.to_der().unwrap();
            CertEntry {
                der,
                cert,
                local_key_id: None,
            }
        };
        let mut certs = vec![leaf_entry(leaf.clone(), "CN=Leaf", "CN=CA 0")];
        for n in 0..20 {
            certs.push(leaf_entry(
                leaf.clone(),
                &format!("CN=CA {n}"),
                &format!("CN=CA {}", n + 1),
            ));
        }
        let chain = chain_above(&certs, 0);
        assert_eq!(chain.len(), MAX_CHAIN_DEPTH);
        // every certificate names itself as issuer's issuer: a 2-cycle and a self-loop
        let certs = vec![
            leaf_entry(leaf.clone(), "CN=Leaf", "CN=A"),
            leaf_entry(leaf.clone(), "CN=A", "CN=B"),
            leaf_entry(leaf.clone(), "CN=B", "CN=A"),
            leaf_entry(leaf.clone(), "CN=A", "CN=B"),
        ];
        let start = Instant::now();
        assert_eq!(chain_above(&certs, 0).len(), 3);
        assert!(start.elapsed() < Duration::from_millis(100));
        let _ = key;
    }

    #[test]
    fn kdf_matches_openssl_for_a_known_vector() {
        // `openssl kdf -keylen 24 -kdfopt digest:SHA1 -kdfopt hexpass:0073006d006500670000
        // -kdfopt hexsalt:0a58cf64530d823f -kdfopt id:1 -kdfopt iter:1 PKCS12KDF` ("smeg" as a
        // BMPString with its terminator), and the same with SHA-256, id 3, 1000 iterations
        let password = Password::new("smeg");
        assert_eq!(password.bmp.as_slice(), b"\0s\0m\0e\0g\0\0");
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let key = Hash::Sha1.pkcs12_kdf(&password.bmp, &salt, 1, 1, 24);
        assert_eq!(
            hex::encode(key.as_slice()),
            "8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3"
        );
        let key = Hash::Sha256.pkcs12_kdf(&password.bmp, &salt, 3, 1000, 32);
        assert_eq!(
            hex::encode(key.as_slice()),
            "35ac16a454d608fb10c8d7c6338ca85818587aed0ff771fd265957e412c2c03c"
        );
    }
}
