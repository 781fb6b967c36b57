//! Slots and the card in them: where a card is reached (reader or virtual card file), whether
//! one is present (asked without any APDU), the connection, and the card's contents read once
//! per insertion and cached. Every card operation runs in one transaction through
//! [`SlotState::transact`], which turns a reset by another process into "logged out".

use super::mechanism::PublicKey;
use super::objects::{CertFacts, KeyEntry};
use super::{Error, Result};
use crate::applet::piv::{self, admin, change, keys, KeyAlgorithm, KeySlot, PinPolicy, PinStatus};
use crate::card::{self, CardError, Channel, Connector, Location, ReaderInfo, Transport};
use cryptoki_sys::*;
use parking_lot::Mutex;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Where a slot's card lives: a reader of one of the program's connectors.
#[derive(Clone)]
pub struct Source {
    /// The reader.
    pub location: Location,
    /// The connector that serves it.
    pub connector: Arc<dyn Connector>,
}

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.location == other.location
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.location)
    }
}

/// Who is logged in to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Nobody.
    Public,
    /// The card holder (PIN).
    User,
    /// The security officer (PUK).
    So,
}

/// A counter as the card last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Tries left, when known.
    pub tries_left: Option<u8>,
    /// Tries allowed in all.
    pub total: Option<u8>,
    /// The factory default value is still set.
    pub is_default: bool,
}

impl Counter {
    /// The token flags for this counter (`user` picks the USER or SO flag family).
    pub fn flags(&self, user: bool) -> CK_FLAGS {
        let (low, last, locked, change) = if user {
            (
                CKF_USER_PIN_COUNT_LOW,
                CKF_USER_PIN_FINAL_TRY,
                CKF_USER_PIN_LOCKED,
                CKF_USER_PIN_TO_BE_CHANGED,
            )
        } else {
            (
                CKF_SO_PIN_COUNT_LOW,
                CKF_SO_PIN_FINAL_TRY,
                CKF_SO_PIN_LOCKED,
                CKF_SO_PIN_TO_BE_CHANGED,
            )
        };
        let mut flags = 0;
        match (self.tries_left, self.total) {
            (Some(0), _) => flags |= locked,
            (Some(1), _) => flags |= last | low,
            (Some(n), Some(t)) if n < t => flags |= low,
            _ => {}
        }
        if self.is_default {
            flags |= change;
        }
        flags
    }

    /// Records a verification outcome.
    pub fn record(&mut self, status: PinStatus) {
        self.tries_left = match status {
            PinStatus::Verified => self.total.or(self.tries_left),
            PinStatus::TriesLeft(n) => Some(n),
            PinStatus::Blocked => Some(0),
        };
    }
}

/// What was read from a card at insertion (public data only).
#[derive(Debug, Clone)]
pub struct Contents {
    /// Token label (stable across certificate renewals; never a certificate's CN).
    pub label: String,
    /// Token serial number text.
    pub serial: String,
    /// Card serial when the card reports one.
    pub serial_number: Option<u32>,
    /// Firmware version when the card reports one.
    pub version: Option<[u8; 3]>,
    /// Populated key slots.
    pub entries: Vec<KeyEntry>,
    /// Key History as read.
    pub history: admin::KeyHistory,
    /// The card answers Yubico's GET METADATA (and so reports keys without certificates).
    pub has_metadata: bool,
    /// The change stamp of Tessera's change record (`None`: the card never had one).
    pub stamp: Option<[u8; 8]>,
    /// A change that could not be finished or undone yet (needs the PIN or the management
    /// key); its slots show no certificate the card cannot vouch for meanwhile.
    pub pending: Option<change::Pending>,
    /// What is wrong with the key/certificate pairs (the objects affected are not shown).
    pub problems: Vec<Problem>,
}

/// Something wrong with what a card holds, found when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The certificate's public key is not the key in the slot (the certificate is not shown).
    Mismatch(KeySlot),
    /// A certificate without a key (not shown).
    CertificateWithoutKey(KeySlot),
    /// A key without a certificate outside the staging slots (a staged renewal key is a
    /// counted retired slot with a key and no certificate, and is no problem).
    KeyWithoutCertificate(KeySlot),
    /// An unfinished change that could not be finished or undone yet.
    Unfinished(change::Kind),
    /// Tessera's change record cannot be read.
    DamagedRecord,
    /// The certificate in the slot cannot be read or does not parse (it is left out; the rest
    /// of the card stays usable).
    UnreadableCertificate(KeySlot),
}

