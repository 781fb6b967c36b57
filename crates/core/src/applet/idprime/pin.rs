//! IDPrime PINs: VERIFY, the status query (VERIFY without data, whose 63Cx carries the counter),
//! and CHANGE REFERENCE DATA, with the reference (0x11, the 940's 0x83) and the padding each
//! model wants (ASCII, zero-padded to 16 bytes on 840/940/generic). Lengths are checked here,
//! before the card sees anything, so a malformed PIN never spends a try. There is no PUK: the
//! unblock is the issuer's (admin key), and says so.

use super::keys::PinRef;
use super::{command, transmit, Error, Profile, Unsupported};
use crate::card::{Channel, StatusWord};
use zeroize::Zeroizing;

/// Shortest PIN the applet takes (OpenSC's PIN object: min_length 4).
pub const PIN_MIN_LEN: usize = 4;
/// Longest PIN (max_length 16), also the padded length.
pub const PIN_MAX_LEN: usize = 16;

/// A PIN's state on the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    /// Verified in this card session.
    Verified,
    /// Not verified; this many tries are left.
    NotVerified {
        /// Tries left before the PIN blocks.
        tries_left: u8,
    },
    /// No tries left.
    Blocked,
}

/// Whether this PIN goes to the card zero-padded to 16 bytes: the 940's signature PIN always,
/// the user PIN on the models that pad.
pub fn pin_padded(profile: &Profile, pin: PinRef) -> bool {
    pin == PinRef::DigitalSignature || profile.model.pin_padded()
}

/// The PIN as the card takes it: its bytes (ASCII), zero-padded to 16 where the model wants
/// it. Refuses lengths outside 4..=16 (no try spent).
pub fn encode_pin(
    profile: &Profile,
    pin_ref: PinRef,
    pin: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if pin.len() < PIN_MIN_LEN {
        return Err(Error::PinFormat("the PIN must have at least 4 characters"));
    }
    if pin.len() > PIN_MAX_LEN {
        return Err(Error::PinFormat("the PIN must have at most 16 characters"));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(PIN_MAX_LEN));
    out.extend_from_slice(pin);
    if pin_padded(profile, pin_ref) {
        out.resize(PIN_MAX_LEN, 0x00);
    }
    Ok(out)
}

fn pin_result(sw: StatusWord) -> Result<(), Error> {
    if sw.is_success() {
        Ok(())
    } else {
        Err(Error::from_status(sw))
    }
}

/// VERIFY (`00 20 00 <ref> Lc <PIN>`). A wrong PIN is [`Error::WrongPin`] with the tries
/// left, a blocked one [`Error::Blocked`].
pub fn verify_pin(
    ch: &mut dyn Channel,
    profile: &Profile,
    pin_ref: PinRef,
    pin: &[u8],
) -> Result<(), Error> {
    let data = encode_pin(profile, pin_ref, pin)?;
    let sw = transmit(
        ch,
        &command(profile, 0x20, 0x00, pin_ref.reference(), &data, None),
    )?
    .sw;
    pin_result(sw)
}

/// The PIN's state without spending a try: VERIFY with no data (`00 20 00 <ref>`, P3=00
/// under T=0), answered 9000 (verified), 63Cx (x tries left) or 6983 (blocked).
pub fn pin_status(
    ch: &mut dyn Channel,
    profile: &Profile,
    pin_ref: PinRef,
) -> Result<PinStatus, Error> {
    let sw = transmit(
        ch,
        &command(profile, 0x20, 0x00, pin_ref.reference(), &[], None),
    )?
    .sw;
    match sw {
        StatusWord::Success => Ok(PinStatus::Verified),
        StatusWord::VerifyFail { tries: 0 } | StatusWord::AuthBlocked => Ok(PinStatus::Blocked),
        StatusWord::VerifyFail { tries } => Ok(PinStatus::NotVerified { tries_left: tries }),
        sw => Err(Error::from_status(sw)),
    }
}

/// CHANGE REFERENCE DATA (`00 24 00 <ref> Lc old‖new`), each part encoded as for VERIFY.
/// A wrong old PIN is [`Error::WrongPin`] with the tries left.
pub fn change_pin(
    ch: &mut dyn Channel,
    profile: &Profile,
    pin_ref: PinRef,
    old: &[u8],
    new: &[u8],
) -> Result<(), Error> {
    let old = encode_pin(profile, pin_ref, old)?;
    let new = encode_pin(profile, pin_ref, new)?;
    let mut data = Zeroizing::new(Vec::with_capacity(old.len() + new.len()));
    data.extend_from_slice(&old);
    data.extend_from_slice(&new);
    let sw = transmit(
        ch,
        &command(profile, 0x24, 0x00, pin_ref.reference(), &data, None),
    )?
    .sw;
    pin_result(sw)
}

/// Unblocking the PIN: IDPrime cards have no PUK; their unblock is a challenge–response with
/// the issuer's admin key, which neither OpenSC nor Tessera drives. Sends nothing.
pub fn unblock_pin(
    _ch: &mut dyn Channel,
    _profile: &Profile,
    _pin_ref: PinRef,
) -> Result<(), Error> {
    Err(Error::NotSupported(Unsupported::PinUnblock))
}
