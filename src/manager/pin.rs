//! PIN and PUK use cases: change, unblock, retry counts, and first-use set-up (replace the
//! factory PIN and PUK, and a random management key stored PIN-protected the way ykman does).

use super::{fail, with, CardSession, Result};
use crate::applet::piv::{self, ManagementAlgorithm};
use cryptoki_sys::*;
use zeroize::Zeroizing;

fn check_format(what: &str, v: &[u8]) -> Result<()> {
    if piv::pad_pin(v).is_none() {
        return fail(format!(
            "the {what} must be 6 to 8 characters (nothing was sent to the card)"
        ));
    }
    Ok(())
}

/// `tessera pin change`: old PIN → new PIN.
pub fn change_pin(card: &CardSession, old: &[u8], new: &[u8]) -> Result<()> {
    check_format("new PIN", new)?;
    with(|lib| lib.set_pin(card.handle, old, new)).map_err(|e| card.explain(e, true))
}

/// `tessera puk change`: old PUK → new PUK.
pub fn change_puk(card: &CardSession, old: &[u8], new: &[u8]) -> Result<()> {
    check_format("new PUK", new)?;
    card.login_so(old)?;
    let r = with(|lib| lib.set_pin(card.handle, old, new)).map_err(|e| card.explain(e, false));
    let _ = with(|lib| lib.logout(card.handle));
    r
}

/// `tessera pin unblock`: the PUK sets a new PIN and resets its counter.
pub fn unblock(card: &CardSession, puk: &[u8], new_pin: &[u8]) -> Result<()> {
    check_format("new PIN", new_pin)?;
    card.login_so(puk)?;
    let r = with(|lib| lib.init_pin(card.handle, new_pin)).map_err(|e| card.explain(e, false));
    let _ = with(|lib| lib.logout(card.handle));
    r
}

/// `tessera pin retries`: sets how many tries the PIN and PUK get. The card resets both to
/// their factory values when it does this (as YubiKeys do), so the holder's PIN and PUK are
/// both proved first and put back right after, in the same change.
pub fn set_retries(
    card: &CardSession,
    pin: &[u8],
    puk: &[u8],
    pin_tries: u8,
    puk_tries: u8,
) -> Result<()> {
    if !(1..=15).contains(&pin_tries) || !(1..=15).contains(&puk_tries) {
        return fail("try counts must be between 1 and 15");
    }
    check_format("PIN", pin)?;
    check_format("PUK", puk)?;
    card.login_user(pin)?;
    super::with_card_feature(
        "this card cannot change its retry counts (it lacks SET PIN RETRIES); nothing was changed",
        |lib| lib.set_retry_counts(card.handle, pin, puk, pin_tries, puk_tries),
    )
    .map_err(|e| card.explain(e, false))
}

/// What `tessera setup` did.
#[derive(Debug, serde::Serialize)]
pub struct SetupReport {
    /// The PIN was replaced.
    pub pin_changed: bool,
    /// The PUK was replaced.
    pub puk_changed: bool,
    /// Algorithm of the new management key (or why it is unchanged).
    pub management_key: String,
    /// A new management key was set.
    pub management_key_changed: bool,
}

/// `tessera setup`: first use of a card.
pub fn setup(
    card: &CardSession,
    pin: &[u8],
    new_pin: &[u8],
    puk: &[u8],
    new_puk: &[u8],
) -> Result<SetupReport> {
    check_format("new PIN", new_pin)?;
    check_format("new PUK", new_puk)?;
    if new_pin == b"123456" || new_puk == b"12345678" {
        return fail("choose a PIN and PUK other than the factory values");
    }
    check_format("PIN", pin)?;
    check_format("PUK", puk)?;
    let version = with(|lib| lib.card_snapshot(card.handle))?.0.version;
    // AES-192 where the card has it (YubiKey 5.4 and later, the virtual card), else 3DES; a
    // card without Yubico's extensions (no GET VERSION) has no command to change the key.
    let algorithm = match version {
        Some([major, minor, _]) if (major, minor) >= (5, 4) => Some(ManagementAlgorithm::Aes192),
        Some(_) => Some(ManagementAlgorithm::TripleDes),
        None => None,
    };
    let key = algorithm.map(|a| {
        let mut key = Zeroizing::new(vec![0u8; a.key_len()]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        key
    });
    // The PIN is verified and the management key checked before anything changes; a wrong
    // PUK then changes nothing either (the PUK goes first).
    let credentials = crate::token::library::SetupCredentials {
        pin,
        new_pin,
        puk,
        new_puk,
    };
    let new_key = algorithm.zip(key.as_deref().map(|k| &k[..]));
    with(|lib| lib.setup_card(card.handle, &credentials, new_key)).map_err(|e| {
        let wrong_puk = e.message == "wrong PIN or PUK"
            && with(|lib| lib.card_snapshot(card.handle))
                .is_ok_and(|(_, p, _)| p.tries_left == p.total);
        card.explain(e, !wrong_puk)
    })?;
    let _ = with(|lib| lib.logout(card.handle));
    Ok(SetupReport {
        pin_changed: true,
        puk_changed: true,
        management_key_changed: algorithm.is_some(),
        management_key: algorithm.map_or_else(
            || "unchanged: the card has none of Yubico's extensions (no GET VERSION), so Tessera leaves its management key as issued".to_owned(),
            |a| format!("{a:?}"),
        ),
    })
}

/// Whether a failure was a wrong credential (for exit codes).
pub fn is_wrong_credential(rv: CK_RV) -> bool {
    matches!(rv, CKR_PIN_INCORRECT | CKR_PIN_LOCKED)
}

/// What `tessera reset` did.
#[derive(Debug, serde::Serialize)]
pub struct ResetReport {
    /// Wrong PINs presented to block the PIN first (the card resets only then).
    pub pin_tries_spent: u8,
    /// Wrong PUKs presented to block the PUK first.
    pub puk_tries_spent: u8,
}

/// `tessera reset`: the card back to its factory state, every key erased (the caller has the
/// holder's typed confirmation).
pub fn reset(card: &CardSession) -> Result<ResetReport> {
    let r = super::with_card_feature(
        "this card cannot be reset by its holder (it lacks the command): ask your issuer (nothing was changed)",
        |lib| lib.reset_card(card.handle),
    )?;
    Ok(ResetReport {
        pin_tries_spent: r.pin_tries_spent,
        puk_tries_spent: r.puk_tries_spent,
    })
}
