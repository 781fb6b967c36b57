//! Persistent state of the virtual PIV card: everything that survives power-off (serial, the
//! behaviour profile, PIN and PUK with their counters, management key, data objects, private
//! keys with their policies) and the factory image of each profile. It is data in the form the
//! card file keeps it (format 2): PIN and PUK as salted slow hashes, private keys and
//! PIN-protected objects sealed (see `seal.rs` for what wraps what), public data as hex. Files
//! of format 1 (secrets in plain hex) are read and migrated here. The applet in `piv.rs`
//! decides what the data means, and `store.rs` owns the file.

use super::crypto::{self, KeyAlgorithm, MgmtAlgorithm, PrivateKey, PublicKey};
use super::profile::{Extension, Profile};
use super::seal::{
    Credential, FileKey, KdfCost, Purpose, SealError, Sealed, StoragePublic, StorageSecret,
};
use crate::card::tlv;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Factory PIN.
pub const DEFAULT_PIN: &[u8] = b"123456";
/// Factory PUK.
pub const DEFAULT_PUK: &[u8] = b"12345678";
/// Factory management key (triple DES).
pub const DEFAULT_MGMT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
/// Factory number of PIN and PUK tries.
pub const DEFAULT_TRIES: u8 = 3;
/// The card file format this Tessera writes: 2 keeps secrets sealed; 1 (files without a
/// `format` field) kept them in plain hex and is migrated on reading.
pub const FORMAT: u32 = 2;

/// Slot of the attestation key.
pub const SLOT_ATTESTATION: u8 = 0xF9;
/// Data object holding the attestation certificate (Yubico).
pub const TAG_ATTESTATION_CERT: u32 = 0x5FFF01;
/// Card Capability Container.
pub const TAG_CCC: u32 = 0x5FC107;
/// Card Holder Unique Identifier.
pub const TAG_CHUID: u32 = 0x5FC102;
/// Discovery object.
pub const TAG_DISCOVERY: u32 = 0x7E;
/// Printed Information: readable only after PIN verification, so it is kept sealed to the
/// storage key (YubiKey tools keep the PIN-protected management key in it).
pub const TAG_PRINTED: u32 = 0x5FC109;

/// Secret bytes (PIN, PUK, management key, PKCS#8 private key): zeroized on drop, redacted in
/// `Debug`, hex in files of format 1.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Secret {
    fn from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(hex::encode_upper(self.as_bytes()));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        hex::decode(text.as_bytes())
            .map(Self::new)
            .map_err(serde::de::Error::custom)
    }
}

/// A PIN or PUK value padded with 0xFF to the 8 bytes the card compares.
pub fn padded(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(value.to_vec());
    out.resize(8, 0xFF);
    out
}

/// A PIN or PUK with its retry counter. The value itself is not kept: only its salted slow hash,
/// which also unwraps the card's storage key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reference {
    /// The value's hash and the storage key wrapped under it.
    pub credential: Credential,
    /// Whether the value is the factory value (GET METADATA tells it without the PIN).
    pub is_default: bool,
    /// Tries left before the reference blocks.
    pub tries_left: u8,
    /// Tries after a successful verification.
    pub max_tries: u8,
}

impl Reference {
    /// A reference whose value is `value` (unpadded), wrapping `storage`, with factory tries.
    pub fn new(
        value: &[u8],
        factory: &[u8],
        storage: &StorageSecret,
        cost: KdfCost,
    ) -> Result<Self, SealError> {
        Ok(Self {
            credential: Credential::new(&padded(value), storage, cost)?,
            is_default: crypto::ct_eq(value, factory),
            tries_left: DEFAULT_TRIES,
            max_tries: DEFAULT_TRIES,
        })
    }

    /// True when no tries are left.
    pub fn blocked(&self) -> bool {
        self.tries_left == 0
    }

    /// Sets a new value (unpadded), keeping the counters.
    pub fn set_value(
        &mut self,
        value: &[u8],
        factory: &[u8],
        storage: &StorageSecret,
        cost: KdfCost,
    ) -> Result<(), SealError> {
        self.credential = Credential::new(&padded(value), storage, cost)?;
        self.is_default = crypto::ct_eq(value, factory);
        Ok(())
    }
}

/// PIN policy of a key (Yubico values 1–3; 0 "default" is resolved per slot before storing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinPolicy {
    /// Usable without the PIN.
    Never,
    /// Usable once the PIN was verified in this session.
    Once,
    /// The PIN must be verified again before each use.
    Always,
}

impl PinPolicy {
    /// The Yubico policy byte.
    pub const fn id(self) -> u8 {
        match self {
            Self::Never => 1,
            Self::Once => 2,
            Self::Always => 3,
        }
    }

    /// The policy for a non-default policy byte.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Never),
            2 => Some(Self::Once),
            3 => Some(Self::Always),
            _ => None,
        }
    }
}

/// Touch policy of a key or of the management key. Stored and reported; the virtual card has
/// no button, so every touch is taken as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TouchPolicy {
    /// No touch needed.
    Never,
    /// Touch for each use.
    Always,
    /// Touch cached for 15 seconds.
    Cached,
}

impl TouchPolicy {
    /// The Yubico policy byte.
    pub const fn id(self) -> u8 {
        match self {
            Self::Never => 1,
            Self::Always => 2,
            Self::Cached => 3,
        }
    }

    /// The policy for a non-default policy byte.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Never),
            2 => Some(Self::Always),
            3 => Some(Self::Cached),
            _ => None,
        }
    }
}

