//! The virtual card's secrets at rest: how PIN and PUK are kept (salted scrypt hashes that also
//! unwrap the card's storage key), how private keys and PIN-protected objects are sealed to the
//! storage key's public half (P-256 ECDH with an ephemeral key, HKDF-SHA256, AES-256-GCM) so
//! that the management key alone can store them, and how what the card must use without any PIN
//! (the management key, keys with PIN policy "never", the attestation key) is sealed under the
//! file's own key. It knows bytes and keys, not PIV commands or files; every primitive comes
//! from a RustCrypto crate.
//!
//! ```text
//!   PIN ──scrypt(salt, cost)──► m ──HKDF──► verifier (stored: the PIN's slow hash)
//!                                    └────► wrap key ──AES-GCM──► storage private key
//!   PUK ──scrypt(salt', cost)─► m' ─HKDF──► verifier'
//!                                    └────► wrap key' ─AES-GCM──► storage private key (again)
//!   storage public key ──ECDH(ephemeral)+HKDF──► AES-GCM ──► PIN-protected private keys,
//!                                                            Printed Information
//!   file key (in the file) ──AES-GCM──► management key, keys usable without a PIN
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Why a sealed secret could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The PIN or PUK presented is not the one the credential was made from.
    #[error("wrong PIN or PUK")]
    WrongSecret,
    /// The stored data does not decrypt or parse: the file was damaged or tampered with, or it
    /// was sealed to another storage key.
    #[error("sealed data does not open")]
    Damaged,
    /// Opening needs the storage key, which only a verified PIN (or the PUK) unlocks.
    #[error("the storage key is locked")]
    Locked,
}

/// Additional data naming what a ciphertext is, so no sealed value can stand in for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The storage private key, wrapped under a PIN- or PUK-derived key.
    StorageKey,
    /// A private key in a key slot (PKCS#8 DER).
    PrivateKey,
    /// The card management key.
    ManagementKey,
    /// A data object only readable after PIN verification.
    Object,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Self::StorageKey => b"tessera vcard v2: storage key",
            Self::PrivateKey => b"tessera vcard v2: private key",
            Self::ManagementKey => b"tessera vcard v2: management key",
            Self::Object => b"tessera vcard v2: protected object",
        }
    }
}

/// scrypt parameters of a PIN or PUK hash. Stored with each hash, so the cost of new files can
/// change without breaking old ones (and tests can make cards that verify in microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfCost {
    /// log2 of scrypt's N (memory and time: 128 · r · 2^log_n bytes).
    pub log_n: u8,
    /// scrypt's block size r.
    pub r: u32,
    /// scrypt's parallelism p.
    pub p: u32,
}

impl KdfCost {
    /// The cost of new cards: 16 MiB and a few tens of milliseconds per VERIFY in a release
    /// build (see the README's "secrets at rest" for the measurement).
    pub const DEFAULT: Self = Self {
        log_n: 14,
        r: 8,
        p: 1,
    };

    /// A cost for tests only: microseconds per VERIFY, no protection.
    pub const TEST: Self = Self {
        log_n: 4,
        r: 8,
        p: 1,
    };

    fn params(self) -> Result<scrypt::Params, SealError> {
        // Refuse absurd costs from a damaged file before allocating for them (at most 1 GiB).
        if self.log_n > 20 || self.r == 0 || self.r > 32 || self.p == 0 || self.p > 16 {
            return Err(SealError::Damaged);
        }
        scrypt::Params::new(self.log_n, self.r, self.p, 32).map_err(|_| SealError::Damaged)
    }
}

impl Default for KdfCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Bytes that serialise as upper-case hex.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An AES-256-GCM ciphertext with its nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boxed {
    /// 96-bit random nonce.
    #[serde(with = "hex_bytes")]
    nonce: Vec<u8>,
    /// Ciphertext followed by the 128-bit tag.
    #[serde(with = "hex_bytes")]
    ciphertext: Vec<u8>,
}

