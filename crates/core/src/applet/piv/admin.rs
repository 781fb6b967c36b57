//! Card administration in the host PIV driver: certificate containers, Key History, the
//! ykman-compatible PIN-protected management key store, PIN/PUK changes and unblocking, and
//! SET MANAGEMENT KEY.

use super::slots::KeySlot;
use super::{key_ref, pad_pin, PinStatus};
use crate::card::{exchange, tlv, CardError, Channel, Command, StatusWord};
use zeroize::Zeroizing;

/// Key History object (SP 800-73-4 part 1 §3.3.2).
pub const KEY_HISTORY_TAG: tlv::Tag = 0x5FC10C;
/// Yubico/ykman ADMIN DATA object.
pub const ADMIN_DATA_TAG: tlv::Tag = 0x5FFF00;
/// Printed Information, where ykman keeps the PIN-protected management key.
pub const PROTECTED_DATA_TAG: tlv::Tag = 0x5FC109;

/// Reads the certificate in `slot`'s container (DER), `None` when the slot has none.
pub fn read_certificate(ch: &mut dyn Channel, slot: KeySlot) -> Result<Option<Vec<u8>>, CardError> {
    let Some(container) = super::get_data(ch, slot.certificate_tag())? else {
        return Ok(None);
    };
    let Some(cert) = tlv::find(&container, 0x70)? else {
        return Ok(None);
    };
    if let Some([info]) = tlv::find(&container, 0x71)? {
        if info & 0x01 != 0 {
            return Err(CardError::Malformed(
                "compressed certificates are not supported",
            ));
        }
    }
    if cert.is_empty() {
        return Ok(None);
    }
    Ok(Some(cert.to_vec()))
}

/// Writes `der` into `slot`'s certificate container (needs the management key).
pub fn write_certificate(ch: &mut dyn Channel, slot: KeySlot, der: &[u8]) -> Result<(), CardError> {
    let mut value = Vec::with_capacity(der.len() + 10);
    tlv::push_do(&mut value, 0x70, der);
    tlv::push_do(&mut value, 0x71, &[0x00]);
    tlv::push_do(&mut value, 0xFE, &[]);
    super::put_data(ch, slot.certificate_tag(), &value)
}

/// Empties `slot`'s certificate container (needs the management key).
pub fn delete_certificate(ch: &mut dyn Channel, slot: KeySlot) -> Result<(), CardError> {
    super::put_data(ch, slot.certificate_tag(), &[])
}

/// The Key History object: how many retired slots hold keys (from 82 upwards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistory {
    /// Retired keys whose certificates are on the card.
    pub on_card_certs: u8,
    /// Retired keys whose certificates are elsewhere (URL).
    pub off_card_certs: u8,
    /// Where off-card certificates are, if any.
    pub url: Option<Vec<u8>>,
}

impl KeyHistory {
    /// The retired slots in use (82, 83, … as many as the history counts, at most 20).
    pub fn used_slots(&self) -> impl Iterator<Item = KeySlot> {
        let n = (usize::from(self.on_card_certs) + usize::from(self.off_card_certs)).min(20);
        KeySlot::all()
            .filter(|s| s.retired_number().is_some())
            .take(n)
    }
}

/// Reads Key History; `None` when the card has no such object.
pub fn key_history(ch: &mut dyn Channel) -> Result<Option<KeyHistory>, CardError> {
    let Some(value) = super::get_optional(ch, KEY_HISTORY_TAG)? else {
        return Ok(None);
    };
    let parsed = (|| -> Result<KeyHistory, CardError> {
        let byte = |tag| -> Result<u8, CardError> {
            Ok(match tlv::find(&value, tag)? {
                Some([b]) => (*b).min(20),
                _ => 0,
            })
        };
        Ok(KeyHistory {
            on_card_certs: byte(0xC1)?,
            off_card_certs: byte(0xC2)?,
            url: tlv::find(&value, 0xF3)?.map(<[u8]>::to_vec),
        })
    })();
    match parsed {
        Ok(h) => Ok(Some(h)),
        Err(e) => {
            log::warn!("Key History does not parse ({e}): no retired keys are read");
            Ok(None)
        }
    }
}