/// Where a private key came from (attestation is only for generated keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrigin {
    /// Generated on the card.
    Generated,
    /// Imported from outside.
    Imported,
}

impl KeyOrigin {
    /// The Yubico origin byte of GET METADATA.
    pub const fn id(self) -> u8 {
        match self {
            Self::Generated => 1,
            Self::Imported => 2,
        }
    }
}

/// Why a stored key could not be sealed, opened or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key material itself is wrong (or of an algorithm the card lacks).
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The sealed form does not open: locked (no PIN verified) or damaged.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A private key in a key slot: its public half in the clear, its private half sealed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlotKey {
    /// Algorithm (redundant with the key, kept so metadata needs no parsing).
    pub algorithm: KeyAlgorithm,
    /// The public key as an X.509 SubjectPublicKeyInfo (DER, hex): what GET METADATA and
    /// ATTEST tell without the PIN.
    #[serde(with = "hex_vec")]
    pub public_key: Vec<u8>,
    /// The private key (PKCS#8 DER) sealed to the storage key when using it needs the PIN,
    /// under the file key when it does not.
    pub private_key: Sealed,
    /// PIN policy (resolved, never "default").
    pub pin_policy: PinPolicy,
    /// Touch policy (resolved, never "default").
    pub touch_policy: TouchPolicy,
    /// Generated or imported.
    pub origin: KeyOrigin,
}

impl SlotKey {
    /// The public half.
    pub fn public_key(&self) -> Result<PublicKey, crypto::CryptoError> {
        PublicKey::from_spki_der(&self.public_key)
    }

    /// Whether using the private key needs the storage secret (a verified PIN).
    pub fn is_sealed_to_storage(&self) -> bool {
        self.private_key.needs_storage_key()
    }
}

/// Whether the key in `slot` with `policy` is used without a PIN: PIN policy "never", and the
/// attestation key (ATTEST needs no PIN). Those keys are sealed under the file key.
fn usable_without_pin(slot: u8, policy: PinPolicy) -> bool {
    policy == PinPolicy::Never || slot == SLOT_ATTESTATION
}

/// The card management key (reference 9B). The card must use it without any PIN, so it is
/// sealed under the file key: whoever can read the file can recover it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManagementKey {
    /// Block cipher.
    pub algorithm: MgmtAlgorithm,
    /// Key bytes (length fits the algorithm), sealed under the file key.
    pub key: Sealed,
    /// Touch policy (SET MANAGEMENT KEY with P2 FE asks for touch).
    pub touch_policy: TouchPolicy,
}

/// Everything the card keeps across power cycles, as the card file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CardState {
    /// Card file format: always [`FORMAT`] (older files are migrated when read).
    format: u32,
    /// Card serial number (GET SERIAL; the CHUID and CCC are derived from it).
    pub serial: u32,
    /// The card family the applet behaves like (files from before profiles: yubikey-5.7).
    #[serde(default)]
    pub profile: Profile,
    /// scrypt cost given to PIN and PUK hashes made from now on (each hash keeps its own).
    pub kdf: KdfCost,
    /// Public half of the storage key pair: private keys are sealed to it without any PIN;
    /// its private half is wrapped under the PIN and under the PUK.
    pub storage_key: StoragePublic,
    /// Seals what the card uses without a PIN; kept in this file, so it only obfuscates.
    file_key: FileKey,
    /// Application PIN (reference 80).
    pub pin: Reference,
    /// PIN unblocking key (reference 81).
    pub puk: Reference,
    /// Card management key (reference 9B).
    pub management_key: ManagementKey,
    /// Data objects by tag, each stored as the complete object sent by PUT DATA (`53 L …`, or
    /// `7E L …` for the Discovery object). Objects readable only after VERIFY are not here but
    /// in `protected_objects`.
    #[serde(with = "hex_objects", default)]
    pub objects: BTreeMap<u32, Vec<u8>>,
    /// Objects readable only after PIN verification (Printed Information), sealed to the
    /// storage key.
    #[serde(with = "hex_map", default)]
    pub protected_objects: BTreeMap<u32, Sealed>,
    /// Private keys by slot (9A, 9C, 9D, 9E, 82–95, F9).
    #[serde(with = "hex_map", default)]
    pub keys: BTreeMap<u8, SlotKey>,
    /// The card application the card carries (files from before IDPrime: piv). On an IDPrime
    /// card the PIV fields above are an unused factory image.
    #[serde(default)]
    pub kind: super::kind::CardKind,
    /// The IDPrime card's own state, on cards of kind idprime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idprime: Option<super::idprime::IdPrimeState>,
}

impl CardState {
    /// A factory-fresh card with the default profile (yubikey-5.7): see
    /// [`CardState::factory_for`].
    pub fn factory(serial: u32) -> Self {
        Self::factory_for(Profile::default(), serial)
    }

    /// A factory-fresh card of `profile` with the default PIN/PUK hash cost: see
    /// [`CardState::factory_with_cost`].
    pub fn factory_for(profile: Profile, serial: u32) -> Self {
        match Self::factory_with_cost(profile, serial, KdfCost::DEFAULT) {
            Ok(state) => state,
            // Only an invalid cost or a failing system RNG get here; DEFAULT is valid.
            Err(e) => panic!("virtual card: cannot make a factory card: {e}"),
        }
    }

