//! The control manager's typed changes to a card: an e-Cert loaded whole, a renewal key
//! staged and installed, a slot emptied, first-use set-up, retry counts, and repair. Each is
//! one change of the card's change protocol in one transaction (all or nothing for every
//! later reader, finished or undone by whoever opens the card after a crash), after every
//! credential it needs was verified.

use super::{err, Library};
use crate::applet::piv::change::{self, step, Change, Kind, Recovered};
use crate::applet::piv::{self, admin, plans, KeyAlgorithm, KeySlot, PinPolicy, PinStatus};
use crate::card::{CardError, Channel, StatusWord};
use crate::token::slot::{Login, Problem};
use crate::token::write;
use crate::token::{Attr, Error, Result};
use cryptoki_sys::*;
use zeroize::Zeroizing;

/// What `repair` did.
#[derive(Debug, Clone, Default)]
pub struct Repair {
    /// The unfinished change found, and what was done with it.
    pub recovered: Option<Recovered>,
    /// Certificates removed because the key in their slot is not theirs (or there is none):
    /// slot and the certificate's DER, so the caller can keep a copy.
    pub removed: Vec<(KeySlot, Vec<u8>)>,
}

/// A wrong credential, as the card answered it.
fn credential_error(status: PinStatus) -> Error {
    match status {
        PinStatus::Verified => Error::new(CKR_OK),
        PinStatus::TriesLeft(_) => Error::new(CKR_PIN_INCORRECT),
        PinStatus::Blocked => Error::new(CKR_PIN_LOCKED),
    }
}

type CardResult<T> = std::result::Result<T, CardError>;

impl Library {
    /// Loads an e-Cert whole into `slot`: the private key (a C_CreateObject template), its
    /// certificate and CA chain (concatenated DER, may be empty), as one change.
    pub fn load_ecert(
        &self,
        h: CK_SESSION_HANDLE,
        slot: KeySlot,
        key_template: &[Attr],
        certificate: &[u8],
        chain: &[u8],
    ) -> Result<()> {
        let (s, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }
        self.with_card(&s, |state| {
            write::load_ecert(&s.source, state, slot, key_template, certificate, chain)
        })
    }

    /// Generates a renewal key (staged: a counted retired slot with a key and no
    /// certificate); `reuse` overwrites an earlier staged key. Returns the staged slot.
    pub fn stage_renewal_key(
        &self,
        h: CK_SESSION_HANDLE,
        algorithm: KeyAlgorithm,
        policy: PinPolicy,
        reuse: Option<KeySlot>,
    ) -> Result<KeySlot> {
        let (s, _) = self.session_slot(h)?;
        self.with_card(&s, |state| {
            write::run_change(&s.source, state, |ch, _| {
                let (slot, _) = plans::stage_renewal(ch, algorithm, policy, reuse)?;
                Ok(Ok(slot))
            })
        })
    }

    /// Installs a renewed certificate with the key staged in `staged`; the old key and
    /// certificate of `slot` go to `staged`. `chain` (concatenated DER) replaces the CA chain
    /// kept beside the certificate; `None` keeps it.
    pub fn install_renewal(
        &self,
        h: CK_SESSION_HANDLE,
        slot: KeySlot,
        staged: KeySlot,
        certificate: &[u8],
        chain: Option<&[u8]>,
    ) -> Result<()> {
        let (s, _) = self.session_slot(h)?;
        self.with_card(&s, |state| {
            write::run_change(&s.source, state, |ch, _| {
                plans::install_renewal(ch, slot, staged, certificate, chain)?;
                Ok(Ok(()))
            })
        })
    }

    /// Proves the session's cached card contents current (reading the card again when
    /// another program changed it), as C_OpenSession does.
    pub fn check_card(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let (s, _) = self.session_slot(h)?;
        self.with_current_card(&s, |_| Ok(()))
    }

    /// Factory reset of the session's card (every key and certificate erased; factory PIN,
    /// PUK and management key): PIN and PUK are blocked first, as the card requires. The
    /// caller has the holder's explicit confirmation.
    pub fn reset_card(&self, h: CK_SESSION_HANDLE) -> Result<admin::ResetReport> {
        let (s, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }
        self.with_card(&s, |state| {
            let out = state.transact(&s.source, false, |ch, card| {
                let report = match admin::factory_reset(ch) {
                    Ok(r) => r,
                    Err(CardError::Status(
                        StatusWord::InsNotSupported | StatusWord::ClaNotSupported,
                    )) => return Ok(Err(Error::new(CKR_FUNCTION_NOT_SUPPORTED))),
                    Err(e) => return Err(e),
                };
                card.reread(ch)?;
                Ok(Ok(report))
            })?;
            state.login = Login::Public;
            state.so_puk = None;
            out
        })
    }

