//! The library instance between C_Initialize and C_Finalize: the slot table, the session
//! table, object handles, and the entry points the ABI layer calls. One global instance; a
//! forked child sees "not initialised" until it initialises itself.
//!
//! Locking: the session table and a slot's state are never held at the same time as another
//! slot's; the session table is released before any card I/O (operations are taken out of
//! the session, run, and put back).

use super::mechanism::{self};
use super::objects::{self, KeyEntry, ObjectId};
use super::session::{Handle, Operation, Session, SessionObject};
use super::slot::{Login, Part, Slot, SlotState, Source};
use super::{attr, Error, OutBuf, Result};
use crate::applet::piv::{self, PinStatus};
use crate::card::{Connectors, Location, ReaderInfo};
use cryptoki_sys::*;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

mod changes;
mod object_calls;
mod operations;

pub use changes::{credential_steps, describe_pending, Repair, SetupCredentials};
pub use operations::OperationKind;

/// Object handle table: a stable handle per object identity.
#[derive(Default)]
struct Handles {
    by_object: HashMap<Handle, CK_OBJECT_HANDLE>,
    by_handle: HashMap<CK_OBJECT_HANDLE, Handle>,
    next: CK_OBJECT_HANDLE,
}

impl Handles {
    fn handle(&mut self, h: Handle) -> CK_OBJECT_HANDLE {
        if let Some(&n) = self.by_object.get(&h) {
            return n;
        }
        self.next += 1;
        let n = self.next;
        self.by_object.insert(h, n);
        self.by_handle.insert(n, h);
        n
    }

    /// A handle for an object that has no stable identity (a session object).
    fn fresh(&mut self) -> CK_OBJECT_HANDLE {
        self.next += 1;
        self.next
    }

    fn forget(&mut self, n: CK_OBJECT_HANDLE) {
        if let Some(h) = self.by_handle.remove(&n) {
            self.by_object.remove(&h);
        }
    }
}

/// The initialised library.
pub struct Library {
    slots: RwLock<Vec<Arc<Slot>>>,
    /// Where cards are found (chosen by the program that initialises the library).
    connectors: Connectors,
    sessions: Mutex<HashMap<CK_SESSION_HANDLE, Session>>,
    next_session: Mutex<CK_SESSION_HANDLE>,
    handles: Mutex<Handles>,
    session_objects: Mutex<HashMap<CK_OBJECT_HANDLE, (CK_SESSION_HANDLE, SessionObject)>>,
    /// Whether each session's operation was continued by single-part or multi-part calls.
    stages: Mutex<HashMap<CK_SESSION_HANDLE, operations::Stage>>,
    presence: Mutex<HashMap<CK_SLOT_ID, bool>>,
    cancelled: AtomicBool,
    /// Each card shows a separate card-authentication token (decided at C_Initialize).
    card_auth_tokens: bool,
}

type Global = Option<(u32, Arc<Library>)>;

/// Slot IDs of card-authentication tokens: this plus the index of the card's main slot.
pub const CARD_AUTH_SLOT_BASE: CK_SLOT_ID = 0x100;

/// Whether cards get a separate card-authentication token (see [`Part`]): 0 as configured
/// (`card-auth-token`, see [`super::config`]; off by default), 1 yes, 2 no.
static CARD_AUTH_TOKENS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Chooses, before C_Initialize, whether each card shows up as one token whatever the
/// configuration says (`false`: everything, as the control manager wants it) or as a main
/// token plus a card-authentication token (`true`).
pub fn set_card_auth_tokens(separate: bool) {
    CARD_AUTH_TOKENS.store(if separate { 1 } else { 2 }, Ordering::SeqCst);
}

/// Whether this initialisation shows a separate card-authentication token per card.
fn card_auth_tokens() -> bool {
    match CARD_AUTH_TOKENS.load(Ordering::SeqCst) {
        1 => true,
        2 => false,
        _ => super::config::card_auth_token(),
    }
}

static LIBRARY: RwLock<Global> = RwLock::new(None);