/// Writes Key History (needs the management key).
pub fn write_key_history(ch: &mut dyn Channel, history: &KeyHistory) -> Result<(), CardError> {
    let mut value = Vec::new();
    tlv::push_do(&mut value, 0xC1, &[history.on_card_certs]);
    tlv::push_do(&mut value, 0xC2, &[history.off_card_certs]);
    if let Some(url) = &history.url {
        tlv::push_do(&mut value, 0xF3, url);
    }
    tlv::push_do(&mut value, 0xFE, &[]);
    super::put_data(ch, KEY_HISTORY_TAG, &value)
}

/// Whether ADMIN DATA says a management key is stored PIN-protected.
pub fn management_key_is_protected(ch: &mut dyn Channel) -> Result<bool, CardError> {
    let Some(admin) = super::get_optional(ch, ADMIN_DATA_TAG)? else {
        return Ok(false);
    };
    let Some(inner) = tlv::find(&admin, 0x80)? else {
        return Ok(false);
    };
    Ok(matches!(tlv::find(inner, 0x81)?, Some([flags]) if flags & 0x02 != 0))
}

/// The PIN-protected management key (ykman format: 5FC109 { 88 { 89 key } }); needs the PIN
/// verified. `None` when none is stored.
pub fn stored_management_key(
    ch: &mut dyn Channel,
) -> Result<Option<Zeroizing<Vec<u8>>>, CardError> {
    if !management_key_is_protected(ch)? {
        return Ok(None);
    }
    let Some(protected) = super::get_data(ch, PROTECTED_DATA_TAG)?.map(Zeroizing::new) else {
        return Ok(None);
    };
    let Some(inner) = tlv::find(&protected, 0x88)? else {
        return Ok(None);
    };
    Ok(tlv::find(inner, 0x89)?.map(|k| Zeroizing::new(k.to_vec())))
}

/// Stores `key` PIN-protected in the ykman format and flags it in ADMIN DATA (needs the
/// management key and the PIN).
pub fn store_management_key(ch: &mut dyn Channel, key: &[u8]) -> Result<(), CardError> {
    // The flag goes first: a crash between the two writes leaves the flag with the object as
    // it was (the key being set still pending in it), never the key stored without the flag.
    flag_management_key_protected(ch)?;
    let mut inner = Zeroizing::new(Vec::new());
    tlv::push_do(&mut inner, 0x89, key);
    let protected = Zeroizing::new(tlv::encode(0x88, &inner));
    super::put_data(ch, PROTECTED_DATA_TAG, &protected)
}

/// Sets ADMIN DATA's "management key stored PIN-protected" flag (when it is not set).
fn flag_management_key_protected(ch: &mut dyn Channel) -> Result<(), CardError> {
    if management_key_is_protected(ch)? {
        return Ok(());
    }
    let admin = tlv::encode(0x80, &tlv::encode(0x81, &[0x02]));
    super::put_data(ch, ADMIN_DATA_TAG, &admin)
}

fn reference_result(sw: StatusWord) -> Result<PinStatus, CardError> {
    match sw {
        StatusWord::Success => Ok(PinStatus::Verified),
        StatusWord::VerifyFail { tries: 0 } | StatusWord::AuthBlocked => Ok(PinStatus::Blocked),
        StatusWord::VerifyFail { tries } => Ok(PinStatus::TriesLeft(tries)),
        sw => Err(CardError::Status(sw)),
    }
}

/// CHANGE REFERENCE DATA for the PIN (80) or PUK (81). Both values are checked locally for
/// 6–8 characters first (a malformed value never reaches the card).
pub fn change_reference(
    ch: &mut dyn Channel,
    reference: u8,
    old: &[u8],
    new: &[u8],
) -> Result<PinStatus, CardError> {
    let malformed = CardError::Malformed("PIN and PUK must be 6 to 8 characters");
    let old = pad_pin(old).ok_or(CardError::Malformed(
        "PIN and PUK must be 6 to 8 characters",
    ))?;
    let new = pad_pin(new).ok_or(malformed)?;
    let mut data = Zeroizing::new(Vec::with_capacity(16));
    data.extend_from_slice(&old[..]);
    data.extend_from_slice(&new[..]);
    let cmd = Command::new(0x24, 0x00, reference)
        .with_data(&data)
        .with_le(None);
    reference_result(exchange(ch, &cmd)?.sw)
}

