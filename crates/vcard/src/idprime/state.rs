//! Persistent state of the virtual IDPrime card: its model, its file system (the bytes of every
//! file by FID, as personalisation wrote them), its PINs with their counters, and its private
//! keys by key reference. Secrets are kept as the PIV card keeps them (`seal.rs`): each PIN as
//! a salted scrypt hash that also unwraps the card's storage key, and every private key sealed
//! to that storage key, so nothing secret is in the card file in the clear. Personalisation —
//! what an issuer does before the card reaches its holder — is here too; the applet in
//! `mod.rs` only reads files and uses keys.

use super::files::{self, Container, IndexEntry, KeyReferenceRecord};
use super::model::{self, Model};
use crate::crypto::{KeyAlgorithm, PrivateKey, PublicKey};
use crate::seal::{
    Credential, FileKey, KdfCost, Purpose, SealError, Sealed, StoragePublic, StorageSecret,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// A PIN of the card with its counter. The value is not kept, only its salted slow hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pin {
    /// The hash of the bytes the card compares (the digits, or the 16-byte zero-padded block
    /// on models that pad), wrapping the storage key.
    pub credential: Credential,
    /// Length of the unpadded value: CHANGE REFERENCE DATA of an unpadded PIN sends old‖new
    /// with no separator, so the card splits at the current PIN's length.
    pub length: u8,
    /// Tries left before the PIN blocks.
    pub tries_left: u8,
    /// Tries after a successful verification.
    pub max_tries: u8,
    /// Whether the value is still the factory PIN 0000.
    pub is_default: bool,
}

impl Pin {
    /// A PIN of `value` (unpadded digits) for `model`, wrapping `storage`, with full tries.
    pub fn new(
        model: Model,
        value: &[u8],
        storage: &StorageSecret,
        cost: KdfCost,
    ) -> Result<Self, SealError> {
        let compared = compared_form(model, value).ok_or(SealError::WrongSecret)?;
        Ok(Self {
            credential: Credential::new(&compared, storage, cost)?,
            length: value.len() as u8,
            tries_left: model::PIN_TRIES,
            max_tries: model::PIN_TRIES,
            is_default: value == model::FACTORY_PIN,
        })
    }

    /// True when no tries are left.
    pub fn blocked(&self) -> bool {
        self.tries_left == 0
    }
}

/// The bytes the card compares for a PIN value: the value itself, or on models that pad, the
/// value zero-padded to 16 bytes. `None` when the value's length is outside 4..=16.
pub fn compared_form(model: Model, value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if !(model::PIN_MIN..=model::PIN_MAX).contains(&value.len()) {
        return None;
    }
    let mut out = Zeroizing::new(value.to_vec());
    if model.pads_pin() {
        out.resize(model::PIN_MAX, 0);
    }
    Some(out)
}

/// A private key on the card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CardKey {
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
    /// The container (`kxcNN`) it belongs to.
    pub container: u8,
    /// The PIN that guards it (0x11, or 0x83 on the 940).
    pub pin: u8,
    /// The public key as SubjectPublicKeyInfo DER.
    #[serde(with = "hex_bytes")]
    pub public_key: Vec<u8>,
    /// The PKCS#8 private key sealed to the storage key.
    pub private_key: Sealed,
}

/// Everything the IDPrime card keeps across power cycles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdPrimeState {
    /// The model the card presents.
    pub model: Model,
    /// scrypt cost of PIN hashes made from now on.
    pub kdf: KdfCost,
    /// Public half of the storage key pair (keys are sealed to it; the PIN unwraps its
    /// private half).
    pub storage_key: StoragePublic,
    /// The user PIN (0x11).
    pub pin: Pin,
    /// The Digital Signature PIN (0x83), on models that have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_pin: Option<Pin>,
    /// The file system: content by FID (the index 0101 included).
    #[serde(with = "hex_map")]
    pub files: BTreeMap<u16, Vec<u8>>,
    /// Private keys by key reference.
    #[serde(with = "hex_map")]
    pub keys: BTreeMap<u8, CardKey>,
}

/// An e-Cert to personalise: a private key and its certificate.
pub struct ECert<'a> {
    /// The private key, PKCS#8 DER.
    pub key: &'a [u8],
    /// The certificate, DER.
    pub certificate: &'a [u8],
}

