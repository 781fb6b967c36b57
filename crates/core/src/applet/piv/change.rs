//! The PIV change protocol: how a change in more than one APDU (load an e-Cert, stage or
//! install a renewal key, delete, set up credentials) survives a crash, a pulled key or a
//! closed lid at any point. The intent is recorded ON THE CARD, in Tessera's change record
//! (data object 5FFF70), so whatever opens the card next — another program, another machine —
//! finishes or undoes it. This module knows PIV objects and key slots; it never sees PKCS#11,
//! and it runs inside the caller's transaction (which must already hold the management key for
//! anything that writes).
//!
//! A change runs in four steps:
//! 1. **begin**: the record says "prepared" (with a new change stamp, so every reader sees
//!    that the card changed), naming the staging key slots and copy areas it may fill.
//! 2. **stage**: new material goes where nobody looks: a key into a retired slot beyond what
//!    Key History counts, certificates and chains into copy areas (5FFF71…). Nothing a reader
//!    sees has changed yet. A crash here is undone: staged keys and copies are deleted.
//! 3. **commit**: one PUT DATA turns the record to "committed" with the wanted end state of
//!    each slot (key, certificate and chain by SHA-256, Key History counts). From here on a
//!    crash is finished, never undone.
//! 4. **apply**: the card is driven to that end state from what it holds now (keys found by
//!    their public key, MOVE KEY through a free slot for swaps; certificates and chains written
//!    from the copy areas), then the copies are deleted and the record cleared. Every step
//!    looks before it writes, so running it again after a crash at any APDU is harmless.
//!
//! The record also carries the change stamp: every change writes a new random one, so a
//! program that cached the card proves it unchanged with one GET DATA.

use super::slots::KeySlot;
use super::{admin, get_data, keys, put_data};
use crate::card::{tlv, CardError, Channel, StatusWord};
use sha2::{Digest, Sha256};

/// Tessera's change record: the change stamp and, while a change is unfinished, its intent.
pub const RECORD_TAG: tlv::Tag = 0x5FFF70;
/// First copy area (data objects holding certificates and chains a pending change needs).
pub const COPY_AREA_FIRST: tlv::Tag = 0x5FFF71;
/// How many copy areas there are (5FFF71 … 5FFF7E).
pub const COPY_AREAS: u32 = 14;
/// Format version of the record.
const VERSION: u8 = 1;

/// A SHA-256 digest naming a key (of its SubjectPublicKeyInfo DER) or a certificate/chain.
pub type Digest32 = [u8; 32];

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// What a change wants a slot's key, certificate or chain to be in the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Whatever is there now.
    Keep,
    /// Nothing.
    Empty,
    /// The key, certificate or chain with this digest.
    Is(Digest32),
}

/// The wanted end state of one key slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The slot.
    pub slot: KeySlot,
    /// Its key (by the digest of its public key).
    pub key: Want,
    /// Its certificate (by the digest of the DER).
    pub cert: Want,
    /// The CA chain Tessera keeps beside it.
    pub chain: Want,
}

impl Target {
    /// A slot that must end empty: no key, no certificate, no chain.
    pub fn empty(slot: KeySlot) -> Self {
        Self {
            slot,
            key: Want::Empty,
            cert: Want::Empty,
            chain: Want::Empty,
        }
    }
}

/// How far a pending change got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Staging: a crash is undone.
    Prepared,
    /// Committed: a crash is finished.
    Committed,
}

/// What a change does (for messages; the protocol itself does not depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A key and its certificate loaded into a slot.
    Import,
    /// A key generated in a slot.
    Generate,
    /// A slot emptied.
    Delete,
    /// A renewal key staged in a retired slot.
    StageRenewal,
    /// A renewed certificate installed with its staged key; the old key kept in history.
    InstallRenewal,
    /// A certificate written.
    WriteCertificate,
    /// First-use set-up: PUK, PIN and management key.
    Setup,
    /// PIN and PUK retry counts (the card resets both to the factory values meanwhile).
    PinRetries,
    /// Something this version does not know (written by a newer Tessera).
    Other(u8),
}

impl Kind {
    fn id(self) -> u8 {
        match self {
            Self::Import => 1,
            Self::Generate => 2,
            Self::Delete => 3,
            Self::StageRenewal => 4,
            Self::InstallRenewal => 5,
            Self::WriteCertificate => 6,
            Self::Setup => 7,
            Self::PinRetries => 8,
            Self::Other(n) => n,
        }
    }