/// C_Initialize: creates the library finding cards through `connectors`, in order
/// (CKR_CRYPTOKI_ALREADY_INITIALIZED when it exists in this process).
pub fn initialize(connectors: Connectors) -> Result<()> {
    let mut lib = LIBRARY.write();
    let pid = std::process::id();
    match lib.take() {
        Some((owner, mine)) if owner == pid => {
            *lib = Some((owner, mine));
            return Err(Error::new(CKR_CRYPTOKI_ALREADY_INITIALIZED));
        }
        // A forked child's copy of its parent's instance. Its PC/SC context and card handles
        // are the parent's: dropping them would send SCardDisconnect and SCardReleaseContext
        // for them over the inherited pcscd connection, and the parent's next APDU would fail.
        // It is never used here, and deliberately never dropped.
        Some(inherited) => std::mem::forget(inherited),
        None => {}
    }
    *lib = Some((pid, Arc::new(Library::new(connectors))));
    Ok(())
}

/// C_Finalize: drops the library and cancels blocked C_WaitForSlotEvent calls.
pub fn finalize() -> Result<()> {
    let taken = {
        let mut lib = LIBRARY.write();
        match lib.take() {
            Some((owner, l)) if owner == std::process::id() => l,
            other => {
                *lib = other;
                return Err(Error::new(CKR_CRYPTOKI_NOT_INITIALIZED));
            }
        }
    };
    taken.cancelled.store(true, Ordering::SeqCst);
    for c in &taken.connectors {
        c.cancel();
    }
    // A card this process logged in stays verified for every other program until it is
    // reset: log each one out, as the last C_CloseSession would have.
    let slots = taken.slots.read().clone();
    for slot in slots.iter().filter(|s| s.part != Part::CardAuth) {
        taken.logout_slot(slot);
    }
    Ok(())
}

/// Runs `f` with the library, or fails with CKR_CRYPTOKI_NOT_INITIALIZED (also in a forked
/// child that inherited its parent's instance).
pub fn with<R>(f: impl FnOnce(&Library) -> Result<R>) -> Result<R> {
    let lib = {
        let guard = LIBRARY.read();
        match guard.as_ref() {
            Some((owner, lib)) if *owner == std::process::id() => Arc::clone(lib),
            _ => return Err(Error::new(CKR_CRYPTOKI_NOT_INITIALIZED)),
        }
    };
    f(&lib)
}

fn err<T>(rv: CK_RV) -> Result<T> {
    Err(Error::new(rv))
}

/// Copies `data` to the caller's output, honouring the length-query convention.
fn deliver(data: &[u8], out: OutBuf<'_>) -> Result<usize> {
    match out {
        OutBuf::Query => Ok(data.len()),
        OutBuf::Into(buf) => match buf.get_mut(..data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                Ok(data.len())
            }
            None => Err(Error::buffer_too_small(data.len())),
        },
    }
}

fn pin_error(status: PinStatus) -> Error {
    match status {
        PinStatus::Verified => Error::new(CKR_OK),
        PinStatus::TriesLeft(_) => Error::new(CKR_PIN_INCORRECT),
        PinStatus::Blocked => Error::new(CKR_PIN_LOCKED),
    }
}

fn check_pin_format(pin: &[u8]) -> Result<()> {
    if piv::pad_pin(pin).is_some() {
        Ok(())
    } else {
        err(CKR_PIN_LEN_RANGE)
    }
}

/// Adds the slots of a new card source: its main slot (ID = how many cards came before) and,
/// unless turned off, its card-authentication slot ([`CARD_AUTH_SLOT_BASE`] + the same number).
fn add_card_slots(slots: &mut Vec<Arc<Slot>>, source: Source, separate: bool) {
    let index = slots.iter().filter(|s| s.part != Part::CardAuth).count() as CK_SLOT_ID;
    if index >= CARD_AUTH_SLOT_BASE {
        // Main slot IDs stay below the card-authentication range.
        log::warn!("more than {CARD_AUTH_SLOT_BASE} readers and virtual cards: {source:?} ignored");
        return;
    }
    if separate {
        let main = Slot::new(index, source, Part::Main);
        let card_auth = main.sibling(CARD_AUTH_SLOT_BASE + index, Part::CardAuth);
        slots.push(Arc::new(main));
        slots.push(Arc::new(card_auth));
    } else {
        slots.push(Arc::new(Slot::new(index, source, Part::Whole)));
    }
}

impl Library {
    fn new(connectors: Connectors) -> Self {
        let lib = Self {
            slots: RwLock::new(Vec::new()),
            connectors,
            sessions: Mutex::new(HashMap::new()),
            next_session: Mutex::new(0),
            handles: Mutex::new(Handles::default()),
            session_objects: Mutex::new(HashMap::new()),
            stages: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            cancelled: AtomicBool::new(false),
            card_auth_tokens: card_auth_tokens(),
        };
        lib.refresh_readers();
        lib
    }