impl Problem {
    /// The key slot concerned, if any.
    pub fn slot(&self) -> Option<KeySlot> {
        match self {
            Self::Mismatch(s)
            | Self::CertificateWithoutKey(s)
            | Self::KeyWithoutCertificate(s)
            | Self::UnreadableCertificate(s) => Some(*s),
            Self::Unfinished(_) | Self::DamagedRecord => None,
        }
    }
}

impl Contents {
    /// The entry of `slot`, if populated.
    pub fn entry(&self, slot: KeySlot) -> Option<&KeyEntry> {
        self.entries.iter().find(|e| e.slot == slot)
    }
}

/// A connected card.
pub struct Card {
    transport: Box<dyn Transport>,
    /// Cached public contents.
    pub contents: Contents,
    /// PIN counter.
    pub pin: Counter,
    /// PUK counter.
    pub puk: Counter,
    /// The PIV applet is known to be selected (no reset or foreign answer since we selected).
    selected: bool,
    /// CKA_IDs applications gave keys they created (NSS uses a hash of the public key and
    /// then looks the key up by it); find matches them as well as the slot's own ID.
    pub id_aliases: std::collections::HashMap<KeySlot, Vec<u8>>,
    /// When the contents were last read in full.
    pub read_at: std::time::Instant,
    /// The card's answer-to-reset (kept: the transport is lent out during transactions).
    atr: Vec<u8>,
    /// Public keys of keys this process generated on a card that does not report them (no
    /// GET METADATA): the GENERATE answer is the only place they are known until a
    /// certificate is written (no placeholder certificates).
    generated: std::collections::HashMap<KeySlot, keys::PublicKeyInfo>,
}

/// Which of a card's objects a slot's token shows.
///
/// NSS (Firefox, Thunderbird) will not finish a TLS handshake with a key on a token that has
/// CKF_LOGIN_REQUIRED while it is logged out, even when the key itself needs no PIN
/// (`ssl3_ClientAuthTokenPresent`). So card authentication (9E), which the card uses without a
/// PIN, gets a token of its own whose cryptographic functions need no login, and the card's
/// main token leaves it out. Both tokens are the same card with the same PIN: they share one
/// login state (PIV's security status belongs to the card), and writes still need the PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything on the card, login required (the control manager's view).
    Whole,
    /// Everything but card authentication, login required.
    Main,
    /// Card authentication (9E) only; no login required to use it.
    CardAuth,
}

impl Part {
    /// Whether the token shows the objects of key slot `slot` (`None`: card-wide objects).
    pub fn shows(self, slot: Option<KeySlot>) -> bool {
        let card_auth = slot == Some(KeySlot::CARD_AUTHENTICATION);
        match self {
            Part::Whole => true,
            Part::Main => !card_auth,
            Part::CardAuth => card_auth,
        }
    }

    /// Whether some cryptographic function of the token needs a login (CKF_LOGIN_REQUIRED).
    pub fn login_required(self) -> bool {
        self != Part::CardAuth
    }

    /// The key slot a new key goes to when the application names none.
    pub fn default_key_slot(self, by_usage: KeySlot) -> KeySlot {
        match self {
            Part::CardAuth => KeySlot::CARD_AUTHENTICATION,
            Part::Whole | Part::Main => by_usage,
        }
    }
}

/// The token label of a card's card-authentication token: the main label, shortened so that
/// the suffix always fits in CK_TOKEN_INFO's 32 bytes (the two labels never collide).
pub fn card_auth_label(main: &str) -> String {
    with_suffix(main, CARD_AUTH_LABEL_SUFFIX, 32)
}

/// What a card-authentication token's label adds to its card's main label.
pub const CARD_AUTH_LABEL_SUFFIX: &str = " Card Auth";