    /// A factory-fresh card of `profile`: default PIN, PUK and management key (PIN and PUK
    /// hashed at `cost`), a new storage key pair and file key, CCC, CHUID and Discovery objects
    /// derived from the serial and, where the profile has ATTEST, an attestation key in F9 with
    /// its self-signed certificate (in object 5FFF01).
    pub fn factory_with_cost(
        profile: Profile,
        serial: u32,
        cost: KdfCost,
    ) -> Result<Self, SealError> {
        let mut state = Self::blank(profile, serial, cost, FileKey::generate())?;
        if profile.has(Extension::Attest) {
            state.install_attestation();
        }
        Ok(state)
    }

    /// The card's answer-to-reset (its profile's).
    pub fn atr(&self) -> Vec<u8> {
        self.profile.atr()
    }

    /// Back to the factory image as PIV RESET does, with a new storage key pair (so nothing
    /// sealed before the reset opens after it), keeping the serial, the hash cost, the file key
    /// and the attestation key and certificate (they identify the card, and regenerating them
    /// would be pointless).
    pub fn reset_to_factory(&mut self) -> Result<(), SealError> {
        let mut fresh = Self::blank(self.profile, self.serial, self.kdf, self.file_key.clone())?;
        match (
            self.keys.remove(&SLOT_ATTESTATION),
            self.objects.remove(&TAG_ATTESTATION_CERT),
        ) {
            (Some(key), Some(cert)) => {
                fresh.keys.insert(SLOT_ATTESTATION, key);
                fresh.objects.insert(TAG_ATTESTATION_CERT, cert);
            }
            _ if self.profile.has(Extension::Attest) => fresh.install_attestation(),
            _ => {}
        }
        *self = fresh;
        Ok(())
    }

    /// The factory image without an attestation key.
    fn blank(
        profile: Profile,
        serial: u32,
        cost: KdfCost,
        file_key: FileKey,
    ) -> Result<Self, SealError> {
        let mut objects = BTreeMap::new();
        objects.insert(TAG_CHUID, chuid(serial));
        objects.insert(TAG_CCC, ccc(serial));
        objects.insert(TAG_DISCOVERY, discovery());
        let storage = StorageSecret::generate();
        let management_key = ManagementKey {
            algorithm: MgmtAlgorithm::TripleDes,
            key: Sealed::to_file(&file_key, Purpose::ManagementKey, &DEFAULT_MGMT_KEY)?,
            touch_policy: TouchPolicy::Never,
        };
        Ok(Self {
            format: FORMAT,
            serial,
            profile,
            kdf: cost,
            storage_key: storage.public(),
            pin: Reference::new(DEFAULT_PIN, DEFAULT_PIN, &storage, cost)?,
            puk: Reference::new(DEFAULT_PUK, DEFAULT_PUK, &storage, cost)?,
            file_key,
            management_key,
            objects,
            protected_objects: BTreeMap::new(),
            keys: BTreeMap::new(),
            kind: super::kind::CardKind::Piv,
            idprime: None,
        })
    }

    /// Generates the attestation key (P-256: fast, and any key type may attest) and its
    /// self-signed certificate. On the (unexpected) failure the card simply has no F9 key.
    fn install_attestation(&mut self) {
        let made = PrivateKey::generate(KeyAlgorithm::EccP256)
            .map_err(KeyError::from)
            .and_then(|key| {
                let cert = crypto::attestation_root_certificate(&key, self.serial)?;
                let slot = self.seal_key(
                    SLOT_ATTESTATION,
                    &key,
                    PinPolicy::Once,
                    TouchPolicy::Never,
                    KeyOrigin::Generated,
                )?;
                Ok((slot, cert))
            });
        match made {
            Ok((slot, cert)) => {
                self.keys.insert(SLOT_ATTESTATION, slot);
                self.objects
                    .insert(TAG_ATTESTATION_CERT, certificate_object(&cert));
            }
            Err(e) => log::error!("virtual card: no attestation key: {e}"),
        }
    }