    /// Every connector's readers (those of a connector that cannot be reached are left out),
    /// with a slot appended for each reader not seen before (slot IDs never move).
    fn refresh_readers(&self) -> Vec<ReaderInfo> {
        let mut all = Vec::new();
        for connector in &self.connectors {
            let Some(readers) = connector.readers() else {
                continue;
            };
            let mut slots = self.slots.write();
            for r in &readers {
                if !slots.iter().any(|s| s.source.location == r.location) {
                    let source = Source {
                        location: r.location.clone(),
                        connector: Arc::clone(connector),
                    };
                    add_card_slots(&mut slots, source, self.card_auth_tokens);
                }
            }
            all.extend(readers);
        }
        all
    }

    fn slot(&self, id: CK_SLOT_ID) -> Result<Arc<Slot>> {
        self.slots
            .read()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or(Error::new(CKR_SLOT_ID_INVALID))
    }

    /// Updates presence; drops a card that went away. Returns whether one is present.
    fn present(&self, slot: &Slot, state: &mut SlotState, readers: Option<&[ReaderInfo]>) -> bool {
        let present = slot.card_present(readers);
        if !present && state.card.is_some() {
            state.card_gone();
        }
        present
    }

    /// Locks a slot's state with a present, read card (CKR_TOKEN_NOT_PRESENT otherwise).
    fn with_card<R>(&self, slot: &Slot, f: impl FnOnce(&mut SlotState) -> Result<R>) -> Result<R> {
        self.with_card_checked(slot, false, f)
    }

    /// [`Library::with_card`] after proving the cached contents current when they were not
    /// read by this very call: one GET DATA of the card's change stamp, and the card read
    /// again when another program changed it (see [`super::slot::Card::revalidate`]). Called
    /// where a program looks at the card anew: C_OpenSession and C_FindObjectsInit.
    fn with_current_card<R>(
        &self,
        slot: &Slot,
        f: impl FnOnce(&mut SlotState) -> Result<R>,
    ) -> Result<R> {
        self.with_card_checked(slot, true, f)
    }

    fn with_card_checked<R>(
        &self,
        slot: &Slot,
        check: bool,
        f: impl FnOnce(&mut SlotState) -> Result<R>,
    ) -> Result<R> {
        let mut state = slot.state.lock();
        if !self.present(slot, &mut state, None) {
            return err(CKR_TOKEN_NOT_PRESENT);
        }
        let cached = state.card.is_some();
        state.card(&slot.source)?;
        if check && cached {
            state.transact(&slot.source, false, |ch, card| card.revalidate(ch))?;
        }
        f(&mut state)
    }