/// How certificates are stored on the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertificateFormat {
    /// The minidriver's zlib form (`01 00 len`): what issuers write, and the only form OpenSC
    /// 0.23 reads.
    #[default]
    Compressed,
    /// Plain DER (read by OpenSC 0.25+; 0.23 fails on it).
    Plain,
}

/// Why a card could not be personalised.
#[derive(Debug, thiserror::Error)]
pub enum PersonalizeError {
    /// The private key does not parse.
    #[error("e-Cert {0}: the private key is not a key this card can hold")]
    BadKey(usize),
    /// The certificate does not parse.
    #[error("e-Cert {0}: the certificate does not parse: {1}")]
    BadCertificate(usize, String),
    /// Key and certificate are not a pair.
    #[error("e-Cert {0}: the certificate is not for this private key")]
    Mismatch(usize),
    /// The model cannot hold the key.
    #[error("e-Cert {0}: an IDPrime {1} takes no {2:?} key")]
    Unsupported(usize, Model, KeyAlgorithm),
    /// More e-Certs than containers.
    #[error("an IDPrime {0} persona holds at most {1} e-Certs")]
    TooMany(Model, u8),
    /// A file did not fit its layout.
    #[error("{0}")]
    File(#[from] files::FileError),
    /// Sealing a secret failed.
    #[error("cannot seal the card's secrets: {0}")]
    Seal(#[from] SealError),
}

/// The subject CN of a certificate, if it has one.
fn common_name(cert: &x509_cert::Certificate) -> Option<String> {
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == const_oid::db::rfc4519::CN)
        .and_then(|atv| {
            der::asn1::Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    der::asn1::PrintableStringRef::try_from(&atv.value)
                        .map(|s| s.as_str().to_owned())
                })
                .ok()
        })
}

/// 16 bytes derived from the serial: the first 12 identify the card, the last 4 are the serial
/// (so the PKCS#11 serial OpenSC shows, the last 16 hex digits, ends in it).
pub fn card_id(serial: u32) -> [u8; files::CARDID_LEN] {
    let mut h = Sha256::new();
    h.update(b"Tessera virtual IDPrime card\0");
    h.update(serial.to_be_bytes());
    let digest = h.finalize();
    let mut out = [0u8; files::CARDID_LEN];
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
    for (o, s) in out.iter_mut().skip(12).zip(serial.to_be_bytes()) {
        *o = s;
    }
    out
}

/// A container name in the form the minidriver gives them: a GUID in braces (derived from the
/// card and the container, so it is stable).
fn container_guid(serial: u32, n: u8) -> String {
    let mut h = Sha256::new();
    h.update(b"Tessera virtual IDPrime container\0");
    h.update(serial.to_be_bytes());
    h.update([n]);
    let d = hex::encode_upper(h.finalize());
    let part = |a: usize, b: usize| d.get(a..b).unwrap_or_default().to_owned();
    format!(
        "{{{}-{}-{}-{}-{}}}",
        part(0, 8),
        part(8, 12),
        part(12, 16),
        part(16, 20),
        part(20, 32)
    )
}