    fn from_id(id: u8) -> Self {
        match id {
            1 => Self::Import,
            2 => Self::Generate,
            3 => Self::Delete,
            4 => Self::StageRenewal,
            5 => Self::InstallRenewal,
            6 => Self::WriteCertificate,
            7 => Self::Setup,
            8 => Self::PinRetries,
            n => Self::Other(n),
        }
    }

    /// In words, for messages ("an unfinished import").
    pub fn describe(self) -> &'static str {
        match self {
            Self::Import => "loading a key and certificate",
            Self::Generate => "generating a key",
            Self::Delete => "deleting a key and certificate",
            Self::StageRenewal => "staging a renewal key",
            Self::InstallRenewal => "installing a renewed certificate",
            Self::WriteCertificate => "writing a certificate",
            Self::Setup => "first-use set-up (PIN, PUK, management key)",
            Self::PinRetries => "setting the PIN and PUK retry counts",
            Self::Other(_) => "a change by a newer version of Tessera",
        }
    }

    /// Whether the change is about credentials (finished only with the holder's secrets).
    pub fn is_credentials(self) -> bool {
        matches!(self, Self::Setup | Self::PinRetries)
    }
}

/// Steps of credential changes already done ([`Pending::steps`]).
pub mod step {
    /// Setup: the PUK is the new one.
    pub const PUK_CHANGED: u8 = 0x01;
    /// Setup: the PIN is the new one.
    pub const PIN_CHANGED: u8 = 0x02;
    /// Setup: the new management key is stored PIN-protected beside the old one.
    pub const KEY_STORED: u8 = 0x04;
    /// Setup: the card's management key is the new one.
    pub const KEY_SET: u8 = 0x08;
    /// Retries: the card has the new counts, and PIN and PUK are the factory values.
    pub const RETRIES_SET: u8 = 0x10;
    /// Retries: the holder's PIN is back.
    pub const PIN_RESTORED: u8 = 0x20;
    /// Retries: the holder's PUK is back.
    pub const PUK_RESTORED: u8 = 0x40;
}

/// An unfinished change as the record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Random identity of this change.
    pub id: [u8; 8],
    /// How far it got.
    pub phase: Phase,
    /// What it does.
    pub kind: Kind,
    /// Key slots it stages keys in (empty before, empty after unless a target says otherwise).
    pub staging: Vec<KeySlot>,
    /// Copy areas it may fill (deleted at the end either way).
    pub areas: Vec<tlv::Tag>,
    /// Key History counts at the end (on-card, off-card); `None`: unchanged.
    pub history: Option<(u8, u8)>,
    /// Wanted end state per slot (committed changes).
    pub targets: Vec<Target>,
    /// Credential steps done ([`step`]).
    pub steps: u8,
}

impl Pending {
    /// The key slots this change touches (targets and staging), each once.
    pub fn slots(&self) -> Vec<KeySlot> {
        let mut out: Vec<KeySlot> = Vec::new();
        for s in self
            .targets
            .iter()
            .map(|t| t.slot)
            .chain(self.staging.iter().copied())
        {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}

/// The change record as read from the card.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The change stamp (`None`: no Tessera change ever recorded on this card).
    pub stamp: Option<[u8; 8]>,
    /// The unfinished change, if any.
    pub pending: Option<Pending>,
}

fn random8() -> [u8; 8] {
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b
}

fn encode_want(out: &mut Vec<u8>, tag: tlv::Tag, want: Want) {
    match want {
        Want::Keep => {}
        Want::Empty => tlv::push_do(out, tag, &[]),
        Want::Is(d) => tlv::push_do(out, tag, &d),
    }
}

fn decode_want(value: Option<&[u8]>) -> Result<Want, CardError> {
    match value {
        None => Ok(Want::Keep),
        Some([]) => Ok(Want::Empty),
        Some(v) => Ok(Want::Is(v.try_into().map_err(|_| {
            CardError::Malformed("change record: digest is not 32 bytes")
        })?)),
    }
}

fn malformed(what: &'static str) -> CardError {
    CardError::Malformed(what)
}

impl Record {
    /// The record's encoding (the value inside the 53 wrapper).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        tlv::push_do(&mut out, 0x80, &[VERSION]);
        if let Some(stamp) = self.stamp {
            tlv::push_do(&mut out, 0x81, &stamp);
        }
        if let Some(p) = &self.pending {
            let mut inner = Vec::new();
            tlv::push_do(&mut inner, 0x80, &p.id);
            let phase = match p.phase {
                Phase::Prepared => 1,
                Phase::Committed => 2,
            };
            tlv::push_do(&mut inner, 0x81, &[phase]);
            tlv::push_do(&mut inner, 0x82, &[p.kind.id()]);
            let staging: Vec<u8> = p.staging.iter().map(|s| s.reference()).collect();
            tlv::push_do(&mut inner, 0x83, &staging);
            let areas: Vec<u8> = p
                .areas
                .iter()
                .filter_map(|a| u8::try_from(a.saturating_sub(COPY_AREA_FIRST)).ok())
                .collect();
            tlv::push_do(&mut inner, 0x84, &areas);
            if let Some((on, off)) = p.history {
                tlv::push_do(&mut inner, 0x85, &[on, off]);
            }
            tlv::push_do(&mut inner, 0x86, &[p.steps]);
            for t in &p.targets {
                let mut target = Vec::new();
                tlv::push_do(&mut target, 0x80, &[t.slot.reference()]);
                encode_want(&mut target, 0x81, t.key);
                encode_want(&mut target, 0x82, t.cert);
                encode_want(&mut target, 0x83, t.chain);
                tlv::push_do(&mut inner, 0xA1, &target);
            }
            tlv::push_do(&mut out, 0xA0, &inner);
        }
        out
    }