impl Boxed {
    fn seal(key: &[u8], purpose: Purpose, plaintext: &[u8]) -> Result<Self, SealError> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Damaged)?;
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.aad(),
                },
            )
            .map_err(|_| SealError::Damaged)?;
        Ok(Self {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    fn open(&self, key: &[u8], purpose: Purpose) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Damaged)?;
        if self.nonce.len() != 12 {
            return Err(SealError::Damaged);
        }
        cipher
            .decrypt(
                Nonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: purpose.aad(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Damaged)
    }
}

/// The key that seals what the card uses without a PIN. It lives in the card file itself, so
/// it hides those secrets from a glance or a search of the file, not from whoever can read it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileKey(#[serde(with = "hex_bytes")] Vec<u8>);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl Drop for FileKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl FileKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self(key)
    }
}

/// The storage key pair's private half, unwrapped by a verified PIN (or the PUK) for one
/// applet session. Zeroized on drop.
#[derive(Clone)]
pub struct StorageSecret(p256::SecretKey);

impl std::fmt::Debug for StorageSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageSecret(..)")
    }
}

impl StorageSecret {
    /// A new random storage key pair.
    pub fn generate() -> Self {
        Self(p256::SecretKey::random(&mut OsRng))
    }

    /// The public half, as stored in the card file.
    pub fn public(&self) -> StoragePublic {
        StoragePublic(
            self.0
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        )
    }
}

/// The storage key pair's public half (an uncompressed P-256 point): anyone, the management
/// key holder included, can seal a key to it; only the PIN or the PUK opens what it sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoragePublic(#[serde(with = "hex_bytes")] Vec<u8>);

impl StoragePublic {
    fn key(&self) -> Result<p256::PublicKey, SealError> {
        p256::PublicKey::from_sec1_bytes(&self.0).map_err(|_| SealError::Damaged)
    }
}

/// HKDF-SHA256 of an ECDH secret, bound to both public keys: the AES-256 key of one seal.
fn seal_key(
    shared: &p256::ecdh::SharedSecret,
    ephemeral: &[u8],
    recipient: &[u8],
) -> Result<Zeroizing<[u8; 32]>, SealError> {
    let mut salt = Vec::with_capacity(ephemeral.len() + recipient.len());
    salt.extend_from_slice(ephemeral);
    salt.extend_from_slice(recipient);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared.raw_secret_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(b"tessera vcard v2: seal", key.as_mut())
        .map_err(|_| SealError::Damaged)?;
    Ok(key)
}

/// A secret at rest: sealed to the storage key (PIN or PUK needed) or under the file key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sealed", rename_all = "kebab-case")]
pub enum Sealed {
    /// Encrypted to the storage public key: opens only with the storage secret.
    Storage {
        /// The sender's ephemeral P-256 public key (uncompressed point).
        #[serde(with = "hex_bytes")]
        ephemeral: Vec<u8>,
        /// The AES-256-GCM ciphertext.
        #[serde(flatten)]
        body: Boxed,
    },
    /// Encrypted under the file key: opens without any PIN.
    File {
        /// The AES-256-GCM ciphertext.
        #[serde(flatten)]
        body: Boxed,
    },
}

impl Sealed {
    /// Seals `plaintext` to the storage public key.
    pub fn to_storage(
        public: &StoragePublic,
        purpose: Purpose,
        plaintext: &[u8],
    ) -> Result<Self, SealError> {
        let recipient = public.key()?;
        let ephemeral = p256::ecdh::EphemeralSecret::random(&mut OsRng);
        let ephemeral_point = ephemeral.public_key().to_encoded_point(false);
        let shared = ephemeral.diffie_hellman(&recipient);
        let key = seal_key(&shared, ephemeral_point.as_bytes(), &public.0)?;
        Ok(Self::Storage {
            ephemeral: ephemeral_point.as_bytes().to_vec(),
            body: Boxed::seal(key.as_ref(), purpose, plaintext)?,
        })
    }