/// RESET RETRY COUNTER: unblocks the PIN with the PUK and sets `new_pin`. The result is the
/// PUK's status (a wrong PUK spends a PUK try).
pub fn reset_retry_counter(
    ch: &mut dyn Channel,
    puk: &[u8],
    new_pin: &[u8],
) -> Result<PinStatus, CardError> {
    let puk = pad_pin(puk).ok_or(CardError::Malformed("the PUK must be 6 to 8 characters"))?;
    let pin = pad_pin(new_pin).ok_or(CardError::Malformed("the PIN must be 6 to 8 characters"))?;
    let mut data = Zeroizing::new(Vec::with_capacity(16));
    data.extend_from_slice(&puk[..]);
    data.extend_from_slice(&pin[..]);
    let cmd = Command::new(0x2C, 0x00, key_ref::PIN)
        .with_data(&data)
        .with_le(None);
    reference_result(exchange(ch, &cmd)?.sw)
}

/// SET MANAGEMENT KEY (Yubico): replaces the management key (needs the current one).
pub fn set_management_key(
    ch: &mut dyn Channel,
    algorithm: super::ManagementAlgorithm,
    key: &[u8],
) -> Result<(), CardError> {
    if key.len() != algorithm.key_len() {
        return Err(CardError::Malformed("management key has the wrong length"));
    }
    let mut data = Zeroizing::new(vec![algorithm.id(), key_ref::MANAGEMENT, key.len() as u8]);
    data.extend_from_slice(key);
    let cmd = Command::new(0xFF, 0xFF, 0xFF)
        .with_data(&data)
        .with_le(None);
    exchange(ch, &cmd)?.success()?;
    Ok(())
}

/// Tag inside the PIN-protected object (88 …) where Tessera keeps a management key it is
/// about to set (algorithm byte, then the key) beside the current one (89), so that a crash
/// between storing and setting it loses neither. ykman reads only 89.
const PENDING_KEY_TAG: tlv::Tag = 0x8F;

/// Stores `new` as the pending management key beside `current` (the one the card has now,
/// `None` for the factory default), PIN-protected; ADMIN DATA is left as it is. Needs the
/// management key and the PIN.
pub fn store_pending_management_key(
    ch: &mut dyn Channel,
    current: Option<&[u8]>,
    algorithm: super::ManagementAlgorithm,
    new: &[u8],
) -> Result<(), CardError> {
    let mut inner = Zeroizing::new(Vec::new());
    if let Some(current) = current {
        tlv::push_do(&mut inner, 0x89, current);
    }
    let mut pending = Zeroizing::new(vec![algorithm.id()]);
    pending.extend_from_slice(new);
    tlv::push_do(&mut inner, PENDING_KEY_TAG, &pending);
    let protected = Zeroizing::new(tlv::encode(0x88, &inner));
    super::put_data(ch, PROTECTED_DATA_TAG, &protected)
}

/// Finishes a management-key change begun by [`store_pending_management_key`]: whichever
/// key the card has now (the pending one, or the old one, which is then replaced by the
/// pending one), the pending key ends up set on the card and stored PIN-protected as ykman
/// stores it. Authenticates by itself; needs the PIN verified. Nothing pending: no change.
pub fn settle_management_key(ch: &mut dyn Channel) -> Result<(), CardError> {
    use super::{authenticate_management, ManagementAlgorithm};
    let protected = super::get_data(ch, PROTECTED_DATA_TAG)?
        .map(Zeroizing::new)
        .unwrap_or_default();
    let inner = tlv::find(&protected, 0x88)?.unwrap_or_default();
    let Some(pending) = tlv::find(inner, PENDING_KEY_TAG)? else {
        // Nothing pending: authenticate with the stored key (else the default) as usual.
        let meta = super::keys::reference_metadata(ch, super::key_ref::MANAGEMENT)?;
        let alg = meta
            .and_then(|m| ManagementAlgorithm::from_id(m.algorithm))
            .unwrap_or(ManagementAlgorithm::TripleDes);
        return match tlv::find(inner, 0x89)? {
            Some(key) => {
                authenticate_management(ch, alg, key)?;
                flag_management_key_protected(ch)
            }
            None => authenticate_management(ch, alg, &super::DEFAULT_MANAGEMENT_KEY),
        };
    };
    let (&alg_id, new) = pending
        .split_first()
        .ok_or(CardError::Malformed("pending management key is empty"))?;
    let algorithm = ManagementAlgorithm::from_id(alg_id)
        .ok_or(CardError::Malformed("pending management key algorithm"))?;
    let new = Zeroizing::new(new.to_vec());
    let current = tlv::find(inner, 0x89)?.map(|k| Zeroizing::new(k.to_vec()));
    let rejected = |e: &CardError| matches!(e, CardError::Status(_) | CardError::Malformed(_));
    match authenticate_management(ch, algorithm, &new) {
        Ok(()) => {}
        Err(e) if rejected(&e) => {
            // The card still has the old key: set the pending one now.
            let meta = super::keys::reference_metadata(ch, super::key_ref::MANAGEMENT)?;
            let old_alg = meta
                .and_then(|m| ManagementAlgorithm::from_id(m.algorithm))
                .unwrap_or(ManagementAlgorithm::TripleDes);
            let old: &[u8] = current
                .as_deref()
                .map_or(&super::DEFAULT_MANAGEMENT_KEY[..], |k| &k[..]);
            authenticate_management(ch, old_alg, old)?;
            set_management_key(ch, algorithm, &new)?;
            authenticate_management(ch, algorithm, &new)?;
        }
        Err(e) => return Err(e),
    }
    store_management_key(ch, &new)
}