    /// The CA chain Tessera keeps beside the certificate of `slot` (concatenated DER; empty
    /// when there is none).
    pub fn read_chain(&self, h: CK_SESSION_HANDLE, slot: KeySlot) -> Result<Vec<u8>> {
        let (s, _) = self.session_slot(h)?;
        self.with_card(&s, |state| {
            state.transact(&s.source, false, |ch, _| {
                Ok(piv::get_optional(ch, slot.chain_tag())?.unwrap_or_default())
            })
        })
    }

    /// Whether the card's management key is still the factory default (`None`: the card does
    /// not say).
    pub fn management_key_is_default(&self, h: CK_SESSION_HANDLE) -> Result<Option<bool>> {
        let (s, _) = self.session_slot(h)?;
        self.with_card(&s, |state| {
            state.transact(&s.source, false, |ch, _| {
                Ok(piv::keys::reference_metadata(ch, piv::key_ref::MANAGEMENT)?
                    .map(|m| m.is_default))
            })
        })
    }

    /// A private-key operation with the key in `slot` whatever its certificate allows: the
    /// control manager's renewal proofs (a staged key without certificate signs its request,
    /// a key-management key proves its owner). `input` is prepared by the host as for C_Sign
    /// (a padded block for RSA, the hash for ECDSA); `pin`, when given, is presented first in
    /// the same transaction (keys that want it before every use). The user must be logged in.
    pub fn private_operation_in_slot(
        &self,
        h: CK_SESSION_HANDLE,
        slot: KeySlot,
        input: &[u8],
        pin: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (s, _) = self.session_slot(h)?;
        self.with_card(&s, |state| {
            if state.login != Login::User {
                return err(CKR_USER_NOT_LOGGED_IN);
            }
            let algorithm = state
                .card
                .as_ref()
                .and_then(|c| c.contents.entry(slot))
                .map(|e| e.algorithm)
                .ok_or(Error::new(CKR_KEY_HANDLE_INVALID))?;
            state.transact(&s.source, true, |ch, card| {
                if let Some(pin) = pin {
                    let status = piv::verify_pin(ch, Some(pin))?;
                    card.pin.record(status);
                    if status != PinStatus::Verified {
                        return Ok(Err(credential_error(status)));
                    }
                }
                Ok(Ok(piv::keys::private_operation(
                    ch, slot, algorithm, input,
                )?))
            })?
        })
    }

    /// Empties `slot`: key, certificate and chain.
    pub fn clear_slot(&self, h: CK_SESSION_HANDLE, slot: KeySlot) -> Result<()> {
        let (s, _) = self.session_slot(h)?;
        self.with_card(&s, |state| {
            write::run_change(&s.source, state, |ch, card| {
                plans::clear(ch, write::caps(card), slot, true)?;
                Ok(Ok(()))
            })
        })
    }

    /// Finishes or undoes an unfinished change, and removes certificates whose slot holds
    /// another key or none (the card cannot vouch for them). Needs the user logged in.
    pub fn repair(&self, h: CK_SESSION_HANDLE) -> Result<Repair> {
        let (s, _) = self.session_slot(h)?;
        self.with_card(&s, |state| {
            if state.login != Login::User {
                return err(CKR_USER_NOT_LOGGED_IN);
            }
            state.transact(&s.source, true, |ch, card| {
                let mut out = Repair::default();
                card.reread(ch)?;
                if card.contents.pending.is_some() {
                    out.recovered = card.recover(ch)?;
                    if out.recovered.is_none() {
                        return Ok(Err(Error::new(CKR_FUNCTION_FAILED)));
                    }
                }
                let foreign: Vec<KeySlot> = card
                    .contents
                    .problems
                    .iter()
                    .filter_map(|p| match p {
                        Problem::Mismatch(s) | Problem::CertificateWithoutKey(s) => Some(*s),
                        _ => None,
                    })
                    .collect();
                if !foreign.is_empty() {
                    if let Err(e) = write::authenticate(ch)? {
                        return Ok(Err(e));
                    }
                    for slot in foreign {
                        if let Some(der) = admin::read_certificate(ch, slot)? {
                            out.removed.push((slot, der));
                        }
                        plans::clear(ch, write::caps(card), slot, false)?;
                    }
                    card.reread(ch)?;
                }
                Ok(Ok(out))
            })?
        })
    }