impl IdPrimeState {
    /// A card of `model` personalised with `ecerts`, one per container in order (`kxc00` →
    /// key reference of container 0, …), factory PIN 0000 (hashed at `cost`), certificates in
    /// `format`. The token label (`p11/tinfo`) is the first certificate's CN, as an issuer
    /// personalising the card for its holder writes it; a card without e-Certs says "IDPrime".
    pub fn personalized(
        model: Model,
        serial: u32,
        ecerts: &[ECert<'_>],
        format: CertificateFormat,
        cost: KdfCost,
    ) -> Result<Self, PersonalizeError> {
        if ecerts.len() > usize::from(model.max_containers()) {
            return Err(PersonalizeError::TooMany(model, model.max_containers()));
        }
        let storage = StorageSecret::generate();
        let storage_key = storage.public();
        let mut keys = BTreeMap::new();
        let mut files = BTreeMap::new();
        let mut containers = Vec::new();
        let mut keyrefs = Vec::new();
        let mut certificate_files = Vec::new();
        let mut label = None;
        for (i, ecert) in ecerts.iter().enumerate() {
            let number = i + 1;
            let n = u8::try_from(i).map_err(|_| PersonalizeError::TooMany(model, 10))?;
            let key =
                PrivateKey::from_pkcs8(ecert.key).map_err(|_| PersonalizeError::BadKey(number))?;
            let algorithm = key
                .algorithm()
                .map_err(|_| PersonalizeError::BadKey(number))?;
            if !model.supports(algorithm) {
                return Err(PersonalizeError::Unsupported(number, model, algorithm));
            }
            let cert = <x509_cert::Certificate as der::Decode>::from_der(ecert.certificate)
                .map_err(|e| PersonalizeError::BadCertificate(number, e.to_string()))?;
            let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)
                .map_err(|e| PersonalizeError::BadCertificate(number, e.to_string()))?;
            let public =
                PublicKey::from_spki_der(&spki).map_err(|_| PersonalizeError::Mismatch(number))?;
            if public != key.public_key() {
                return Err(PersonalizeError::Mismatch(number));
            }
            if label.is_none() {
                label = common_name(&cert);
            }
            let key_reference = model
                .key_reference(n)
                .ok_or(PersonalizeError::TooMany(model, model.max_containers()))?;
            let der = key
                .to_pkcs8()
                .map_err(|_| PersonalizeError::BadKey(number))?;
            keys.insert(
                key_reference,
                CardKey {
                    algorithm,
                    container: n,
                    pin: model::USER_PIN,
                    public_key: spki,
                    private_key: Sealed::to_storage(&storage_key, Purpose::PrivateKey, &der)?,
                },
            );
            let bits = match algorithm.rsa_bits() {
                Some(bits) => bits,
                None => algorithm.byte_len() * 8,
            };
            containers.push(Container {
                name: container_guid(serial, n),
                flags: files::CONTAINER_VALID | if n == 0 { files::CONTAINER_DEFAULT } else { 0 },
                signature_key_bits: 0,
                key_exchange_key_bits: bits as u16,
            });
            keyrefs.push(KeyReferenceRecord {
                pin_index: 1,
                key_reference,
                certificate_index: n,
            });
            let file = match format {
                CertificateFormat::Compressed => files::compress_certificate(ecert.certificate)?,
                CertificateFormat::Plain => ecert.certificate.to_vec(),
            };
            if file.len() > files::MAX_FILE {
                return Err(files::FileError::TooLarge("certificate").into());
            }
            certificate_files.push((files::FID_FIRST_CERTIFICATE + u16::from(n), n, file));
        }

        let label = label.unwrap_or_else(|| "IDPrime".to_owned());
        let mut entries = Vec::new();
        let mut add = |fid: u16, name: &str, directory: &str, content: Vec<u8>| {
            entries.push(IndexEntry {
                fid,
                size: content.len() as u16,
                name: name.to_owned(),
                directory: directory.to_owned(),
            });
            files.insert(fid, content);
        };
        add(files::FID_CARDID, "cardid", "", card_id(serial).to_vec());
        add(files::FID_CARDCF, "cardcf", "", files::cardcf());
        add(files::FID_CARDAPPS, "cardapps", "", files::cardapps());
        add(
            files::FID_CMAPFILE,
            "cmapfile",
            "mscp",
            files::container_map(&containers)?,
        );
        add(files::FID_TINFO, "tinfo", "p11", files::tinfo(&label));
        for (fid, n, content) in certificate_files {
            add(fid, &files::certificate_name(n), "mscp", content);
        }
        files.insert(files::FID_INDEX, files::index(&entries)?);
        if model.has_key_reference_map() {
            files.insert(
                files::FID_KEY_REFERENCE_MAP,
                files::key_reference_map(&keyrefs),
            );
        }

        let signature_pin = if model.has_signature_pin() {
            Some(Pin::new(model, model::FACTORY_PIN, &storage, cost)?)
        } else {
            None
        };
        Ok(Self {
            model,
            kdf: cost,
            storage_key,
            pin: Pin::new(model, model::FACTORY_PIN, &storage, cost)?,
            signature_pin,
            files,
            keys,
        })
    }

    /// The PIN with reference `reference` (P2 of VERIFY).
    pub fn pin(&self, reference: u8) -> Option<&Pin> {
        match reference {
            model::USER_PIN => Some(&self.pin),
            model::SIGNATURE_PIN => self.signature_pin.as_ref(),
            _ => None,
        }
    }

