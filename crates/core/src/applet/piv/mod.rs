//! Host-side PIV driver (SP 800-73-4 part 2, with the YubiKey extensions): the commands the
//! module and the manager send, and the parsing of what comes back. Every function runs inside
//! a transaction the caller holds (one transaction per logical operation).

pub mod admin;
pub mod change;
pub mod keys;
pub mod plans;
pub mod slots;

pub use keys::{KeyAlgorithm, KeyMetadata, PinPolicy, PublicKeyInfo};
pub use slots::{KeySlot, SlotRole};

use crate::card::{exchange, tlv, CardError, Channel, Command, StatusWord};
use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use zeroize::Zeroizing;

/// The PIV application identifier (NIST PIX, version 01.00).
pub const AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// PIV key references used by VERIFY / CHANGE REFERENCE DATA.
pub mod key_ref {
    /// The PIV application PIN.
    pub const PIN: u8 = 0x80;
    /// The PIN unblocking key.
    pub const PUK: u8 = 0x81;
    /// The card management key.
    pub const MANAGEMENT: u8 = 0x9B;
}

/// Management key algorithms (SP 800-78-4 table 6-2 and Yubico's AES values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagementAlgorithm {
    /// Three-key 3DES (24-byte key).
    TripleDes,
    /// AES-128.
    Aes128,
    /// AES-192.
    Aes192,
    /// AES-256.
    Aes256,
}

impl ManagementAlgorithm {
    /// The algorithm identifier sent in P1.
    pub fn id(self) -> u8 {
        match self {
            Self::TripleDes => 0x03,
            Self::Aes128 => 0x08,
            Self::Aes192 => 0x0A,
            Self::Aes256 => 0x0C,
        }
    }

    /// Parses an algorithm identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x03 => Some(Self::TripleDes),
            0x08 => Some(Self::Aes128),
            0x0A => Some(Self::Aes192),
            0x0C => Some(Self::Aes256),
            _ => None,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::TripleDes | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    /// Cipher block length in bytes (the challenge length).
    pub fn block_len(self) -> usize {
        match self {
            Self::TripleDes => 8,
            _ => 16,
        }
    }

    /// Encrypts (`encrypt`) or decrypts one block in place (ECB, as PIV's challenge-response
    /// uses it).
    fn crypt_block(self, key: &[u8], block: &mut [u8], encrypt: bool) -> Result<(), CardError> {
        match self {
            Self::TripleDes => ecb::<des::TdesEde3>(key, block, encrypt),
            Self::Aes128 => ecb::<aes::Aes128>(key, block, encrypt),
            Self::Aes192 => ecb::<aes::Aes192>(key, block, encrypt),
            Self::Aes256 => ecb::<aes::Aes256>(key, block, encrypt),
        }
    }

    fn encrypt_block(self, key: &[u8], block: &mut [u8]) -> Result<(), CardError> {
        self.crypt_block(key, block, true)
    }

    fn decrypt_block(self, key: &[u8], block: &mut [u8]) -> Result<(), CardError> {
        self.crypt_block(key, block, false)
    }
}

fn ecb<C: KeyInit + BlockEncrypt + BlockDecrypt>(
    key: &[u8],
    block: &mut [u8],
    encrypt: bool,
) -> Result<(), CardError> {
    let cipher = C::new_from_slice(key)
        .map_err(|_| CardError::Malformed("management key has the wrong length"))?;
    if block.len() != C::block_size() {
        return Err(CardError::Malformed("block has the wrong length"));
    }
    let block = cipher::generic_array::GenericArray::from_mut_slice(block);
    if encrypt {
        cipher.encrypt_block(block);
    } else {
        cipher.decrypt_block(block);
    }
    Ok(())
}

/// The factory-default management key of PIV cards and YubiKeys (3DES).
pub const DEFAULT_MANAGEMENT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

/// SELECT the PIV application; returns the application property template.
pub fn select(ch: &mut dyn Channel) -> Result<Zeroizing<Vec<u8>>, CardError> {
    exchange(ch, &Command::new(0xA4, 0x04, 0x00).with_data(&AID))?.success()
}