/// `base` + `suffix` in at most `max` bytes, `base` shortened (at a character boundary).
fn with_suffix(base: &str, suffix: &str, max: usize) -> String {
    let mut base = base.to_owned();
    while base.len() + suffix.len() > max {
        base.pop();
    }
    format!("{}{suffix}", base.trim_end())
}

/// A slot: its source, the part of the card its token shows and, behind a lock shared by every
/// slot of the same card, the card in it and the login state.
pub struct Slot {
    /// The slot ID.
    pub id: CK_SLOT_ID,
    /// Where its card is.
    pub source: Source,
    /// What its token shows.
    pub part: Part,
    /// Mutable state (shared with the other slot of the same card: one card, one login).
    pub state: Arc<Mutex<SlotState>>,
}

/// The mutable part of a slot.
pub struct SlotState {
    /// The connected card, if any.
    pub card: Option<Card>,
    /// Login state of the token (shared by all its sessions).
    pub login: Login,
    /// Bumped whenever the card goes away; sessions of an older generation are dead.
    pub generation: u64,
    /// The PUK the security officer logged in with (C_InitPIN needs it again).
    pub so_puk: Option<Zeroizing<Vec<u8>>>,
}

impl Slot {
    /// A slot for `source` showing `part` of its card, with a state of its own.
    pub fn new(id: CK_SLOT_ID, source: Source, part: Part) -> Self {
        Self {
            id,
            source,
            part,
            state: Arc::new(Mutex::new(SlotState {
                card: None,
                login: Login::Public,
                generation: 1,
                so_puk: None,
            })),
        }
    }

    /// A slot for the same card as `self`, showing `part` of it (sharing the card and state).
    pub fn sibling(&self, id: CK_SLOT_ID, part: Part) -> Self {
        Self {
            id,
            source: self.source.clone(),
            part,
            state: Arc::clone(&self.state),
        }
    }

    /// Slot description (C_GetSlotInfo).
    pub fn description(&self) -> String {
        let base = self.source.connector.describe(&self.source.location);
        match self.part {
            Part::CardAuth => with_suffix(&base, " (card authentication)", 64),
            Part::Whole | Part::Main => base,
        }
    }

    /// Whether a card is present, asked without sending any APDU: from `readers` when the
    /// caller has just listed them, else from the slot's connector.
    pub fn card_present(&self, readers: Option<&[ReaderInfo]>) -> bool {
        let own;
        let readers = match readers {
            Some(r) => Some(r),
            None => {
                own = self.source.connector.readers();
                own.as_deref()
            }
        };
        readers
            .and_then(|rs| rs.iter().find(|r| r.location == self.source.location))
            .is_some_and(|r| r.card_present)
    }
}

impl SlotState {
    /// Forgets the card (removed): logs out and kills every session of the slot.
    pub fn card_gone(&mut self) {
        if self.card.take().is_some() {
            self.generation += 1;
        }
        self.login = Login::Public;
        self.so_puk = None;
    }