    /// Mutable [`IdPrimeState::pin`].
    pub fn pin_mut(&mut self, reference: u8) -> Option<&mut Pin> {
        match reference {
            model::USER_PIN => Some(&mut self.pin),
            model::SIGNATURE_PIN => self.signature_pin.as_mut(),
            _ => None,
        }
    }

    /// Checks `compared` (the form [`compared_form`] gives) against PIN `reference` without
    /// touching its counter; returns the storage secret it unwraps when right.
    pub fn open_with_pin(
        &self,
        reference: u8,
        compared: &[u8],
    ) -> Result<StorageSecret, SealError> {
        let pin = self.pin(reference).ok_or(SealError::WrongSecret)?;
        pin.credential.open(compared, &self.storage_key)
    }

    /// Opens the private key at `key_reference` with the storage secret a verified PIN
    /// unwrapped.
    pub fn open_key(
        &self,
        key_reference: u8,
        storage: &StorageSecret,
    ) -> Result<PrivateKey, SealError> {
        let key = self.keys.get(&key_reference).ok_or(SealError::Damaged)?;
        // Storage seals ignore the file key; the IDPrime card keeps none.
        let der = key
            .private_key
            .open(&unused_file_key(), Some(storage), Purpose::PrivateKey)?;
        PrivateKey::from_pkcs8(&der).map_err(|_| SealError::Damaged)
    }

    /// The DER certificates on the card by container, read back from the files through the
    /// index (for tests and tools; OpenSC does the same).
    pub fn certificates(&self) -> Vec<(u8, Vec<u8>)> {
        let Some(index) = self.files.get(&files::FID_INDEX) else {
            return Vec::new();
        };
        let Ok(entries) = files::parse_index(index) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|e| e.directory == "mscp" && e.name.starts_with("kxc"))
            .filter_map(|e| {
                let n = e.name.get(3..)?.parse::<u8>().ok()?;
                let der = files::certificate_der(self.files.get(&e.fid)?).ok()?;
                Some((n, der))
            })
            .collect()
    }
}

/// The file key that storage seals are opened with: unused by them, so any key does.
fn unused_file_key() -> FileKey {
    FileKey::generate()
}

/// Bytes as upper-case hex.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Maps keyed by a hex number (`"0201"`, `"31"`).
mod hex_map {
    use serde::de::Error;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    /// A key written as fixed-width upper-case hex.
    pub trait HexKey: Sized + Ord + Copy {
        fn to_hex(self) -> String;
        fn from_hex(s: &str) -> Option<Self>;
    }

    impl HexKey for u8 {
        fn to_hex(self) -> String {
            format!("{self:02X}")
        }
        fn from_hex(s: &str) -> Option<Self> {
            u8::from_str_radix(s, 16).ok()
        }
    }

    impl HexKey for u16 {
        fn to_hex(self) -> String {
            format!("{self:04X}")
        }
        fn from_hex(s: &str) -> Option<Self> {
            u16::from_str_radix(s, 16).ok()
        }
    }

    /// Values: byte strings as hex, anything else as itself.
    pub trait HexValue: Sized {
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
    }

    impl HexValue for Vec<u8> {
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode_upper(self))
        }
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
        }
    }

    impl HexValue for super::CardKey {
        fn ser<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.serialize(s)
        }
        fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Self::deserialize(d)
        }
    }

    struct AsHex<'a, V>(&'a V);

    impl<V: HexValue> Serialize for AsHex<'_, V> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.ser(s)
        }
    }

    struct FromHex<V>(V);

    impl<'de, V: HexValue> Deserialize<'de> for FromHex<V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            V::de(d).map(FromHex)
        }
    }

    pub fn serialize<K: HexKey, V: HexValue, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            m.serialize_entry(&k.to_hex(), &AsHex(v))?;
        }
        m.end()
    }

    pub fn deserialize<'de, K: HexKey, V: HexValue, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        BTreeMap::<String, FromHex<V>>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                let key = K::from_hex(&k).ok_or_else(|| D::Error::custom("bad hex key"))?;
                Ok((key, v.0))
            })
            .collect()
    }
}