    /// Seals `plaintext` under the file key.
    pub fn to_file(key: &FileKey, purpose: Purpose, plaintext: &[u8]) -> Result<Self, SealError> {
        Ok(Self::File {
            body: Boxed::seal(&key.0, purpose, plaintext)?,
        })
    }

    /// Whether opening needs the storage secret.
    pub fn needs_storage_key(&self) -> bool {
        matches!(self, Self::Storage { .. })
    }

    /// Opens the seal: a storage seal with `storage` (else [`SealError::Locked`]), a file seal
    /// with `file`.
    pub fn open(
        &self,
        file: &FileKey,
        storage: Option<&StorageSecret>,
        purpose: Purpose,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        match self {
            Self::File { body } => body.open(&file.0, purpose),
            Self::Storage { ephemeral, body } => {
                let secret = storage.ok_or(SealError::Locked)?;
                let sender =
                    p256::PublicKey::from_sec1_bytes(ephemeral).map_err(|_| SealError::Damaged)?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.0.to_nonzero_scalar(), sender.as_affine());
                let key = seal_key(&shared, ephemeral, &secret.public().0)?;
                body.open(key.as_ref(), purpose)
            }
        }
    }
}

/// A PIN or PUK at rest: its salted slow hash (the verifier) and the storage secret wrapped
/// under a key derived from it by the same computation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// scrypt parameters this credential was made with.
    kdf: KdfCost,
    /// Random per credential, new on every change.
    #[serde(with = "hex_bytes")]
    salt: Vec<u8>,
    /// HKDF("verifier") of scrypt(value): compared to check the value.
    #[serde(with = "hex_bytes")]
    verifier: Vec<u8>,
    /// The storage secret (P-256 scalar) under HKDF("wrap") of scrypt(value).
    storage_key: Boxed,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

/// The verifier and wrap key derived from a PIN or PUK value.
struct Derived {
    verifier: Zeroizing<[u8; 32]>,
    wrap: Zeroizing<[u8; 32]>,
}

fn derive(value: &[u8], salt: &[u8], cost: KdfCost) -> Result<Derived, SealError> {
    let mut master = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(value, salt, &cost.params()?, master.as_mut())
        .map_err(|_| SealError::Damaged)?;
    let hk = Hkdf::<Sha256>::from_prk(master.as_ref()).map_err(|_| SealError::Damaged)?;
    let mut verifier = Zeroizing::new([0u8; 32]);
    let mut wrap = Zeroizing::new([0u8; 32]);
    hk.expand(b"tessera vcard v2: verifier", verifier.as_mut())
        .map_err(|_| SealError::Damaged)?;
    hk.expand(b"tessera vcard v2: wrap", wrap.as_mut())
        .map_err(|_| SealError::Damaged)?;
    Ok(Derived { verifier, wrap })
}