    /// The connected card, connecting and reading it first if needed.
    pub fn card(&mut self, source: &Source) -> Result<&mut Card> {
        if self.card.is_none() {
            let transport = source.connector.connect(&source.location).map_err(|e| {
                log::debug!("connect {}: {e}", source.location);
                Error::new(CKR_TOKEN_NOT_PRESENT)
            })?;
            let card = Card::read(transport)?;
            self.login = Login::Public;
            self.card = Some(card);
        }
        self.card.as_mut().ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))
    }

    /// Runs `f` in one transaction on the card (SELECT when needed). A reset by another process
    /// logs the token out and fails with CKR_USER_NOT_LOGGED_IN when `needs_login`, else the
    /// operation is run again once on the re-selected card; a removed card kills the slot's
    /// sessions (CKR_DEVICE_REMOVED).
    pub fn transact<R>(
        &mut self,
        source: &Source,
        needs_login: bool,
        mut f: impl FnMut(&mut dyn Channel, &mut Card) -> std::result::Result<R, CardError>,
    ) -> Result<R> {
        for attempt in 0..2 {
            let card = self.card(source)?;
            let mut transport = std::mem::replace(&mut card.transport, Box::new(Detached));
            // SELECT only when the applet is not known to be selected; if the card answers as
            // if another application had been selected meanwhile, select and run `f` again.
            let known = card.selected;
            let out = card::with_transaction(transport.as_mut(), |ch| {
                if !known {
                    piv::select(ch)?;
                }
                match f(ch, card) {
                    Err(CardError::Status(
                        crate::card::StatusWord::InsNotSupported
                        | crate::card::StatusWord::ClaNotSupported
                        | crate::card::StatusWord::NotFound,
                    )) if known => {
                        piv::select(ch)?;
                        f(ch, card)
                    }
                    other => other,
                }
            });
            card.transport = transport;
            card.selected = !matches!(out, Err(CardError::Reset | CardError::NoCard));
            match out {
                Ok(r) => return Ok(r),
                Err(CardError::Reset) => {
                    log::debug!("card reset by someone else: logged out");
                    self.login = Login::Public;
                    self.so_puk = None;
                    if needs_login || attempt == 1 {
                        return Err(Error::new(CKR_USER_NOT_LOGGED_IN));
                    }
                }
                Err(CardError::NoCard) => {
                    self.card_gone();
                    return Err(Error::new(CKR_DEVICE_REMOVED));
                }
                Err(CardError::Status(crate::card::StatusWord::SecurityStatus))
                    if needs_login && self.login == Login::User =>
                {
                    // The card no longer counts the PIN as verified (another program logged
                    // it out): the token is logged out too, so the application's next
                    // C_Login asks for the PIN instead of being told it is logged in.
                    log::debug!("the card forgot the PIN verification: logged out");
                    self.login = Login::Public;
                    return Err(Error::new(CKR_USER_NOT_LOGGED_IN));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::new(CKR_USER_NOT_LOGGED_IN))
    }
}

/// Placeholder transport while the real one is lent to a transaction.
struct Detached;

impl Transport for Detached {
    fn transaction(
        &mut self,
        _op: &mut card::TransactionOp<'_>,
    ) -> std::result::Result<(), CardError> {
        Err(CardError::NoCard)
    }
    fn atr(&self) -> &[u8] {
        &[]
    }
    fn name(&self) -> &str {
        ""
    }
}

impl Card {
    /// Reads everything public from a freshly connected card in one transaction.
    fn read(mut transport: Box<dyn Transport>) -> Result<Self> {
        let atr = transport.atr().to_vec();
        let mut result = None;
        for _ in 0..2 {
            match card::with_transaction(transport.as_mut(), |ch| read_contents(ch, &atr)) {
                Err(CardError::Reset) => continue,
                other => {
                    result = Some(other);
                    break;
                }
            }
        }
        let (contents, pin, puk) = match result {
            Some(Ok(v)) => v,
            Some(Err(CardError::Status(crate::card::StatusWord::NotFound))) => {
                return Err(Error::new(CKR_TOKEN_NOT_RECOGNIZED))
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Error::new(CKR_DEVICE_ERROR)),
        };
        let mut card = Self {
            transport,
            contents,
            pin,
            puk,
            selected: true,
            id_aliases: std::collections::HashMap::new(),
            read_at: std::time::Instant::now(),
            atr,
            generated: std::collections::HashMap::new(),
        };
        if card.contents.pending.is_some() {
            // Whatever opens the card first finishes or undoes an unfinished change.
            let mut transport = std::mem::replace(&mut card.transport, Box::new(Detached));
            let out = card::with_transaction(transport.as_mut(), |ch| {
                piv::select(ch)?;
                card.recover(ch).map(|_| ())
            });
            card.transport = transport;
            if let Err(e) = out {
                log::warn!("unfinished change on the card not recovered: {e}");
            }
        }
        Ok(card)
    }

    /// Re-reads the contents after a write (same transaction as the caller's).
    pub fn reread(&mut self, ch: &mut dyn Channel) -> std::result::Result<(), CardError> {
        let (mut contents, pin, puk) = read_contents(ch, &self.atr)?;
        // Keys generated here on a card that cannot report them, until their certificate
        // (which then names the key) is on the card.
        self.generated.retain(|slot, _| {
            contents
                .entry(*slot)
                .is_none_or(|e| e.certificate.is_none())
        });
        for (slot, info) in &self.generated {
            if contents.entry(*slot).is_some() {
                continue;
            }
            let meta = keys::KeyMetadata {
                algorithm: info.algorithm,
                pin_policy: PinPolicy::Default,
                generated: true,
                public_key: Some(info.clone()),
            };
            if let Some(entry) = key_entry(*slot, None, Some(meta)) {
                contents.entries.push(entry);
            }
        }
        self.contents = contents;
        self.read_at = std::time::Instant::now();
        // Keep the counters the caller just learned if the card reports none.
        if pin.tries_left.is_some() {
            self.pin = pin;
        }
        if puk.total.is_some() {
            self.puk = puk;
        }
        Ok(())
    }

    /// Remembers the public key of a key just generated in `slot` when the card cannot report
    /// it (see [`Card::reread`]).
    pub fn remember_generated(&mut self, slot: KeySlot, info: keys::PublicKeyInfo) {
        if !self.contents.has_metadata {
            self.generated.insert(slot, info);
        }
    }

    /// Finishes or undoes the unfinished change the contents show, when the management key
    /// can be used now (the factory key, or the PIN-protected one once the PIN is verified);
    /// re-reads the card afterwards. `Ok(None)`: nothing pending, or not possible yet.
    pub fn recover(
        &mut self,
        ch: &mut dyn Channel,
    ) -> std::result::Result<Option<change::Recovered>, CardError> {
        let Some(pending) = self.contents.pending.clone() else {
            return Ok(None);
        };
        if !change::authenticates_itself(&pending) {
            match super::write::authenticate(ch)? {
                Ok(()) => {}
                Err(e) => {
                    log::info!(
                        "unfinished change ({}) waits for the management key: {:#x}",
                        pending.kind.describe(),
                        e.rv()
                    );
                    return Ok(None);
                }
            }
        }
        let done = match change::recover(ch, &pending) {
            Ok(done) => done,
            Err(CardError::Status(crate::card::StatusWord::SecurityStatus)) => {
                log::info!("unfinished change waits for the PIN");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        log::info!("unfinished change recovered: {done:?}");
        self.reread(ch)?;
        Ok(Some(done))
    }

    /// Proves the cached contents current: one GET DATA of the change record, compared with
    /// the stamp read with the contents; a different stamp, an unfinished change or contents
    /// older than [`MAX_CONTENTS_AGE`] (changes by other tools do not touch the stamp) read
    /// the card again. Returns whether it was read again.
    pub fn revalidate(&mut self, ch: &mut dyn Channel) -> std::result::Result<bool, CardError> {
        let record = match change::read_record(ch) {
            Ok(r) => Some(r),
            Err(CardError::Malformed(_) | CardError::Tlv(_)) => None,
            Err(e) => return Err(e),
        };
        let same = record.as_ref().is_some_and(|r| {
            r.stamp == self.contents.stamp && r.pending.is_none() && self.contents.pending.is_none()
        });
        if same && self.read_at.elapsed() < MAX_CONTENTS_AGE {
            return Ok(false);
        }
        log::debug!("card changed since it was read (or read too long ago): reading it again");
        self.reread(ch)?;
        self.id_aliases.clear();
        if self.contents.pending.is_some() {
            match self.recover(ch) {
                Ok(_) => {}
                Err(e @ (CardError::Malformed(_) | CardError::Tlv(_) | CardError::Status(_))) => {
                    log::warn!("unfinished change on the card not recovered: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Cached contents older than this are read again at the next check (C_OpenSession,
/// C_FindObjectsInit): the way changes by other tools, which do not touch Tessera's change
/// stamp, become visible to a long-running program.
pub const MAX_CONTENTS_AGE: std::time::Duration = std::time::Duration::from_secs(60);

fn read_contents(
    ch: &mut dyn Channel,
    atr: &[u8],
) -> std::result::Result<(Contents, Counter, Counter), CardError> {
    piv::select(ch)?;
    let (record, record_damaged) = match change::read_record(ch) {
        Ok(r) => (r, false),
        Err(e @ (CardError::Malformed(_) | CardError::Tlv(_))) => {
            log::warn!("Tessera's change record on the card cannot be read: {e}");
            (change::Record::default(), true)
        }
        Err(e) => return Err(e),
    };
    let serial_number = piv::serial(ch)?;
    let version = keys::version(ch)?;
    let pin_status = piv::verify_pin(ch, None)?;
    // GET METADATA is tried once: when the PIN's answer is not its documented success the
    // card does not offer it, and nothing else is asked.
    let pin_meta = keys::reference_metadata(ch, piv::key_ref::PIN)?;
    let puk_meta = match pin_meta {
        Some(_) => keys::reference_metadata(ch, piv::key_ref::PUK)?,
        None => None,
    };
    let history = admin::key_history(ch)?.unwrap_or_default();
    let has_metadata = pin_meta.is_some();

    let mut pin = Counter::default();
    if let Some(m) = pin_meta {
        pin.total = m.total_tries;
        pin.tries_left = m.tries_left;
        pin.is_default = m.is_default;
    }
    pin.record(pin_status);
    let mut puk = Counter::default();
    if let Some(m) = puk_meta {
        puk.total = m.total_tries;
        puk.tries_left = m.tries_left;
        puk.is_default = m.is_default;
    }

    let slots: Vec<KeySlot> = KeySlot::primary()
        .into_iter()
        .chain(history.used_slots())
        .collect();
    let mut problems = Vec::new();
    if record_damaged {
        problems.push(Problem::DamagedRecord);
    }
    let pending = record.pending.clone();
    let pending_slots = pending
        .as_ref()
        .map(change::Pending::slots)
        .unwrap_or_default();
    if let Some(p) = &pending {
        problems.push(Problem::Unfinished(p.kind));
    }
    let mut entries = Vec::new();
    for slot in slots {
        // One bad object is one missing object: a certificate that cannot be read or parsed
        // is left out (and reported), the rest of the card stays usable.
        let mut certificate = match admin::read_certificate(ch, slot) {
            Ok(Some(der)) => {
                let facts = CertFacts::parse(&der);
                if facts.is_none() {
                    log::warn!("the certificate in slot {slot} does not parse: left out");
                    problems.push(Problem::UnreadableCertificate(slot));
                }
                facts
            }
            Ok(None) => None,
            Err(e @ (CardError::Malformed(_) | CardError::Tlv(_) | CardError::Status(_))) => {
                log::warn!("the certificate in slot {slot} cannot be read ({e}): left out");
                problems.push(Problem::UnreadableCertificate(slot));
                None
            }
            Err(e) => return Err(e),
        };
        let meta = if has_metadata {
            keys::metadata(ch, slot)?
        } else {
            None
        };
        if !has_metadata && pending_slots.contains(&slot) {
            // The card cannot tell which key the slot holds while a change to it is
            // unfinished: its certificate may belong to another key, so it is not shown.
            certificate = None;
        }
        if has_metadata {
            let key = meta
                .as_ref()
                .and_then(|m| m.public_key.as_ref())
                .and_then(|p| PublicKey::from_spki_der(&p.spki_der).ok());
            let cert_key = certificate
                .as_ref()
                .and_then(|c| PublicKey::from_spki_der(&c.spki).ok());
            match (&meta, &key, &cert_key) {
                (None, _, Some(_)) => {
                    problems.push(Problem::CertificateWithoutKey(slot));
                    continue;
                }
                (Some(_), Some(k), Some(c)) if k != c => {
                    problems.push(Problem::Mismatch(slot));
                    certificate = None;
                }
                _ => {}
            }
            let staged = slot.retired_number().is_some();
            if meta.is_some()
                && certificate.is_none()
                && !staged
                && !problems.contains(&Problem::Mismatch(slot))
                && !problems.contains(&Problem::UnreadableCertificate(slot))
            {
                problems.push(Problem::KeyWithoutCertificate(slot));
            }
        }
        if let Some(entry) = key_entry(slot, certificate, meta) {
            entries.push(entry);
        }
    }
    let serial = match serial_number {
        Some(n) => n.to_string(),
        None => chuid_serial(ch)?.unwrap_or_else(|| "0".into()),
    };
    let vendor = if crate::card::atr::historical_bytes(atr)
        .windows(7)
        .any(|w| w == b"Tessera")
    {
        "Tessera PIV"
    } else if version.is_some() {
        "YubiKey PIV"
    } else {
        "PIV Card"
    };
    let contents = Contents {
        label: format!("{vendor} #{serial}"),
        serial,
        serial_number,
        version,
        entries,
        history,
        has_metadata,
        stamp: record.stamp,
        pending,
        problems,
    };
    Ok((contents, pin, puk))
}

/// The CHUID's GUID (tag 34) as hex, for cards without GET SERIAL.
fn chuid_serial(ch: &mut dyn Channel) -> std::result::Result<Option<String>, CardError> {
    let Some(chuid) = piv::get_optional(ch, 0x5FC102)? else {
        return Ok(None);
    };
    Ok(crate::card::tlv::find(&chuid, 0x34)
        .ok()
        .flatten()
        .filter(|g| !g.is_empty())
        .map(hex::encode))
}

/// Builds a key entry from what the card said; `None` when the slot holds no key.
fn key_entry(
    slot: KeySlot,
    certificate: Option<CertFacts>,
    meta: Option<keys::KeyMetadata>,
) -> Option<KeyEntry> {
    let from_cert = certificate
        .as_ref()
        .and_then(|c| PublicKey::from_spki_der(&c.spki).ok());
    let (algorithm, public_key, pin_policy, generated) = match meta {
        Some(m) => {
            let pk = m
                .public_key
                .as_ref()
                .and_then(|p| PublicKey::from_spki_der(&p.spki_der).ok())
                .or(from_cert)?;
            (
                m.algorithm,
                pk,
                m.pin_policy.effective(slot),
                Some(m.generated),
            )
        }
        None => {
            let pk = from_cert?;
            let alg = algorithm_of(&pk)?;
            (alg, pk, PinPolicy::Default.effective(slot), None)
        }
    };
    Some(KeyEntry {
        slot,
        algorithm,
        public_key,
        certificate,
        pin_policy,
        generated,
    })
}

/// The PIV algorithm of a public key.
pub fn algorithm_of(pk: &PublicKey) -> Option<KeyAlgorithm> {
    use super::mechanism::{Curve, KeyInfo};
    match pk.key_info() {
        KeyInfo::Rsa { modulus_bits } => KeyAlgorithm::rsa_with_bits(modulus_bits),
        KeyInfo::Ec { curve: Curve::P256 } => Some(KeyAlgorithm::EccP256),
        KeyInfo::Ec { curve: Curve::P384 } => Some(KeyAlgorithm::EccP384),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_auth_label_fits_and_never_equals_the_main_label() {
        assert_eq!(
            card_auth_label("Tessera PIV #1000006"),
            "Tessera PIV #1000006 Card Auth"
        );
        // A CHUID GUID serial makes the main label longer than CK_TOKEN_INFO holds (it is cut
        // at 32 bytes there); the card-authentication label still ends in its suffix.
        let main = "PIV Card #0123456789abcdef0123456789abcdef";
        let auth = card_auth_label(main);
        assert_eq!(auth, "PIV Card #0123456789ab Card Auth");
        assert_eq!(auth.len(), 32);
        assert_ne!(auth.as_bytes(), &main.as_bytes()[..32]);
        // Multi-byte characters are cut at a character boundary.
        assert!(card_auth_label(&"é".repeat(20)).ends_with(CARD_AUTH_LABEL_SUFFIX));
    }

    #[test]
    fn parts_split_the_card_between_two_tokens() {
        for slot in KeySlot::all() {
            let nine_e = slot == KeySlot::CARD_AUTHENTICATION;
            assert!(Part::Whole.shows(Some(slot)));
            assert_eq!(Part::Main.shows(Some(slot)), !nine_e, "{slot}");
            assert_eq!(Part::CardAuth.shows(Some(slot)), nine_e, "{slot}");
        }
        assert!(Part::Main.shows(None) && !Part::CardAuth.shows(None));
        assert!(Part::Main.login_required() && !Part::CardAuth.login_required());
        assert_eq!(
            Part::CardAuth.default_key_slot(KeySlot::AUTHENTICATION),
            KeySlot::CARD_AUTHENTICATION
        );
        assert_eq!(
            Part::Main.default_key_slot(KeySlot::KEY_MANAGEMENT),
            KeySlot::KEY_MANAGEMENT
        );
    }
}