/// GET DATA for one container (`tag` like 0x5FC105); returns the value inside the 53 wrapper,
/// or `None` when the card does not have the object.
pub fn get_data(ch: &mut dyn Channel, tag: tlv::Tag) -> Result<Option<Vec<u8>>, CardError> {
    let mut tag_bytes = Vec::with_capacity(3);
    tlv::push_tag(&mut tag_bytes, tag);
    let cmd = Command::new(0xCB, 0x3F, 0xFF).with_data(&tlv::encode(0x5C, &tag_bytes));
    let resp = exchange(ch, &cmd)?;
    match resp.sw {
        StatusWord::Success => {}
        // 6A82 is the standard's "not found"; independent applets answer 6A80 for an object
        // they do not have.
        StatusWord::NotFound | StatusWord::IncorrectData => return Ok(None),
        sw => return Err(CardError::Status(sw)),
    }
    if resp.data.is_empty() {
        return Ok(None);
    }
    let (t, value, _) = tlv::take_do(&resp.data)?;
    if t != 0x53 && tag != 0x7E {
        return Err(CardError::Malformed("GET DATA answer is not a 53 object"));
    }
    Ok(Some(value.to_vec()))
}

/// GET DATA for an object the card may not have or not offer at all (Tessera's and Yubico's
/// own objects, Key History, the CHUID): any refusal or a malformed answer reads as "not
/// there". Only "security status not satisfied" (the object needs the PIN) and lost or reset
/// cards are errors.
pub fn get_optional(ch: &mut dyn Channel, tag: tlv::Tag) -> Result<Option<Vec<u8>>, CardError> {
    match get_data(ch, tag) {
        Ok(v) => Ok(v),
        Err(e @ CardError::Status(StatusWord::SecurityStatus)) => Err(e),
        Err(e @ (CardError::Status(_) | CardError::Malformed(_) | CardError::Tlv(_))) => {
            log::debug!("GET DATA {tag:06X}: {e}: treated as absent");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// PUT DATA for one container; `value` goes inside the 53 wrapper (empty deletes it).
/// Needs the management key.
pub fn put_data(ch: &mut dyn Channel, tag: tlv::Tag, value: &[u8]) -> Result<(), CardError> {
    let mut data = Vec::with_capacity(value.len() + 10);
    let mut tag_bytes = Vec::with_capacity(3);
    tlv::push_tag(&mut tag_bytes, tag);
    tlv::push_do(&mut data, 0x5C, &tag_bytes);
    tlv::push_do(&mut data, 0x53, value);
    exchange(
        ch,
        &Command::new(0xDB, 0x3F, 0xFF)
            .with_data(&data)
            .with_le(None),
    )?
    .success()?;
    Ok(())
}

/// Pads a PIN or PUK to the 8-byte PIV reference data format (0xFF fill). Returns `None`
/// when it is not 6 to 8 bytes (checked here so that a malformed PIN never spends a try).
pub fn pad_pin(pin: &[u8]) -> Option<Zeroizing<[u8; 8]>> {
    if !(6..=8).contains(&pin.len()) {
        return None;
    }
    let mut out = Zeroizing::new([0xFFu8; 8]);
    out.get_mut(..pin.len())?.copy_from_slice(pin);
    Some(out)
}

/// Outcome of a PIN verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    /// Verified (or, for a status query, already verified in this card session).
    Verified,
    /// Not verified; this many tries are left.
    TriesLeft(u8),
    /// No tries left.
    Blocked,
}

/// VERIFY the PIN (`Some`) or query its status (`None`, which spends no try).
pub fn verify_pin(ch: &mut dyn Channel, pin: Option<&[u8]>) -> Result<PinStatus, CardError> {
    let cmd = match pin {
        Some(pin) => {
            let padded =
                pad_pin(pin).ok_or(CardError::Malformed("PIN must be 6 to 8 characters"))?;
            Command::new(0x20, 0x00, key_ref::PIN).with_data(&padded[..])
        }
        None => Command::new(0x20, 0x00, key_ref::PIN),
    }
    .with_le(None);
    match exchange(ch, &cmd)?.sw {
        StatusWord::Success => Ok(PinStatus::Verified),
        StatusWord::VerifyFail { tries: 0 } | StatusWord::AuthBlocked => Ok(PinStatus::Blocked),
        StatusWord::VerifyFail { tries } => Ok(PinStatus::TriesLeft(tries)),
        sw => Err(CardError::Status(sw)),
    }
}

/// VERIFY with P1=FF: the card forgets that the PIN was verified (SP 800-73-4 part 2
/// §3.2.1). Cards that do not know the form answer an error, which changes nothing.
pub fn unverify_pin(ch: &mut dyn Channel) -> Result<(), CardError> {
    let cmd = Command::new(0x20, 0xFF, key_ref::PIN).with_le(None);
    exchange(ch, &cmd).map(|_| ())
}

/// Mutual authentication with the management key (GENERAL AUTHENTICATE, witness then
/// challenge). Fails with `SecurityStatus` when the card rejects the key.
pub fn authenticate_management(
    ch: &mut dyn Channel,
    alg: ManagementAlgorithm,
    key: &[u8],
) -> Result<(), CardError> {
    if key.len() != alg.key_len() {
        return Err(CardError::Malformed("management key has the wrong length"));
    }
    let block = alg.block_len();
    let ask = tlv::encode(0x7C, &[0x80, 0x00]);
    let resp = exchange(
        ch,
        &Command::new(0x87, alg.id(), key_ref::MANAGEMENT).with_data(&ask),
    )?
    .success()?;
    let template = tlv::expect_only(&resp, 0x7C)?;
    let witness = tlv::find(template, 0x80)?.ok_or(CardError::Malformed("no witness"))?;
    if witness.len() != block {
        return Err(CardError::Malformed("witness has the wrong length"));
    }
    let mut plain = Zeroizing::new(witness.to_vec());
    alg.decrypt_block(key, &mut plain)?;
    let mut challenge = vec![0u8; block];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
    let mut inner = Vec::with_capacity(2 * block + 6);
    tlv::push_do(&mut inner, 0x80, &plain);
    tlv::push_do(&mut inner, 0x81, &challenge);
    tlv::push_do(&mut inner, 0x82, &[]);
    let cmd =
        Command::new(0x87, alg.id(), key_ref::MANAGEMENT).with_data(&tlv::encode(0x7C, &inner));
    let resp = exchange(ch, &cmd)?.success()?;
    let template = tlv::expect_only(&resp, 0x7C)?;
    let answer = tlv::find(template, 0x82)?.ok_or(CardError::Malformed("no challenge response"))?;
    let mut expected = challenge;
    alg.encrypt_block(key, &mut expected)?;
    if answer != expected.as_slice() {
        return Err(CardError::Malformed(
            "card failed the management key challenge",
        ));
    }
    Ok(())
}

/// GET SERIAL (YubiKey extension); `None` when the card does not know the command.
pub fn serial(ch: &mut dyn Channel) -> Result<Option<u32>, CardError> {
    let resp = exchange(ch, &Command::new(0xF8, 0x00, 0x00))?;
    if !resp.sw.is_success() {
        return Ok(None);
    }
    // An optional extension: an answer that is not 4 bytes means "no serial from here".
    let bytes: Option<[u8; 4]> = resp.data.as_slice().try_into().ok();
    Ok(bytes.map(u32::from_be_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_pins_and_rejects_bad_lengths() {
        assert_eq!(&pad_pin(b"123456").unwrap()[..], b"123456\xFF\xFF");
        assert!(pad_pin(b"12345").is_none());
        assert!(pad_pin(b"123456789").is_none());
    }

    #[test]
    fn block_cipher_round_trips() {
        for alg in [
            ManagementAlgorithm::TripleDes,
            ManagementAlgorithm::Aes128,
            ManagementAlgorithm::Aes192,
            ManagementAlgorithm::Aes256,
        ] {
            let key = vec![7u8; alg.key_len()];
            let mut b = vec![1u8; alg.block_len()];
            alg.encrypt_block(&key, &mut b).unwrap();
            assert_ne!(b, vec![1u8; alg.block_len()]);
            alg.decrypt_block(&key, &mut b).unwrap();
            assert_eq!(b, vec![1u8; alg.block_len()]);
            assert_eq!(ManagementAlgorithm::from_id(alg.id()), Some(alg));
        }
    }
}