impl Credential {
    /// Hashes `value` (the 8 bytes the card compares, 0xFF-padded) with a fresh salt at `cost`,
    /// wrapping `storage` under it.
    pub fn new(value: &[u8], storage: &StorageSecret, cost: KdfCost) -> Result<Self, SealError> {
        let mut salt = vec![0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let d = derive(value, &salt, cost)?;
        let scalar = Zeroizing::new(storage.0.to_bytes());
        Ok(Self {
            kdf: cost,
            salt,
            verifier: d.verifier.to_vec(),
            storage_key: Boxed::seal(d.wrap.as_ref(), Purpose::StorageKey, &scalar)?,
        })
    }

    /// Checks `value` and, when it is right, unwraps the storage secret (which must belong to
    /// `public`).
    pub fn open(&self, value: &[u8], public: &StoragePublic) -> Result<StorageSecret, SealError> {
        let d = derive(value, &self.salt, self.kdf)?;
        if !super::crypto::ct_eq(d.verifier.as_ref(), &self.verifier) {
            return Err(SealError::WrongSecret);
        }
        let scalar = self
            .storage_key
            .open(d.wrap.as_ref(), Purpose::StorageKey)?;
        let secret = p256::SecretKey::from_slice(&scalar).map_err(|_| SealError::Damaged)?;
        let secret = StorageSecret(secret);
        if secret.public() != *public {
            return Err(SealError::Damaged);
        }
        Ok(secret)
    }

    /// The cost this credential was made with.
    pub fn cost(&self) -> KdfCost {
        self.kdf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_checks_the_value_and_unwraps_the_storage_key() {
        let storage = StorageSecret::generate();
        let public = storage.public();
        let c = Credential::new(b"123456\xFF\xFF", &storage, KdfCost::TEST).unwrap();
        let opened = c.open(b"123456\xFF\xFF", &public).unwrap();
        assert_eq!(opened.public(), public);
        assert_eq!(
            c.open(b"123457\xFF\xFF", &public).unwrap_err(),
            SealError::WrongSecret
        );
        let other = StorageSecret::generate().public();
        assert_eq!(
            c.open(b"123456\xFF\xFF", &other).unwrap_err(),
            SealError::Damaged
        );
        // Two credentials from one value differ (fresh salt).
        let c2 = Credential::new(b"123456\xFF\xFF", &storage, KdfCost::TEST).unwrap();
        assert_ne!(c.salt, c2.salt);
        assert_ne!(c.verifier, c2.verifier);
    }

    #[test]
    fn storage_seal_needs_the_storage_secret_and_the_right_purpose() {
        let storage = StorageSecret::generate();
        let file = FileKey::generate();
        let sealed = Sealed::to_storage(&storage.public(), Purpose::PrivateKey, b"scalar").unwrap();
        assert!(sealed.needs_storage_key());
        assert_eq!(
            sealed.open(&file, None, Purpose::PrivateKey).unwrap_err(),
            SealError::Locked
        );
        let opened = sealed
            .open(&file, Some(&storage), Purpose::PrivateKey)
            .unwrap();
        assert_eq!(&opened[..], b"scalar");
        assert_eq!(
            sealed
                .open(&file, Some(&storage), Purpose::Object)
                .unwrap_err(),
            SealError::Damaged
        );
        let stranger = StorageSecret::generate();
        assert_eq!(
            sealed
                .open(&file, Some(&stranger), Purpose::PrivateKey)
                .unwrap_err(),
            SealError::Damaged
        );
    }

    #[test]
    fn file_seal_opens_with_the_file_key_only() {
        let file = FileKey::generate();
        let sealed = Sealed::to_file(&file, Purpose::ManagementKey, b"mgmt").unwrap();
        assert!(!sealed.needs_storage_key());
        assert_eq!(
            &sealed.open(&file, None, Purpose::ManagementKey).unwrap()[..],
            b"mgmt"
        );
        assert!(sealed
            .open(&FileKey::generate(), None, Purpose::ManagementKey)
            .is_err());
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(json.contains("\"sealed\":\"file\""), "{json}");
        assert_eq!(serde_json::from_str::<Sealed>(&json).unwrap(), sealed);
    }

    /// What one VERIFY costs at the default cost (run by hand: `cargo test --release --lib
    /// verify_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn verify_cost() {
        let storage = StorageSecret::generate();
        let public = storage.public();
        let c = Credential::new(b"123456\xFF\xFF", &storage, KdfCost::DEFAULT).unwrap();
        let runs = 20;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            c.open(b"123456\xFF\xFF", &public).unwrap();
        }
        eprintln!(
            "one VERIFY at {:?}: {:.1} ms",
            KdfCost::DEFAULT,
            start.elapsed().as_secs_f64() * 1000.0 / f64::from(runs)
        );
    }

    #[test]
    fn absurd_costs_are_refused_before_allocating() {
        let storage = StorageSecret::generate();
        let cost = KdfCost {
            log_n: 40,
            r: 8,
            p: 1,
        };
        assert!(Credential::new(b"x", &storage, cost).is_err());
    }
}