    /// First-use set-up in one transaction: the PIN is verified and the management key
    /// checked before anything changes; then PUK, PIN and a new management key (stored
    /// PIN-protected as ykman does), each step recorded on the card.
    pub fn setup_card(
        &self,
        h: CK_SESSION_HANDLE,
        credentials: &SetupCredentials<'_>,
        new_key: Option<(piv::ManagementAlgorithm, &[u8])>,
    ) -> Result<()> {
        let c = credentials;
        for v in [c.pin, c.new_pin, c.puk, c.new_puk] {
            if piv::pad_pin(v).is_none() {
                return err(CKR_PIN_LEN_RANGE);
            }
        }
        let (s, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }
        self.with_card(&s, |state| {
            let was_user = state.login == Login::User;
            state.transact(&s.source, false, |ch, card| {
                let status = piv::verify_pin(ch, Some(c.pin))?;
                card.pin.record(status);
                if status != PinStatus::Verified {
                    return Ok(Err(credential_error(status)));
                }
                if let Err(e) = write::authenticate(ch)? {
                    return Ok(Err(e));
                }
                let current = admin::stored_management_key(ch)?;
                let mut change = Change::begin(ch, Kind::Setup, &[], 0)?;
                let status = admin::change_reference(ch, piv::key_ref::PUK, c.puk, c.new_puk)?;
                card.puk.record(status);
                if status != PinStatus::Verified {
                    change.finish(ch)?;
                    return Ok(Err(credential_error(status)));
                }
                change.mark_steps(ch, step::PUK_CHANGED)?;
                let status = admin::change_reference(ch, piv::key_ref::PIN, c.pin, c.new_pin)?;
                card.pin.record(status);
                if status != PinStatus::Verified {
                    return Err(CardError::Malformed(
                        "the card refused the PIN it just verified",
                    ));
                }
                change.mark_steps(ch, step::PIN_CHANGED)?;
                piv::verify_pin(ch, Some(c.new_pin))?;
                if let Some((algorithm, new_key)) = new_key {
                    admin::store_pending_management_key(
                        ch,
                        current.as_deref().map(|k| &k[..]),
                        algorithm,
                        new_key,
                    )?;
                    change.mark_steps(ch, step::KEY_STORED)?;
                    admin::set_management_key(ch, algorithm, new_key)?;
                    piv::authenticate_management(ch, algorithm, new_key)?;
                    change.mark_steps(ch, step::KEY_SET)?;
                    admin::store_management_key(ch, new_key)?;
                }
                change.finish(ch)?;
                card.reread(ch)?;
                // Set-up logs nobody in: the card forgets the PIN it verified.
                if !was_user {
                    piv::unverify_pin(ch)?;
                }
                Ok(Ok(()))
            })?
        })
    }