    /// Reads a card file's JSON: format 2 as it is, format 1 (no `format` field: PIN, PUK,
    /// management key and private keys in plain hex) migrated to format 2 in memory, so that
    /// the first write stores it sealed. Migration needs no PIN: private keys are sealed to a
    /// new storage key straight away.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        match value.get("format").map(serde_json::Value::as_u64) {
            None => {
                let legacy: LegacyCard =
                    serde_json::from_value(value).map_err(|e| e.to_string())?;
                legacy.migrate()
            }
            Some(Some(n)) if n == u64::from(FORMAT) => {
                serde_json::from_value(value).map_err(|e| e.to_string())
            }
            Some(Some(n)) if n > u64::from(FORMAT) => Err(format!(
                "card file format {n} is newer than this Tessera reads (up to {FORMAT})"
            )),
            Some(_) => Err("invalid card file format".into()),
        }
    }

    /// True while the PIN is the factory PIN.
    pub fn pin_is_default(&self) -> bool {
        self.pin.is_default
    }

    /// True while the PUK is the factory PUK.
    pub fn puk_is_default(&self) -> bool {
        self.puk.is_default
    }

    /// Checks the 8 presented bytes against the PIN (no counter is touched); when right,
    /// returns the storage secret it unwraps.
    pub fn open_with_pin(&self, presented: &[u8]) -> Result<StorageSecret, SealError> {
        self.pin.credential.open(presented, &self.storage_key)
    }

    /// Same as [`CardState::open_with_pin`] for the PUK.
    pub fn open_with_puk(&self, presented: &[u8]) -> Result<StorageSecret, SealError> {
        self.puk.credential.open(presented, &self.storage_key)
    }

    /// Whether `storage` is this card's storage secret (a session may hold one from before
    /// another process reset the card).
    pub fn is_storage_secret(&self, storage: &StorageSecret) -> bool {
        storage.public() == self.storage_key
    }

    /// Sets a new PIN (unpadded), wrapping `storage` under it.
    pub fn set_pin(&mut self, value: &[u8], storage: &StorageSecret) -> Result<(), SealError> {
        self.pin.set_value(value, DEFAULT_PIN, storage, self.kdf)
    }

    /// Sets a new PUK (unpadded), wrapping `storage` under it.
    pub fn set_puk(&mut self, value: &[u8], storage: &StorageSecret) -> Result<(), SealError> {
        self.puk.set_value(value, DEFAULT_PUK, storage, self.kdf)
    }

    /// Sets PIN and PUK back to their factory values with `pin_tries` and `puk_tries` tries
    /// (SET PIN RETRIES, which needs the PIN verified: `storage` is what it unwrapped).
    pub fn set_retries_with(
        &mut self,
        storage: &StorageSecret,
        pin_tries: u8,
        puk_tries: u8,
    ) -> Result<(), SealError> {
        let mut pin = Reference::new(DEFAULT_PIN, DEFAULT_PIN, storage, self.kdf)?;
        let mut puk = Reference::new(DEFAULT_PUK, DEFAULT_PUK, storage, self.kdf)?;
        pin.tries_left = pin_tries;
        pin.max_tries = pin_tries;
        puk.tries_left = puk_tries;
        puk.max_tries = puk_tries;
        self.pin = pin;
        self.puk = puk;
        Ok(())
    }

    /// [`CardState::set_retries_with`] for a card still on its factory PIN (how test and demo
    /// cards are made): the factory PIN unwraps the storage key. Returns false, changing
    /// nothing, when the PIN is not the factory PIN.
    pub fn set_retries(&mut self, pin_tries: u8, puk_tries: u8) -> bool {
        match self.open_with_pin(&padded(DEFAULT_PIN)) {
            Ok(storage) => self
                .set_retries_with(&storage, pin_tries, puk_tries)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Seals `key` for `slot`: to the storage key when using it needs the PIN, under the file
    /// key when it does not (PIN policy "never", the attestation key).
    pub fn seal_key(
        &self,
        slot: u8,
        key: &PrivateKey,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
        origin: KeyOrigin,
    ) -> Result<SlotKey, KeyError> {
        let der = key.to_pkcs8()?;
        let private_key = if usable_without_pin(slot, pin_policy) {
            Sealed::to_file(&self.file_key, Purpose::PrivateKey, &der)?
        } else {
            Sealed::to_storage(&self.storage_key, Purpose::PrivateKey, &der)?
        };
        Ok(SlotKey {
            algorithm: key.algorithm()?,
            public_key: key.public_key().to_spki_der()?,
            private_key,
            pin_policy,
            touch_policy,
            origin,
        })
    }

    /// Opens a slot's private key: `storage` (what a verified PIN unwrapped) is needed for a key
    /// sealed to the storage key.
    pub fn open_key(
        &self,
        key: &SlotKey,
        storage: Option<&StorageSecret>,
    ) -> Result<PrivateKey, KeyError> {
        let der = key
            .private_key
            .open(&self.file_key, storage, Purpose::PrivateKey)?;
        Ok(PrivateKey::from_pkcs8(&der)?)
    }

    /// The management key's bytes.
    pub fn management_key(&self) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.management_key
            .key
            .open(&self.file_key, None, Purpose::ManagementKey)
    }

    /// True while the factory key is set.
    pub fn management_key_is_default(&self) -> bool {
        self.management_key.algorithm == MgmtAlgorithm::TripleDes
            && self
                .management_key()
                .is_ok_and(|k| crypto::ct_eq(&k, &DEFAULT_MGMT_KEY))
    }

    /// Sets the management key (its length must fit `algorithm`; the applet checks).
    pub fn set_management_key(
        &mut self,
        algorithm: MgmtAlgorithm,
        key: &[u8],
        touch_policy: TouchPolicy,
    ) -> Result<(), SealError> {
        self.management_key = ManagementKey {
            algorithm,
            key: Sealed::to_file(&self.file_key, Purpose::ManagementKey, key)?,
            touch_policy,
        };
        Ok(())
    }

    /// Whether the object `tag` is readable only after PIN verification (and so kept sealed).
    pub fn is_protected_object(tag: u32) -> bool {
        tag == TAG_PRINTED
    }

    /// The data object `tag` (the complete `53 L …` encoding), opening a protected one with
    /// `storage`.
    pub fn object(
        &self,
        tag: u32,
        storage: Option<&StorageSecret>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SealError> {
        if Self::is_protected_object(tag) {
            return self
                .protected_objects
                .get(&tag)
                .map(|sealed| sealed.open(&self.file_key, storage, Purpose::Object))
                .transpose();
        }
        Ok(self.objects.get(&tag).map(|o| Zeroizing::new(o.clone())))
    }

    /// Stores the data object `tag` (sealed to the storage key when it is a protected one);
    /// returns whether the state changed.
    pub fn put_object(&mut self, tag: u32, object: &[u8]) -> Result<bool, SealError> {
        if Self::is_protected_object(tag) {
            let sealed = Sealed::to_storage(&self.storage_key, Purpose::Object, object)?;
            self.protected_objects.insert(tag, sealed);
            return Ok(true);
        }
        if self.objects.get(&tag).map(Vec::as_slice) == Some(object) {
            return Ok(false);
        }
        self.objects.insert(tag, object.to_vec());
        Ok(true)
    }

    /// Deletes the data object `tag`; returns whether it was there.
    pub fn remove_object(&mut self, tag: u32) -> bool {
        if Self::is_protected_object(tag) {
            self.protected_objects.remove(&tag).is_some()
        } else {
            self.objects.remove(&tag).is_some()
        }
    }
}

/// A PIN or PUK in a format-1 file.
#[derive(Deserialize)]
struct LegacyReference {
    value: Secret,
    tries_left: u8,
    max_tries: u8,
}

impl LegacyReference {
    fn migrate(
        &self,
        factory: &[u8],
        storage: &StorageSecret,
        cost: KdfCost,
    ) -> Result<Reference, SealError> {
        let mut r = Reference::new(self.value.as_bytes(), factory, storage, cost)?;
        r.tries_left = self.tries_left;
        r.max_tries = self.max_tries;
        Ok(r)
    }
}

/// A key slot in a format-1 file.
#[derive(Deserialize)]
struct LegacySlotKey {
    private_key: Secret,
    pin_policy: PinPolicy,
    touch_policy: TouchPolicy,
    origin: KeyOrigin,
}

/// The management key in a format-1 file.
#[derive(Deserialize)]
struct LegacyManagementKey {
    algorithm: MgmtAlgorithm,
    key: Secret,
    touch_policy: TouchPolicy,
}

/// A format-1 card file: secrets in plain hex.
#[derive(Deserialize)]
struct LegacyCard {
    serial: u32,
    #[serde(default)]
    profile: Profile,
    pin: LegacyReference,
    puk: LegacyReference,
    management_key: LegacyManagementKey,
    #[serde(with = "hex_objects", default)]
    objects: BTreeMap<u32, Vec<u8>>,
    #[serde(with = "hex_map", default)]
    keys: BTreeMap<u8, LegacySlotKey>,
}

impl LegacyCard {
    /// The same card in format 2: a new storage key pair and file key, PIN and PUK hashed at
    /// the default cost, every key sealed as if it had just been imported with its policies.
    fn migrate(mut self) -> Result<CardState, String> {
        let fail = |e: &dyn std::fmt::Display| format!("migrating the card file: {e}");
        let cost = KdfCost::DEFAULT;
        let file_key = FileKey::generate();
        let storage = StorageSecret::generate();
        let protected = self.objects.remove(&TAG_PRINTED);
        let mut state = CardState {
            format: FORMAT,
            serial: self.serial,
            profile: self.profile,
            kdf: cost,
            storage_key: storage.public(),
            pin: self
                .pin
                .migrate(DEFAULT_PIN, &storage, cost)
                .map_err(|e| fail(&e))?,
            puk: self
                .puk
                .migrate(DEFAULT_PUK, &storage, cost)
                .map_err(|e| fail(&e))?,
            management_key: ManagementKey {
                algorithm: self.management_key.algorithm,
                key: Sealed::to_file(
                    &file_key,
                    Purpose::ManagementKey,
                    self.management_key.key.as_bytes(),
                )
                .map_err(|e| fail(&e))?,
                touch_policy: self.management_key.touch_policy,
            },
            file_key,
            objects: std::mem::take(&mut self.objects),
            protected_objects: BTreeMap::new(),
            keys: BTreeMap::new(),
            kind: super::kind::CardKind::Piv,
            idprime: None,
        };
        if let Some(object) = protected {
            state
                .put_object(TAG_PRINTED, &object)
                .map_err(|e| fail(&e))?;
        }
        for (slot, old) in &self.keys {
            let key = PrivateKey::from_pkcs8(old.private_key.as_bytes())
                .map_err(|e| fail(&format!("key {slot:02X}: {e}")))?;
            let sealed = state
                .seal_key(*slot, &key, old.pin_policy, old.touch_policy, old.origin)
                .map_err(|e| fail(&format!("key {slot:02X}: {e}")))?;
            state.keys.insert(*slot, sealed);
        }
        Ok(state)
    }
}

/// A certificate data object as PIV stores it: `53 { 70 cert, 71 00, FE 00 }`.
pub fn certificate_object(cert: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(cert.len() + 12);
    tlv::push_do(&mut inner, 0x70, cert);
    tlv::push_do(&mut inner, 0x71, &[0x00]);
    tlv::push_do(&mut inner, 0xFE, &[]);
    tlv::encode(0x53, &inner)
}

/// 16 bytes that identify this card, derived from its serial.
fn card_identity(serial: u32, purpose: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"Tessera virtual PIV card\0");
    h.update(purpose.as_bytes());
    h.update(serial.to_be_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
    out
}

/// FASC-N (TIG SCEPACS): 40 five-bit characters, four data bits least significant first then
/// an odd parity bit, packed most significant bit first into 25 bytes.
fn fasc_n(serial: u32) -> Vec<u8> {
    const SS: u8 = 0x0B;
    const FS: u8 = 0x0D;
    const ES: u8 = 0x0F;
    let digits = |s: String| s.bytes().map(|b| b - b'0').collect::<Vec<u8>>();
    let mut chars = vec![SS];
    chars.extend(digits("9999".into())); // agency code: not a government agency
    chars.push(FS);
    chars.extend(digits("9999".into())); // system code
    chars.push(FS);
    chars.extend(digits(format!("{:06}", serial % 1_000_000))); // credential number
    chars.push(FS);
    chars.push(1); // credential series
    chars.push(FS);
    chars.push(1); // individual credential issue
    chars.push(FS);
    chars.extend(digits(format!("{serial:010}"))); // person identifier
    chars.push(1); // organizational category
    chars.extend(digits("0000".into())); // organizational identifier
    chars.push(1); // person/organization association
    chars.push(ES);
    let lrc = chars.iter().fold(0u8, |acc, c| acc ^ c) & 0x0F;
    chars.push(lrc);

    let mut bits: Vec<bool> = Vec::with_capacity(200);
    for c in chars {
        let data = [c & 1 != 0, c & 2 != 0, c & 4 != 0, c & 8 != 0];
        let ones = data.iter().filter(|b| **b).count();
        bits.extend_from_slice(&data);
        bits.push(ones % 2 == 0);
    }
    bits.chunks(8)
        .map(|byte| byte.iter().fold(0u8, |acc, &b| (acc << 1) | u8::from(b)))
        .collect()
}

/// CHUID object: FASC-N, GUID, expiry date, empty signature and LRC.
fn chuid(serial: u32) -> Vec<u8> {
    let mut inner = Vec::new();
    tlv::push_do(&mut inner, 0x30, &fasc_n(serial));
    tlv::push_do(&mut inner, 0x34, &card_identity(serial, "GUID"));
    tlv::push_do(&mut inner, 0x35, b"20501231");
    tlv::push_do(&mut inner, 0x3E, &[]);
    tlv::push_do(&mut inner, 0xFE, &[]);
    tlv::encode(0x53, &inner)
}

/// Card Capability Container with a card identifier derived from the serial.
fn ccc(serial: u32) -> Vec<u8> {
    let mut card_id = vec![0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02];
    card_id.extend_from_slice(card_identity(serial, "CCC").get(..14).unwrap_or_default());
    let mut inner = Vec::new();
    tlv::push_do(&mut inner, 0xF0, &card_id);
    tlv::push_do(&mut inner, 0xF1, &[0x21]);
    tlv::push_do(&mut inner, 0xF2, &[0x21]);
    tlv::push_do(&mut inner, 0xF3, &[]);
    tlv::push_do(&mut inner, 0xF4, &[0x00]);
    tlv::push_do(&mut inner, 0xF5, &[0x10]);
    for tag in [0xF6, 0xF7, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE] {
        tlv::push_do(&mut inner, tag, &[]);
    }
    tlv::encode(0x53, &inner)
}

/// Discovery object: the PIV AID and the PIN usage policy (application PIN only).
fn discovery() -> Vec<u8> {
    let mut inner = Vec::new();
    tlv::push_do(
        &mut inner,
        0x4F,
        &[
            0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
        ],
    );
    tlv::push_do(&mut inner, 0x5F2F, &[0x40, 0x00]);
    tlv::encode(TAG_DISCOVERY, &inner)
}

/// Data objects as `{"5FC102": "53…"}`.
mod hex_objects {
    use serde::de::Error;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (tag, value) in map {
            m.serialize_entry(&format!("{tag:02X}"), &hex::encode_upper(value))?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(tag, value)| {
                let tag = u32::from_str_radix(&tag, 16).map_err(D::Error::custom)?;
                let value = hex::decode(value).map_err(D::Error::custom)?;
                Ok((tag, value))
            })
            .collect()
    }
}