    /// Checks that `h` is an open session of a card still present, before the call's other
    /// arguments are looked at: PKCS#11 §5.1.7 puts CKR_SESSION_HANDLE_INVALID before a
    /// function's own errors.
    pub fn check_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.session_slot(h).map(|_| ())
    }

    /// The session's slot, checking the session is alive.
    fn session_slot(&self, h: CK_SESSION_HANDLE) -> Result<(Arc<Slot>, bool)> {
        let (slot_id, generation, rw) = {
            let sessions = self.sessions.lock();
            let s = sessions
                .get(&h)
                .ok_or(Error::new(CKR_SESSION_HANDLE_INVALID))?;
            (s.slot, s.generation, s.rw)
        };
        let slot = self.slot(slot_id)?;
        let current = slot.state.lock().generation;
        if current != generation {
            self.drop_session(h);
            return err(CKR_SESSION_HANDLE_INVALID);
        }
        Ok((slot, rw))
    }

    fn drop_session(&self, h: CK_SESSION_HANDLE) {
        self.sessions.lock().remove(&h);
        self.stages.lock().remove(&h);
        let mut objs = self.session_objects.lock();
        let gone: Vec<_> = objs
            .iter()
            .filter(|(_, (s, _))| *s == h)
            .map(|(n, _)| *n)
            .collect();
        let mut handles = self.handles.lock();
        for n in gone {
            objs.remove(&n);
            handles.forget(n);
        }
    }

    fn with_session<R>(
        &self,
        h: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session) -> Result<R>,
    ) -> Result<R> {
        let mut sessions = self.sessions.lock();
        let s = sessions
            .get_mut(&h)
            .ok_or(Error::new(CKR_SESSION_HANDLE_INVALID))?;
        f(s)
    }

    fn take_op(&self, h: CK_SESSION_HANDLE) -> Result<Operation> {
        self.with_session(h, |s| {
            s.op.take().ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))
        })
    }

    fn put_op(&self, h: CK_SESSION_HANDLE, op: Operation) {
        let _ = self.with_session(h, |s| {
            s.op = Some(op);
            Ok(())
        });
    }

    fn start_op(&self, h: CK_SESSION_HANDLE, op: Operation) -> Result<()> {
        self.with_session(h, |s| {
            if s.op.is_some() {
                return err(CKR_OPERATION_ACTIVE);
            }
            s.op = Some(op);
            Ok(())
        })?;
        self.stages.lock().remove(&h);
        Ok(())
    }

    /// The key entry behind a token object handle, checking it belongs to the session's token
    /// and is visible in the current login state.
    fn resolve(
        &self,
        slot: &Slot,
        object: CK_OBJECT_HANDLE,
        invalid: CK_RV,
    ) -> Result<(ObjectId, Option<KeyEntry>)> {
        let handle = self
            .handles
            .lock()
            .by_handle
            .get(&object)
            .copied()
            .ok_or(Error::new(invalid))?;
        let Handle::Token(slot_id, id) = handle;
        if slot_id != slot.id {
            return err(invalid);
        }
        self.with_card(slot, |state| {
            let login = state.login;
            let card = state
                .card
                .as_ref()
                .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
            let entry = id.slot().and_then(|s| card.contents.entry(s)).cloned();
            if !objects::object_ids(&card.contents.entries, slot.part).contains(&id) {
                return err(invalid);
            }
            if objects::is_private(id, entry.as_ref()) && login != Login::User {
                return err(invalid);
            }
            Ok((id, entry))
        })
    }

    // ---- slots and tokens -------------------------------------------------------------------

    /// C_GetSlotList.
    pub fn slot_list(&self, token_present: bool) -> Result<Vec<CK_SLOT_ID>> {
        let readers = self.refresh_readers();
        let slots = self.slots.read().clone();
        let mut out = Vec::new();
        for slot in slots {
            let mut state = slot.state.lock();
            if !token_present || self.present(&slot, &mut state, Some(&readers)) {
                out.push(slot.id);
            }
        }
        // Main tokens first (in the order their readers appeared), then card authentication.
        out.sort_unstable();
        Ok(out)
    }

    /// C_GetSlotInfo (no APDU).
    pub fn slot_info(&self, slot_id: CK_SLOT_ID) -> Result<CK_SLOT_INFO> {
        let slot = self.slot(slot_id)?;
        let present = {
            let mut state = slot.state.lock();
            self.present(&slot, &mut state, None)
        };
        let mut flags = CKF_REMOVABLE_DEVICE;
        if present {
            flags |= CKF_TOKEN_PRESENT;
        }
        if matches!(slot.source.location, Location::Reader(_)) {
            flags |= CKF_HW_SLOT;
        }
        let version = CK_VERSION { major: 0, minor: 0 };
        Ok(CK_SLOT_INFO {
            slotDescription: attr::padded::<64>(&slot.description()),
            manufacturerID: attr::padded::<32>(super::MANUFACTURER),
            flags,
            hardwareVersion: version,
            firmwareVersion: version,
        })
    }

    /// C_GetTokenInfo (no APDU once the card has been read).
    pub fn token_info(&self, slot_id: CK_SLOT_ID) -> Result<CK_TOKEN_INFO> {
        let slot = self.slot(slot_id)?;
        let (session_count, rw_count) = {
            let sessions = self.sessions.lock();
            let mine = sessions.values().filter(|s| s.slot == slot_id);
            let all: Vec<_> = mine.collect();
            (all.len(), all.iter().filter(|s| s.rw).count())
        };
        self.with_card(&slot, |state| {
            let card = state
                .card
                .as_ref()
                .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
            let c = &card.contents;
            let mut flags = CKF_RNG
                | CKF_USER_PIN_INITIALIZED
                | CKF_TOKEN_INITIALIZED
                | card.pin.flags(true)
                | card.puk.flags(false);
            let label = if slot.part.login_required() {
                flags |= CKF_LOGIN_REQUIRED;
                c.label.clone()
            } else {
                super::slot::card_auth_label(&c.label)
            };
            let fw = c.version.unwrap_or([0, 0, 0]);
            let manufacturer = if c.label.starts_with("YubiKey") {
                "Yubico"
            } else {
                super::MANUFACTURER
            };
            Ok(CK_TOKEN_INFO {
                label: attr::padded::<32>(&label),
                manufacturerID: attr::padded::<32>(manufacturer),
                model: attr::padded::<16>("PIV"),
                serialNumber: attr::padded::<16>(&c.serial),
                flags,
                ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
                ulSessionCount: session_count as CK_ULONG,
                ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
                ulRwSessionCount: rw_count as CK_ULONG,
                ulMaxPinLen: 8,
                ulMinPinLen: 6,
                ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
                ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
                ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
                ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
                hardwareVersion: CK_VERSION { major: 1, minor: 0 },
                firmwareVersion: CK_VERSION {
                    major: fw[0],
                    minor: fw[1],
                },
                utcTime: [b' '; 16],
            })
        })
    }

    /// C_WaitForSlotEvent: the next slot whose card was inserted or removed.
    pub fn wait_for_slot_event(&self, dont_block: bool) -> Result<CK_SLOT_ID> {
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return err(CKR_CRYPTOKI_NOT_INITIALIZED);
            }
            let readers = self.refresh_readers();
            let slots = self.slots.read().clone();
            for slot in &slots {
                let now = slot.card_present(Some(&readers));
                let mut seen = self.presence.lock();
                let before = seen.insert(slot.id, now);
                if before.is_some_and(|b| b != now) || (before.is_none() && now) {
                    return Ok(slot.id);
                }
            }
            if dont_block {
                return err(CKR_NO_EVENT);
            }
            // Block on a connector that can wait for events (pcscd: C_Finalize cancels it);
            // poll otherwise (virtual cards).
            let waited = self.connectors.iter().any(|c| {
                let mine: Vec<ReaderInfo> = readers
                    .iter()
                    .filter(|r| {
                        slots.iter().any(|s| {
                            s.source.location == r.location && Arc::ptr_eq(&s.source.connector, c)
                        })
                    })
                    .cloned()
                    .collect();
                !mine.is_empty() && c.wait_for_change(&mine, Duration::from_millis(500))
            });
            if !waited {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// C_GetMechanismList.
    pub fn mechanism_list(&self, slot_id: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.slot(slot_id)?;
        Ok(mechanism::supported().to_vec())
    }

    /// C_GetMechanismInfo.
    pub fn mechanism_info(
        &self,
        slot_id: CK_SLOT_ID,
        mech: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        self.slot(slot_id)?;
        mechanism::info(mech).ok_or(Error::new(CKR_MECHANISM_INVALID))
    }

    // ---- sessions and login -----------------------------------------------------------------

    /// C_OpenSession.
    pub fn open_session(&self, slot_id: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        if flags & CKF_SERIAL_SESSION == 0 {
            return err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        let slot = self.slot(slot_id)?;
        let rw = flags & CKF_RW_SESSION != 0;
        let generation = self.with_current_card(&slot, |state| {
            if state.login == Login::So && !rw {
                return err(CKR_SESSION_READ_WRITE_SO_EXISTS);
            }
            Ok(state.generation)
        })?;
        let mut next = self.next_session.lock();
        *next += 1;
        let h = *next;
        self.sessions.lock().insert(
            h,
            Session {
                slot: slot_id,
                rw,
                generation,
                find: None,
                op: None,
            },
        );
        Ok(h)
    }

    /// The IDs of every slot showing the same card as `slot` (they share one login).
    fn card_slot_ids(&self, slot: &Slot) -> Vec<CK_SLOT_ID> {
        self.slots
            .read()
            .iter()
            .filter(|s| Arc::ptr_eq(&s.state, &slot.state))
            .map(|s| s.id)
            .collect()
    }

    /// C_CloseSession; the last session of a card logs it out (its tokens share the login).
    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let slot_id = self.with_session(h, |s| Ok(s.slot))?;
        self.drop_session(h);
        let slot = self.slot(slot_id)?;
        let same_card = self.card_slot_ids(&slot);
        let others = self
            .sessions
            .lock()
            .values()
            .any(|s| same_card.contains(&s.slot));
        if !others {
            self.logout_slot(&slot);
        }
        Ok(())
    }

    /// C_CloseAllSessions.
    pub fn close_all_sessions(&self, slot_id: CK_SLOT_ID) -> Result<()> {
        let slot = self.slot(slot_id)?;
        let mine: Vec<_> = self
            .sessions
            .lock()
            .iter()
            .filter(|(_, s)| s.slot == slot_id)
            .map(|(h, _)| *h)
            .collect();
        for h in mine {
            self.drop_session(h);
        }
        self.logout_slot(&slot);
        Ok(())
    }

    fn logout_slot(&self, slot: &Slot) {
        let mut state = slot.state.lock();
        state.so_puk = None;
        if state.login != Login::Public {
            state.login = Login::Public;
            // VERIFY P1=FF drops the card's PIN verification (SP 800-73-4 part 2 §3.2.1).
            let _ = state.transact(&slot.source, false, |ch, _| piv::unverify_pin(ch));
        }
    }

    /// C_GetSessionInfo.
    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO> {
        let (slot, rw) = self.session_slot(h)?;
        let login = slot.state.lock().login;
        let state = match (login, rw) {
            (Login::Public, false) => CKS_RO_PUBLIC_SESSION,
            (Login::Public, true) => CKS_RW_PUBLIC_SESSION,
            (Login::User, false) => CKS_RO_USER_FUNCTIONS,
            (Login::User, true) => CKS_RW_USER_FUNCTIONS,
            (Login::So, _) => CKS_RW_SO_FUNCTIONS,
        };
        Ok(CK_SESSION_INFO {
            slotID: slot.id,
            state,
            flags: CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 },
            ulDeviceError: 0,
        })
    }

    /// C_Login.
    pub fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        let (slot, _) = self.session_slot(h)?;
        match user {
            CKU_USER => self.login_user(&slot, pin),
            CKU_SO => {
                let same_card = self.card_slot_ids(&slot);
                let ro_exists = self
                    .sessions
                    .lock()
                    .values()
                    .any(|s| same_card.contains(&s.slot) && !s.rw);
                if ro_exists {
                    return err(CKR_SESSION_READ_ONLY_EXISTS);
                }
                self.login_so(&slot, pin)
            }
            CKU_CONTEXT_SPECIFIC => self.login_context(h, &slot, pin),
            _ => err(CKR_USER_TYPE_INVALID),
        }
    }

    fn login_user(&self, slot: &Slot, pin: &[u8]) -> Result<()> {
        self.with_card(slot, |state| {
            match state.login {
                Login::User => return err(CKR_USER_ALREADY_LOGGED_IN),
                Login::So => return err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
                Login::Public => {}
            }
            check_pin_format(pin)?;
            let status = state.transact(&slot.source, false, |ch, card| {
                let status = piv::verify_pin(ch, Some(pin))?;
                card.pin.record(status);
                if status == PinStatus::Verified && card.contents.pending.is_some() {
                    // An unfinished change that waited for the PIN-protected management
                    // key is finished or undone now, before anything else.
                    if let Err(e) = card.recover(ch) {
                        log::warn!("unfinished change on the card not recovered: {e}");
                    }
                }
                Ok(status)
            })?;
            if status == PinStatus::Verified {
                state.login = Login::User;
                Ok(())
            } else {
                Err(pin_error(status))
            }
        })
    }

    fn login_so(&self, slot: &Slot, puk: &[u8]) -> Result<()> {
        self.with_card(slot, |state| {
            match state.login {
                Login::So => return err(CKR_USER_ALREADY_LOGGED_IN),
                Login::User => return err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
                Login::Public => {}
            }
            check_pin_format(puk)?;
            // PIV cannot VERIFY the PUK: changing it to itself proves it (a wrong one spends a
            // PUK try, as a wrong login should).
            let status = state.transact(&slot.source, false, |ch, card| {
                let status = piv::admin::change_reference(ch, piv::key_ref::PUK, puk, puk)?;
                card.puk.record(status);
                Ok(status)
            })?;
            if status == PinStatus::Verified {
                state.login = Login::So;
                state.so_puk = Some(Zeroizing::new(puk.to_vec()));
                Ok(())
            } else {
                Err(pin_error(status))
            }
        })
    }

    fn login_context(&self, h: CK_SESSION_HANDLE, slot: &Slot, pin: &[u8]) -> Result<()> {
        let wants =
            self.with_session(h, |s| Ok(s.op.as_ref().map(Operation::wants_context_login)))?;
        match wants {
            None => return err(CKR_OPERATION_NOT_INITIALIZED),
            Some(false) => return err(CKR_OPERATION_NOT_INITIALIZED),
            Some(true) => {}
        }
        self.with_card(slot, |state| {
            if state.login != Login::User {
                return err(CKR_USER_NOT_LOGGED_IN);
            }
            check_pin_format(pin)?;
            let status = state.transact(&slot.source, true, |ch, card| {
                let status = piv::verify_pin(ch, Some(pin))?;
                card.pin.record(status);
                Ok(status)
            })?;
            if status != PinStatus::Verified {
                return Err(pin_error(status));
            }
            Ok(())
        })?;
        // The signature itself repeats VERIFY in the same transaction as GENERAL AUTHENTICATE,
        // so that no other command can come between them and spend the verification.
        self.with_session(h, |s| {
            if let Some(op) = s.op.as_mut() {
                op.set_context_pin(Zeroizing::new(pin.to_vec()));
            }
            Ok(())
        })
    }

    /// C_Logout.
    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let (slot, _) = self.session_slot(h)?;
        if slot.state.lock().login == Login::Public {
            return err(CKR_USER_NOT_LOGGED_IN);
        }
        self.logout_slot(&slot);
        Ok(())
    }

    /// C_InitPIN in an SO session: RESET RETRY COUNTER with the SO's PUK and the new PIN.
    pub fn init_pin(&self, h: CK_SESSION_HANDLE, new_pin: &[u8]) -> Result<()> {
        let (slot, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }

        check_pin_format(new_pin)?;
        self.with_card(&slot, |state| {
            if state.login != Login::So {
                return err(CKR_USER_NOT_LOGGED_IN);
            }
            let puk = state
                .so_puk
                .clone()
                .ok_or(Error::new(CKR_USER_NOT_LOGGED_IN))?;
            let status = state.transact(&slot.source, true, |ch, card| {
                let status = piv::admin::reset_retry_counter(ch, &puk, new_pin)?;
                card.puk.record(status);
                if status == PinStatus::Verified {
                    card.pin.tries_left = card.pin.total;
                    card.pin.is_default = new_pin == b"123456";
                }
                Ok(status)
            })?;
            if status == PinStatus::Verified {
                Ok(())
            } else {
                Err(pin_error(status))
            }
        })
    }

    /// C_SetPIN: the PIN in a user or public session, the PUK in an SO session.
    pub fn set_pin(&self, h: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        let (slot, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }

        check_pin_format(old)?;
        check_pin_format(new)?;
        self.with_card(&slot, |state| {
            let so = state.login == Login::So;
            let reference = if so {
                piv::key_ref::PUK
            } else {
                piv::key_ref::PIN
            };
            let status = state.transact(&slot.source, false, |ch, card| {
                let status = piv::admin::change_reference(ch, reference, old, new)?;
                let counter = if so { &mut card.puk } else { &mut card.pin };
                counter.record(status);
                if status == PinStatus::Verified {
                    counter.is_default = new == if so { &b"12345678"[..] } else { &b"123456"[..] };
                }
                Ok(status)
            })?;
            if status != PinStatus::Verified {
                return Err(pin_error(status));
            }
            if so {
                state.so_puk = Some(Zeroizing::new(new.to_vec()));
            }
            Ok(())
        })
    }

    /// The cached card contents and counters of the session's token (no APDU).
    pub fn card_snapshot(
        &self,
        h: CK_SESSION_HANDLE,
    ) -> Result<(
        super::slot::Contents,
        super::slot::Counter,
        super::slot::Counter,
    )> {
        let (slot, _) = self.session_slot(h)?;
        self.with_card(&slot, |state| {
            let card = state
                .card
                .as_ref()
                .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
            Ok((card.contents.clone(), card.pin, card.puk))
        })
    }

    /// Where a slot's card lives.
    pub fn slot_location(&self, slot_id: CK_SLOT_ID) -> Result<Location> {
        Ok(self.slot(slot_id)?.source.location.clone())
    }

    /// C_GenerateRandom (from the operating system's generator).
    pub fn generate_random(&self, h: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        self.session_slot(h)?;
        rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, out)
            .map_err(|_| Error::new(CKR_FUNCTION_FAILED))
    }
}