    /// Sets the PIN and PUK retry counts in one transaction. The card resets PIN and PUK to
    /// their factory values when it does this, so both are verified first and put back
    /// right after, each step recorded on the card.
    pub fn set_retry_counts(
        &self,
        h: CK_SESSION_HANDLE,
        pin: &[u8],
        puk: &[u8],
        pin_tries: u8,
        puk_tries: u8,
    ) -> Result<()> {
        if piv::pad_pin(pin).is_none() || piv::pad_pin(puk).is_none() {
            return err(CKR_PIN_LEN_RANGE);
        }
        let (s, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }
        let (pin, puk) = (Zeroizing::new(pin.to_vec()), Zeroizing::new(puk.to_vec()));
        self.with_card(&s, |state| {
            state.transact(&s.source, false, |ch, card| {
                let status = piv::verify_pin(ch, Some(&pin))?;
                card.pin.record(status);
                if status != PinStatus::Verified {
                    return Ok(Err(credential_error(status)));
                }
                // PIV cannot VERIFY the PUK: changing it to itself proves it.
                let status = admin::change_reference(ch, piv::key_ref::PUK, &puk, &puk)?;
                card.puk.record(status);
                if status != PinStatus::Verified {
                    return Ok(Err(credential_error(status)));
                }
                if let Err(e) = write::authenticate(ch)? {
                    return Ok(Err(e));
                }
                let mut change = Change::begin(ch, Kind::PinRetries, &[], 0)?;
                match set_pin_retries(ch, pin_tries, puk_tries) {
                    Ok(()) => {}
                    Err(CardError::Status(
                        StatusWord::InsNotSupported | StatusWord::ClaNotSupported,
                    )) => {
                        // Nothing changed: the card lacks the command.
                        change.finish(ch)?;
                        return Ok(Err(Error::new(CKR_FUNCTION_NOT_SUPPORTED)));
                    }
                    Err(e) => return Err(e),
                }
                change.mark_steps(ch, step::RETRIES_SET)?;
                if pin[..] != DEFAULT_PIN[..] {
                    admin::change_reference(ch, piv::key_ref::PIN, DEFAULT_PIN, &pin)?;
                }
                change.mark_steps(ch, step::PIN_RESTORED)?;
                if puk[..] != DEFAULT_PUK[..] {
                    admin::change_reference(ch, piv::key_ref::PUK, DEFAULT_PUK, &puk)?;
                }
                change.mark_steps(ch, step::PUK_RESTORED)?;
                change.finish(ch)?;
                card.reread(ch)?;
                Ok(Ok(()))
            })?
        })
    }
}

/// The factory PIN of PIV cards and YubiKeys.
const DEFAULT_PIN: &[u8] = b"123456";
/// The factory PUK.
const DEFAULT_PUK: &[u8] = b"12345678";

/// SET PIN RETRIES (Yubico): needs the PIN verified and the management key.
fn set_pin_retries(ch: &mut dyn Channel, pin_tries: u8, puk_tries: u8) -> CardResult<()> {
    let cmd = crate::card::Command::new(0xFA, pin_tries, puk_tries).with_le(None);
    crate::card::exchange(ch, &cmd)?.success().map(|_| ())
}

/// The four values first-use set-up needs.
pub struct SetupCredentials<'a> {
    /// Current PIN.
    pub pin: &'a [u8],
    /// New PIN.
    pub new_pin: &'a [u8],
    /// Current PUK.
    pub puk: &'a [u8],
    /// New PUK.
    pub new_puk: &'a [u8],
}

/// Whether an unfinished change is one the holder finishes with their secrets (set-up,
/// retry counts), and how far it got, for messages.
pub fn credential_steps(kind: Kind, steps: u8) -> Option<&'static str> {
    match kind {
        Kind::Setup if steps & step::KEY_SET != 0 => {
            Some("set-up had finished everything but its last write: the PIN, the PUK and the management key are the new ones")
        }
        Kind::Setup if steps & step::PIN_CHANGED != 0 => {
            Some("set-up was interrupted after changing the PUK and the PIN: both are the new ones; the management key was being replaced")
        }
        Kind::Setup if steps & step::PUK_CHANGED != 0 => {
            Some("set-up was interrupted after changing the PUK: the PUK is the new one, the PIN is still the old one; run `tessera setup` again with the new PUK as the current one")
        }
        Kind::Setup => Some("set-up was interrupted before it changed anything"),
        Kind::PinRetries if steps & step::PUK_RESTORED != 0 => {
            Some("the retry counts were set and the PIN and PUK put back")
        }
        Kind::PinRetries if steps & step::PIN_RESTORED != 0 => {
            Some("setting the retry counts was interrupted: the PIN is yours again, the PUK is the factory value 12345678; change it with `tessera puk change`")
        }
        Kind::PinRetries if steps & step::RETRIES_SET != 0 => {
            Some("setting the retry counts was interrupted: the PIN and PUK are the factory values 123456 and 12345678; set yours again with `tessera setup`")
        }
        Kind::PinRetries => Some("setting the retry counts was interrupted before it changed anything"),
        _ => None,
    }
}

/// The change record's view for messages: what an unfinished change does and which slots.
pub fn describe_pending(p: &change::Pending) -> String {
    let slots: Vec<String> = p
        .targets
        .iter()
        .map(|t| t.slot)
        .filter(|s| s.retired_number().is_none())
        .map(|s| s.to_string())
        .collect();
    if slots.is_empty() {
        p.kind.describe().to_owned()
    } else {
        format!("{} (slot {})", p.kind.describe(), slots.join(", "))
    }
}