/// What blocking the PIN and PUK took before a factory reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetReport {
    /// Wrong PINs presented to block the PIN.
    pub pin_tries_spent: u8,
    /// Wrong PUKs presented to block the PUK.
    pub puk_tries_spent: u8,
}

/// Sends `cmd` (a check with a wrong value) until the card says blocked; returns how many
/// tries it spent (at most 255: a counter is one byte).
fn spend_tries(ch: &mut dyn Channel, cmd: &Command) -> Result<u8, CardError> {
    let mut spent = 0u8;
    for _ in 0..255 {
        match exchange(ch, cmd)?.sw {
            StatusWord::VerifyFail { tries: 0 } => return Ok(spent.saturating_add(1)),
            StatusWord::VerifyFail { .. } => spent = spent.saturating_add(1),
            StatusWord::AuthBlocked => return Ok(spent),
            StatusWord::Success => {
                return Err(CardError::Malformed(
                    "the card accepted an impossible PIN or PUK",
                ))
            }
            sw => return Err(CardError::Status(sw)),
        }
    }
    Ok(spent)
}

/// A wrong value that cannot be anyone's real PIN or PUK by accident (PINs and PUKs are
/// digits on every card Tessera sets up): used to block both before a factory reset.
const BLOCKING_VALUE: &[u8] = b"\xFE\xFE\xFE\xFE\xFE\xFE\xFE\xFE";

/// Factory reset (Yubico RESET, INS FB): the card erases every key, certificate and object
/// and goes back to the factory PIN, PUK and management key. Cards allow it only while PIN and
/// PUK are both blocked, so both are blocked first with a value no holder uses (the holder
/// asked for the erase; this is not a retry on their behalf) — but only after the card has
/// shown it knows the command: RESET is sent first, and a card that does not know it answers
/// so with nothing blocked (a YubiKey answers 6985, "not while PIN and PUK work").
pub fn factory_reset(ch: &mut dyn Channel) -> Result<ResetReport, CardError> {
    let mut report = ResetReport::default();
    let cmd = Command::new(0xFB, 0x00, 0x00).with_le(None);
    match exchange(ch, &cmd)?.sw {
        StatusWord::Success => return Ok(report),
        StatusWord::ConditionsNotSatisfied => {}
        sw => return Err(CardError::Status(sw)),
    }
    let mut data = Zeroizing::new(BLOCKING_VALUE.to_vec());
    let verify = Command::new(0x20, 0x00, key_ref::PIN)
        .with_data(&data)
        .with_le(None);
    report.pin_tries_spent = spend_tries(ch, &verify)?;
    data.extend_from_slice(BLOCKING_VALUE);
    let unblock = Command::new(0x2C, 0x00, key_ref::PIN)
        .with_data(&data)
        .with_le(None);
    report.puk_tries_spent = spend_tries(ch, &unblock)?;
    exchange(ch, &cmd)?.success()?;
    Ok(report)
}