    /// Parses a record; a record Tessera cannot read is an error (never guessed at).
    pub fn decode(value: &[u8]) -> Result<Self, CardError> {
        match tlv::find(value, 0x80)? {
            Some([VERSION]) => {}
            _ => return Err(malformed("change record of an unknown format")),
        }
        let stamp = match tlv::find(value, 0x81)? {
            None => None,
            Some(s) => Some(
                s.try_into()
                    .map_err(|_| malformed("change record: stamp is not 8 bytes"))?,
            ),
        };
        let pending = match tlv::find(value, 0xA0)? {
            None => None,
            Some(inner) => Some(decode_pending(inner)?),
        };
        Ok(Self { stamp, pending })
    }
}

fn decode_pending(inner: &[u8]) -> Result<Pending, CardError> {
    let id = tlv::find(inner, 0x80)?
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .ok_or(malformed("change record: no change id"))?;
    let phase = match tlv::find(inner, 0x81)? {
        Some([1]) => Phase::Prepared,
        Some([2]) => Phase::Committed,
        _ => return Err(malformed("change record: unknown phase")),
    };
    let kind = match tlv::find(inner, 0x82)? {
        Some([k]) => Kind::from_id(*k),
        _ => return Err(malformed("change record: no kind")),
    };
    let staging = tlv::find(inner, 0x83)?
        .unwrap_or_default()
        .iter()
        .map(|r| KeySlot::from_reference(*r).ok_or(malformed("change record: bad staging slot")))
        .collect::<Result<Vec<_>, _>>()?;
    let areas = tlv::find(inner, 0x84)?
        .unwrap_or_default()
        .iter()
        .map(|n| {
            if u32::from(*n) < COPY_AREAS {
                Ok(COPY_AREA_FIRST + u32::from(*n))
            } else {
                Err(malformed("change record: bad copy area"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let history = match tlv::find(inner, 0x85)? {
        None => None,
        Some([on, off]) => Some((*on, *off)),
        Some(_) => return Err(malformed("change record: bad key history")),
    };
    let steps = match tlv::find(inner, 0x86)? {
        Some([s]) => *s,
        _ => 0,
    };
    let mut targets = Vec::new();
    for item in tlv::objects(inner) {
        let (tag, value) = item?;
        if tag != 0xA1 {
            continue;
        }
        let slot = match tlv::find(value, 0x80)? {
            Some([r]) => KeySlot::from_reference(*r),
            _ => None,
        }
        .ok_or(malformed("change record: bad target slot"))?;
        targets.push(Target {
            slot,
            key: decode_want(tlv::find(value, 0x81)?)?,
            cert: decode_want(tlv::find(value, 0x82)?)?,
            chain: decode_want(tlv::find(value, 0x83)?)?,
        });
    }
    Ok(Pending {
        id,
        phase,
        kind,
        staging,
        areas,
        history,
        targets,
        steps,
    })
}

/// Reads the change record (one GET DATA). A card that never had one, or that keeps no such
/// objects, reads as the default (no stamp, nothing pending); a record that does not parse is
/// an error (never guessed at).
pub fn read_record(ch: &mut dyn Channel) -> Result<Record, CardError> {
    match super::get_optional(ch, RECORD_TAG)? {
        None => Ok(Record::default()),
        Some(v) if v.is_empty() => Ok(Record::default()),
        Some(v) => Record::decode(&v),
    }
}

fn write_record(ch: &mut dyn Channel, record: &Record) -> Result<(), CardError> {
    put_data(ch, RECORD_TAG, &record.encode())
}

/// The digest of the key in `slot` as the card reports it: `Ok(None)` for an empty slot,
/// an error when the card cannot say (no GET METADATA, or no public key in it).
pub fn key_digest(ch: &mut dyn Channel, slot: KeySlot) -> Result<Option<Digest32>, CardError> {
    match keys::metadata(ch, slot)? {
        None => Ok(None),
        Some(m) => m
            .public_key
            .map(|p| Some(digest(&p.spki_der)))
            .ok_or(malformed("the card does not report the key's public key")),
    }
}

/// A change in progress in the caller's transaction (management key authenticated).
pub struct Change {
    record: Record,
    /// The card took the record. A card that keeps no objects of Tessera's (a plain PIV card
    /// refuses PUT DATA outside the SP 800-73-4 containers) gets the same steps in the same
    /// order without it: copies stay in memory, and a crash is left to that order alone.
    recorded: bool,
    /// Copies held in memory when the card took no record.
    copies: Vec<Vec<u8>>,
    /// The next reserved copy area to fill.
    next_area: usize,
}

impl Change {
    /// Starts a change: records the intent as prepared with a new stamp, reserving `areas`
    /// copy areas and the `staging` slots (which must hold no key now).
    pub fn begin(
        ch: &mut dyn Channel,
        kind: Kind,
        staging: &[KeySlot],
        areas: usize,
    ) -> Result<Self, CardError> {
        if areas > COPY_AREAS as usize {
            return Err(malformed("a change needs more copy areas than there are"));
        }
        let pending = Pending {
            id: random8(),
            phase: Phase::Prepared,
            kind,
            staging: staging.to_vec(),
            areas: (0..areas as u32).map(|n| COPY_AREA_FIRST + n).collect(),
            history: None,
            targets: Vec::new(),
            steps: 0,
        };
        let record = Record {
            stamp: Some(random8()),
            pending: Some(pending),
        };
        let recorded = match write_record(ch, &record) {
            Ok(()) => true,
            Err(CardError::Status(sw)) if sw != StatusWord::SecurityStatus => {
                log::info!("the card keeps no change record ({sw}): the change runs unrecorded");
                false
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            record,
            recorded,
            copies: Vec::new(),
            next_area: 0,
        })
    }

    /// Whether the card holds the record (and so can keep Tessera's objects, chains
    /// included).
    pub fn recorded(&self) -> bool {
        self.recorded
    }

    fn pending_mut(&mut self) -> Result<&mut Pending, CardError> {
        self.record
            .pending
            .as_mut()
            .ok_or(malformed("change already finished"))
    }

    /// What a target wants for a certificate (`None` or empty: nothing): a copy of `bytes` is
    /// kept in the next reserved copy area, and the target wants that.
    pub fn want(&mut self, ch: &mut dyn Channel, bytes: Option<&[u8]>) -> Result<Want, CardError> {
        match bytes.filter(|b| !b.is_empty()) {
            None => Ok(Want::Empty),
            Some(b) => self.keep_copy(ch, b).map(Want::Is),
        }
    }

    /// [`Change::want`] for a CA chain; a card that keeps no objects of Tessera's (no record)
    /// keeps no chains either, so its chains stay as they are.
    pub fn want_chain(
        &mut self,
        ch: &mut dyn Channel,
        bytes: Option<&[u8]>,
    ) -> Result<Want, CardError> {
        if self.recorded {
            self.want(ch, bytes)
        } else {
            Ok(Want::Keep)
        }
    }

    /// What an emptied slot wants for its chain (see [`Change::want_chain`]).
    pub fn no_chain(&self) -> Want {
        if self.recorded {
            Want::Empty
        } else {
            Want::Keep
        }
    }

    /// Stores a copy of `bytes` in the next reserved copy area; returns its digest.
    fn keep_copy(&mut self, ch: &mut dyn Channel, bytes: &[u8]) -> Result<Digest32, CardError> {
        let n = self.next_area;
        let area = *self
            .pending_mut()?
            .areas
            .get(n)
            .ok_or(malformed("copy area not reserved"))?;
        self.next_area += 1;
        if self.recorded {
            put_data(ch, area, bytes)?;
        } else {
            self.copies.push(bytes.to_vec());
        }
        Ok(digest(bytes))
    }

    /// Records credential steps done so far (setup, retries).
    pub fn mark_steps(&mut self, ch: &mut dyn Channel, steps: u8) -> Result<(), CardError> {
        self.pending_mut()?.steps |= steps;
        if self.recorded {
            write_record(ch, &self.record)?;
        }
        Ok(())
    }

    /// Commits the change (one PUT DATA: from here a crash is finished, not undone) and drives
    /// the card to `targets`. May be called again with further targets (a change in several
    /// committed steps); [`Change::finish`] ends it.
    pub fn commit(
        &mut self,
        ch: &mut dyn Channel,
        targets: Vec<Target>,
        history: Option<(u8, u8)>,
    ) -> Result<(), CardError> {
        {
            let p = self.pending_mut()?;
            p.phase = Phase::Committed;
            p.targets = targets;
            p.history = history;
        }
        if self.recorded {
            write_record(ch, &self.record)?;
        }
        let pending = self.record.pending.clone().ok_or(malformed("no change"))?;
        apply_with(ch, &pending, &self.copies)
    }

    /// Ends the change: a change never committed is undone (staged keys and copies removed);
    /// the copy areas are deleted and the record cleared with a new stamp.
    pub fn finish(mut self, ch: &mut dyn Channel) -> Result<(), CardError> {
        let pending = self.pending_mut()?.clone();
        if pending.phase == Phase::Prepared {
            undo(ch, &pending)?;
        }
        if self.recorded {
            finish(ch, &pending)?;
        }
        Ok(())
    }
}

/// Deletes what a prepared change staged (keys in its staging slots, its copy areas).
fn undo(ch: &mut dyn Channel, p: &Pending) -> Result<(), CardError> {
    for slot in &p.staging {
        if keys::metadata(ch, *slot)?.is_some() {
            keys::delete_key(ch, *slot)?;
        }
    }
    Ok(())
}

/// Deletes the copy areas and clears the record (with a new stamp).
fn finish(ch: &mut dyn Channel, p: &Pending) -> Result<(), CardError> {
    for area in &p.areas {
        if get_data(ch, *area)?.is_some_and(|v| !v.is_empty()) {
            put_data(ch, *area, &[])?;
        }
    }
    write_record(
        ch,
        &Record {
            stamp: Some(random8()),
            pending: None,
        },
    )
}

/// Drives the card to a committed change's targets from whatever state it is in now.
pub fn apply(ch: &mut dyn Channel, p: &Pending) -> Result<(), CardError> {
    apply_with(ch, p, &[])
}

/// [`apply`], taking certificates and chains from `memory` before the copy areas.
fn apply_with(ch: &mut dyn Channel, p: &Pending, memory: &[Vec<u8>]) -> Result<(), CardError> {
    place_keys(ch, p)?;
    for t in &p.targets {
        if t.cert != Want::Keep {
            let current = admin::read_certificate(ch, t.slot)?;
            place_blob(
                ch,
                p,
                memory,
                t.cert,
                current.as_deref(),
                |ch, bytes| match bytes {
                    Some(b) => admin::write_certificate(ch, t.slot, b),
                    None => admin::delete_certificate(ch, t.slot),
                },
            )?;
        }
        if t.chain != Want::Keep {
            let tag = t.slot.chain_tag();
            let current = super::get_optional(ch, tag)?.filter(|v| !v.is_empty());
            place_blob(ch, p, memory, t.chain, current.as_deref(), |ch, bytes| {
                put_data(ch, tag, bytes.unwrap_or_default())
            })?;
        }
    }
    if let Some((on, off)) = p.history {
        let mut history = admin::key_history(ch)?.unwrap_or_default();
        if (history.on_card_certs, history.off_card_certs) != (on, off) {
            history.on_card_certs = on;
            history.off_card_certs = off;
            admin::write_key_history(ch, &history)?;
        }
    }
    Ok(())
}

/// Writes a certificate or chain when it differs from what is wanted, taking the bytes from
/// the change's copy areas.
fn place_blob(
    ch: &mut dyn Channel,
    p: &Pending,
    memory: &[Vec<u8>],
    want: Want,
    current: Option<&[u8]>,
    mut write: impl FnMut(&mut dyn Channel, Option<&[u8]>) -> Result<(), CardError>,
) -> Result<(), CardError> {
    match want {
        Want::Keep => Ok(()),
        Want::Empty if current.is_none() => Ok(()),
        Want::Empty => write(ch, None),
        Want::Is(d) if current.is_some_and(|c| digest(c) == d) => Ok(()),
        Want::Is(d) => {
            if let Some(bytes) = memory.iter().find(|b| digest(b) == d) {
                return write(ch, Some(bytes));
            }
            for area in &p.areas {
                if let Some(bytes) = get_data(ch, *area)? {
                    if !bytes.is_empty() && digest(&bytes) == d {
                        return write(ch, Some(&bytes));
                    }
                }
            }
            Err(malformed(
                "a certificate this change needs is no longer on the card",
            ))
        }
    }
}

/// Moves keys so that every target slot holds its wanted key (or none), using a free slot
/// among those the change touches for swaps; deletes keys nobody wants in those slots.
fn place_keys(ch: &mut dyn Channel, p: &Pending) -> Result<(), CardError> {
    if p.staging.is_empty() && p.targets.iter().all(|t| t.key == Want::Keep) {
        // Nothing to move or delete: do not even ask (cards without GET METADATA).
        return Ok(());
    }
    let slots = p.slots();
    let mut held: Vec<(KeySlot, Option<Digest32>)> = Vec::with_capacity(slots.len());
    for s in &slots {
        held.push((*s, key_digest(ch, *s)?));
    }
    let wanted = |d: &Digest32| {
        p.targets
            .iter()
            .find(|t| t.key == Want::Is(*d))
            .map(|t| t.slot)
    };
    let at = |held: &[(KeySlot, Option<Digest32>)], s: KeySlot| {
        held.iter().find(|(h, _)| *h == s).and_then(|(_, d)| *d)
    };
    let set = |held: &mut Vec<(KeySlot, Option<Digest32>)>, s: KeySlot, d: Option<Digest32>| {
        if let Some(entry) = held.iter_mut().find(|(h, _)| *h == s) {
            entry.1 = d;
        }
    };
    // Each round places at least one key or fails; there are at most as many keys as slots.
    for _ in 0..=slots.len() * 2 {
        let misplaced = p.targets.iter().find_map(|t| match t.key {
            Want::Is(d) if at(&held, t.slot) != Some(d) => Some((t.slot, d)),
            _ => None,
        });
        let Some((dest, d)) = misplaced else {
            break;
        };
        let src = held
            .iter()
            .find(|(_, h)| *h == Some(d))
            .map(|(s, _)| *s)
            .ok_or(malformed(
                "a key this change needs is no longer on the card",
            ))?;
        if let Some(occupant) = at(&held, dest) {
            match wanted(&occupant) {
                Some(home) if home != dest => {
                    // Park the occupant: in its own target slot when free, else any free slot.
                    let free = if at(&held, home).is_none() {
                        Some(home)
                    } else {
                        slots
                            .iter()
                            .copied()
                            .find(|s| *s != dest && at(&held, *s).is_none())
                    }
                    .ok_or(malformed("no free key slot to swap keys through"))?;
                    keys::move_key(ch, dest, free)?;
                    set(&mut held, free, Some(occupant));
                }
                _ => keys::delete_key(ch, dest)?,
            }
            set(&mut held, dest, None);
        }
        keys::move_key(ch, src, dest)?;
        set(&mut held, src, None);
        set(&mut held, dest, Some(d));
    }
    // Slots that must end without a key, and staging slots nobody wants a key in.
    for s in slots {
        let must_be_empty = p
            .targets
            .iter()
            .find(|t| t.slot == s)
            .is_none_or(|t| t.key == Want::Empty);
        if must_be_empty && at(&held, s).is_some() {
            keys::delete_key(ch, s)?;
            set(&mut held, s, None);
        }
    }
    for t in &p.targets {
        if let Want::Is(d) = t.key {
            if at(&held, t.slot) != Some(d) {
                return Err(malformed("could not place every key of the change"));
            }
        }
    }
    Ok(())
}

/// What recovery did with an unfinished change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// A committed change was finished.
    Finished(Kind),
    /// A prepared change was undone (the card is as it was before it).
    Undone(Kind),
    /// A credential change was closed; `steps` says how far it got (the holder's secrets
    /// finish it, see [`step`]).
    Closed {
        /// What it was.
        kind: Kind,
        /// Steps it had done.
        steps: u8,
    },
}

/// Finishes or undoes the unfinished change in `record` (management key authenticated; for
/// set-up also the PIN verified). Returns what was done.
pub fn recover(ch: &mut dyn Channel, pending: &Pending) -> Result<Recovered, CardError> {
    if let Kind::Other(_) = pending.kind {
        return Err(malformed(
            "the card holds an unfinished change by a newer version of Tessera",
        ));
    }
    if pending.kind.is_credentials() {
        if authenticates_itself(pending) {
            admin::settle_management_key(ch)?;
        }
        finish(ch, pending)?;
        return Ok(Recovered::Closed {
            kind: pending.kind,
            steps: pending.steps,
        });
    }
    match pending.phase {
        Phase::Prepared => {
            undo(ch, pending)?;
            finish(ch, pending)?;
            Ok(Recovered::Undone(pending.kind))
        }
        Phase::Committed => {
            apply(ch, pending)?;
            finish(ch, pending)?;
            Ok(Recovered::Finished(pending.kind))
        }
    }
}

/// Whether recovering `pending` authenticates with the management key by itself (an
/// interrupted set-up may have left the card with the new key before it was stored as the
/// current one: only the PIN-protected object knows which).
pub fn authenticates_itself(pending: &Pending) -> bool {
    pending.kind == Kind::Setup && pending.steps & step::KEY_STORED != 0
}

/// A retired slot beyond what Key History counts that holds no key and no certificate: where
/// a change may stage a key unseen. `skip` are slots already taken by the same change.
pub fn free_retired_slot(
    ch: &mut dyn Channel,
    history: &admin::KeyHistory,
    skip: &[KeySlot],
) -> Result<Option<KeySlot>, CardError> {
    let used = usize::from(history.on_card_certs) + usize::from(history.off_card_certs);
    let candidates: Vec<KeySlot> = KeySlot::all()
        .filter(|s| s.retired_number().is_some())
        .skip(used)
        .filter(|s| !skip.contains(s))
        .collect();
    for s in candidates {
        if keys::metadata(ch, s)?.is_none() && admin::read_certificate(ch, s)?.is_none() {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Whether a status word means "this card does not have the command" (for optional steps).
pub fn not_supported(e: &CardError) -> bool {
    matches!(
        e,
        CardError::Status(
            StatusWord::InsNotSupported | StatusWord::ClaNotSupported | StatusWord::IncorrectP1P2
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            stamp: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            pending: Some(Pending {
                id: [9; 8],
                phase: Phase::Committed,
                kind: Kind::InstallRenewal,
                staging: vec![KeySlot::from_reference(0x84).unwrap()],
                areas: vec![COPY_AREA_FIRST, COPY_AREA_FIRST + 1],
                history: Some((2, 0)),
                targets: vec![
                    Target {
                        slot: KeySlot::SIGNATURE,
                        key: Want::Is([7; 32]),
                        cert: Want::Is([8; 32]),
                        chain: Want::Empty,
                    },
                    Target {
                        slot: KeySlot::from_reference(0x83).unwrap(),
                        key: Want::Is([5; 32]),
                        cert: Want::Keep,
                        chain: Want::Keep,
                    },
                ],
                steps: 0,
            }),
        }
    }

    #[test]
    fn record_round_trips() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        let idle = Record {
            stamp: Some([0; 8]),
            pending: None,
        };
        assert_eq!(Record::decode(&idle.encode()).unwrap(), idle);
    }

    #[test]
    fn damaged_records_are_errors_not_guesses() {
        let good = sample().encode();
        for cut in 0..good.len() {
            // Every truncation either fails or decodes to something (never panics).
            let _ = Record::decode(good.get(..cut).unwrap());
        }
        assert!(
            Record::decode(&[0x80, 0x01, 0x02]).is_err(),
            "unknown version"
        );
        assert!(Record::decode(&[]).is_err());
    }

    #[test]
    fn slots_lists_targets_and_staging_once() {
        let p = sample().pending.unwrap();
        let refs: Vec<u8> = p.slots().iter().map(|s| s.reference()).collect();
        assert_eq!(refs, vec![0x9C, 0x83, 0x84]);
    }
}