/// Keys of a map written as hex: slots as `"9A"`, object tags as `"5FC109"`.
trait HexKey: Ord + Sized {
    fn to_hex(&self) -> String;
    fn from_hex(text: &str) -> Result<Self, std::num::ParseIntError>;
}

impl HexKey for u8 {
    fn to_hex(&self) -> String {
        format!("{self:02X}")
    }
    fn from_hex(text: &str) -> Result<Self, std::num::ParseIntError> {
        u8::from_str_radix(text, 16)
    }
}

impl HexKey for u32 {
    fn to_hex(&self) -> String {
        format!("{self:02X}")
    }
    fn from_hex(text: &str) -> Result<Self, std::num::ParseIntError> {
        u32::from_str_radix(text, 16)
    }
}

/// Maps keyed by slot or tag as `{"9A": {…}}`.
mod hex_map {
    use super::HexKey;
    use serde::de::Error;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer, K: HexKey, V: Serialize>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (key, value) in map {
            m.serialize_entry(&key.to_hex(), value)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>, K: HexKey, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        BTreeMap::<String, V>::deserialize(d)?
            .into_iter()
            .map(|(key, value)| Ok((K::from_hex(&key).map_err(D::Error::custom)?, value)))
            .collect()
    }
}

/// Bytes as upper-case hex.
mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card made fast: PIN and PUK hashed at the test cost.
    fn quick(serial: u32) -> CardState {
        CardState::factory_with_cost(Profile::default(), serial, KdfCost::TEST).unwrap()
    }

    /// Upper- and lower-case hex and the raw bytes (as JSON would escape them, ASCII only).
    fn spellings(secret: &[u8]) -> Vec<String> {
        let mut out = vec![hex::encode_upper(secret), hex::encode(secret)];
        if secret.iter().all(|b| b.is_ascii_graphic()) {
            out.push(String::from_utf8(secret.to_vec()).unwrap());
        }
        out
    }

    fn assert_no_secret(json: &str, what: &str, secret: &[u8]) {
        for s in spellings(secret) {
            assert!(!json.contains(&s), "{what} in the clear: {s}");
        }
    }

    #[test]
    fn factory_state_round_trips_through_json() {
        // A serial whose digits are not the PIN's (the attestation certificate names it).
        let s = CardState::factory(97531);
        assert_eq!(s.kdf, KdfCost::DEFAULT);
        let json = serde_json::to_string_pretty(&s).unwrap();
        assert!(json.contains("\"5FC102\""));
        assert!(json.contains("\"F9\""));
        assert!(json.contains("\"format\": 2"));
        assert!(!format!("{s:?}").contains("313233343536"));
        let back = CardState::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, s);
        assert!(back.pin_is_default() && back.puk_is_default());
        assert!(back.management_key_is_default());
        assert_no_secret(&json, "PIN", DEFAULT_PIN);
        assert_no_secret(&json, "PUK", DEFAULT_PUK);
        assert_no_secret(&json, "management key", &DEFAULT_MGMT_KEY);
        let attestation = s
            .open_key(&s.keys[&SLOT_ATTESTATION], None)
            .expect("the attestation key opens without a PIN");
        let PrivateKey::P256(k) = attestation else {
            panic!("P-256")
        };
        assert_no_secret(&json, "attestation key", &k.to_bytes());
    }

    #[test]
    fn a_newer_format_is_named_not_misread() {
        let mut v = serde_json::to_value(quick(1)).unwrap();
        v["format"] = 3.into();
        let err = CardState::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("format 3"), "{err}");
    }

    #[test]
    fn pin_and_puk_open_the_storage_key_and_nothing_else_does() {
        let s = quick(5);
        let storage = s.open_with_pin(&padded(DEFAULT_PIN)).unwrap();
        assert!(s.is_storage_secret(&storage));
        assert!(s.open_with_puk(&padded(DEFAULT_PUK)).is_ok());
        assert_eq!(
            s.open_with_pin(&padded(b"654321")).unwrap_err(),
            SealError::WrongSecret
        );
        assert_eq!(
            s.open_with_pin(&padded(DEFAULT_PUK)).unwrap_err(),
            SealError::WrongSecret
        );
    }

    #[test]
    fn pin_protected_keys_need_the_storage_key_pinless_ones_do_not() {
        let mut s = quick(6);
        let storage = s.open_with_pin(&padded(DEFAULT_PIN)).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::EccP256).unwrap();
        let PrivateKey::P256(scalar) = &key else {
            panic!()
        };
        let scalar = scalar.to_bytes().to_vec();
        for (slot, policy, sealed_to_storage) in [
            (0x9A, PinPolicy::Once, true),
            (0x9C, PinPolicy::Always, true),
            (0x9E, PinPolicy::Never, false),
            (0x9A, PinPolicy::Never, false),
            (SLOT_ATTESTATION, PinPolicy::Once, false),
        ] {
            let k = s
                .seal_key(slot, &key, policy, TouchPolicy::Never, KeyOrigin::Imported)
                .unwrap();
            assert_eq!(k.is_sealed_to_storage(), sealed_to_storage, "{slot:02X}");
            assert_eq!(k.public_key().unwrap(), key.public_key());
            let opened = s.open_key(&k, None);
            if sealed_to_storage {
                assert_eq!(opened.unwrap_err(), KeyError::Seal(SealError::Locked));
            } else {
                opened.unwrap();
            }
            let opened = s.open_key(&k, Some(&storage)).unwrap();
            assert_eq!(opened.public_key(), key.public_key());
            s.keys.insert(slot, k);
            let json = serde_json::to_string(&s).unwrap();
            assert_no_secret(&json, "private key", &scalar);
        }
    }

    #[test]
    fn a_changed_pin_keeps_the_storage_key_and_a_reset_replaces_it() {
        let mut s = quick(8);
        let storage = s.open_with_pin(&padded(DEFAULT_PIN)).unwrap();
        s.set_pin(b"24682468", &storage).unwrap();
        assert!(!s.pin_is_default());
        assert!(s.open_with_pin(&padded(DEFAULT_PIN)).is_err());
        let again = s.open_with_pin(b"24682468").unwrap();
        assert!(s.is_storage_secret(&again));
        s.set_pin(DEFAULT_PIN, &storage).unwrap();
        assert!(
            s.pin_is_default(),
            "the factory value again is the default again"
        );
        s.reset_to_factory().unwrap();
        assert!(!s.is_storage_secret(&storage));
        assert!(s.open_with_pin(&padded(DEFAULT_PIN)).is_ok());
    }

    #[test]
    fn set_retries_on_a_factory_card() {
        let mut s = quick(9);
        assert!(s.set_retries(5, 4));
        assert_eq!((s.pin.tries_left, s.pin.max_tries), (5, 5));
        assert_eq!((s.puk.tries_left, s.puk.max_tries), (4, 4));
        assert!(s.open_with_puk(&padded(DEFAULT_PUK)).is_ok());
        let storage = s.open_with_pin(&padded(DEFAULT_PIN)).unwrap();
        s.set_pin(b"999999", &storage).unwrap();
        assert!(
            !s.set_retries(2, 2),
            "not on a card whose PIN is not the factory PIN"
        );
        assert_eq!(s.pin.max_tries, 5);
    }

    #[test]
    fn printed_information_is_sealed_to_the_storage_key() {
        let mut s = quick(10);
        let object = tlv::encode(0x53, &tlv::encode(0x88, &tlv::encode(0x89, &[0x5A; 32])));
        assert!(s.put_object(TAG_PRINTED, &object).unwrap());
        let json = serde_json::to_string(&s).unwrap();
        assert_no_secret(&json, "protected object", &[0x5A; 32]);
        assert_eq!(s.object(TAG_PRINTED, None).unwrap_err(), SealError::Locked);
        let storage = s.open_with_pin(&padded(DEFAULT_PIN)).unwrap();
        assert_eq!(
            s.object(TAG_PRINTED, Some(&storage))
                .unwrap()
                .unwrap()
                .to_vec(),
            object
        );
        assert!(s.remove_object(TAG_PRINTED));
        assert!(s.object(TAG_PRINTED, Some(&storage)).unwrap().is_none());
    }

    /// A format-1 file as Tessera wrote it before secrets were sealed.
    fn legacy_json(p256_pkcs8: &[u8], rsa_pkcs8: &[u8]) -> String {
        format!(
            r#"{{
  "serial": 4242,
  "profile": "yubikey-5.7",
  "pin": {{ "value": "3938373635343332", "tries_left": 2, "max_tries": 3 }},
  "puk": {{ "value": "3132333435363738", "tries_left": 3, "max_tries": 3 }},
  "management_key": {{
    "algorithm": "aes256",
    "key": "{mgmt}",
    "touch_policy": "never"
  }},
  "objects": {{ "5FC102": "5300", "5FC109": "{printed}" }},
  "keys": {{
    "9A": {{ "algorithm": "ecc-p256", "private_key": "{p256}", "pin_policy": "once",
             "touch_policy": "never", "origin": "imported" }},
    "9E": {{ "algorithm": "rsa2048", "private_key": "{rsa}", "pin_policy": "never",
             "touch_policy": "never", "origin": "generated" }}
  }}
}}"#,
            mgmt = hex::encode_upper([0xA5; 32]),
            printed = hex::encode_upper(tlv::encode(0x53, &[0xC3; 40])),
            p256 = hex::encode_upper(p256_pkcs8),
            rsa = hex::encode_upper(rsa_pkcs8),
        )
    }

    #[test]
    fn a_format_1_file_is_migrated_without_a_pin() {
        let ec = PrivateKey::generate(KeyAlgorithm::EccP256).unwrap();
        let rsa = PrivateKey::generate(KeyAlgorithm::Rsa2048).unwrap();
        let json = legacy_json(&ec.to_pkcs8().unwrap(), &rsa.to_pkcs8().unwrap());
        let s = CardState::from_json(json.as_bytes()).unwrap();
        assert_eq!(s.serial, 4242);
        assert_eq!((s.pin.tries_left, s.pin.max_tries), (2, 3));
        assert!(!s.pin_is_default() && s.puk_is_default());
        assert_eq!(s.management_key.algorithm, MgmtAlgorithm::Aes256);
        assert_eq!(&s.management_key().unwrap()[..], &[0xA5; 32]);
        // 9A (PIN policy once) is sealed to the storage key, 9E (never) is not.
        assert!(s.keys[&0x9A].is_sealed_to_storage());
        assert!(!s.keys[&0x9E].is_sealed_to_storage());
        assert_eq!(s.keys[&0x9E].origin, KeyOrigin::Generated);
        assert!(s.open_key(&s.keys[&0x9A], None).is_err());
        s.open_key(&s.keys[&0x9E], None).unwrap();
        let storage = s.open_with_pin(b"98765432").unwrap();
        let k = s.open_key(&s.keys[&0x9A], Some(&storage)).unwrap();
        assert_eq!(k.public_key(), ec.public_key());
        assert_eq!(s.keys[&0x9A].public_key().unwrap(), ec.public_key());
        assert!(!s.objects.contains_key(&TAG_PRINTED));
        assert_eq!(
            s.object(TAG_PRINTED, Some(&storage))
                .unwrap()
                .unwrap()
                .to_vec(),
            tlv::encode(0x53, &[0xC3; 40])
        );
        // Written out, nothing of it is in the clear any more.
        let out = serde_json::to_string_pretty(&s).unwrap();
        assert_no_secret(&out, "PIN", b"98765432");
        assert_no_secret(&out, "PUK", DEFAULT_PUK);
        assert_no_secret(&out, "management key", &[0xA5; 32]);
        assert_no_secret(&out, "printed information", &[0xC3; 40]);
        let PrivateKey::P256(scalar) = &ec else {
            panic!()
        };
        assert_no_secret(&out, "EC scalar", &scalar.to_bytes());
        let PrivateKey::Rsa(rsa_key) = &rsa else {
            panic!()
        };
        use rsa::traits::PrivateKeyParts;
        for prime in rsa_key.primes() {
            assert_no_secret(&out, "RSA prime", &prime.to_bytes_be());
        }
        assert_eq!(CardState::from_json(out.as_bytes()).unwrap(), s);
    }

    #[test]
    fn cards_are_distinguishable_by_chuid() {
        let a = CardState::factory(1);
        let b = CardState::factory(2);
        assert_ne!(a.objects[&TAG_CHUID], b.objects[&TAG_CHUID]);
        assert_ne!(a.objects[&TAG_CCC], b.objects[&TAG_CCC]);
        assert_eq!(
            a.objects[&TAG_CHUID],
            CardState::factory(1).objects[&TAG_CHUID]
        );
    }

    #[test]
    fn fasc_n_matches_the_known_encoding_of_its_start() {
        // SS, 9, 9, 9, 9, FS as every FASC-N with agency code 9999 begins (ykman's default).
        let f = fasc_n(0);
        assert_eq!(f.len(), 25);
        assert_eq!(&f[..4], &[0xD4, 0xE7, 0x39, 0xDA]);
    }

    #[test]
    fn reset_keeps_serial_and_attestation() {
        let mut s = quick(7);
        let att = s.keys[&SLOT_ATTESTATION].clone();
        s.pin.tries_left = 0;
        s.objects.insert(0x5FC105, vec![0x53, 0]);
        s.reset_to_factory().unwrap();
        assert_eq!(s.serial, 7);
        assert_eq!(s.keys[&SLOT_ATTESTATION], att);
        assert_eq!(s.pin.tries_left, 3);
        assert!(!s.objects.contains_key(&0x5FC105));
    }
}
