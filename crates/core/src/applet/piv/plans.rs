//! The changes Tessera makes to a PIV card's key slots, each as one recoverable unit of the
//! change protocol ([`super::change`]): load a key (imported or generated) with its
//! certificate and chain, write a certificate, empty a slot, stage a renewal key, install a
//! renewed certificate. Each runs inside the caller's transaction with the management key
//! already authenticated, and leaves the card either as it was or as wanted — also after a
//! crash at any APDU, once [`super::change::recover`] has run.

use super::admin::{self, KeyHistory};
use super::change::{self, Change, Kind, Target, Want};
use super::get_data;
use super::keys::{self, ImportKey, KeyAlgorithm, PinPolicy, PublicKeyInfo};
use super::slots::KeySlot;
use crate::card::{CardError, Channel, StatusWord};

/// What the card can do that the protocol relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// GET METADATA reports each slot's public key (so keys can be found after a crash).
    pub metadata: bool,
    /// MOVE KEY moves and deletes keys (Yubico 5.7).
    pub move_key: bool,
}

impl Caps {
    /// Keys can be staged unseen and swapped into place.
    fn staged(self) -> bool {
        self.metadata && self.move_key
    }
}

/// The key a change puts into a slot.
pub enum NewKey<'a> {
    /// Imported from the host.
    Import {
        /// The private key.
        key: &'a ImportKey<'a>,
        /// Its PIN policy.
        policy: PinPolicy,
    },
    /// Generated on the card.
    Generate {
        /// Algorithm.
        algorithm: KeyAlgorithm,
        /// Its PIN policy.
        policy: PinPolicy,
    },
}

impl NewKey<'_> {
    /// Puts the key into `slot` with the PIN policy it is meant to have in `home` (a key
    /// staged elsewhere keeps the policy it was made with when it moves: the card's default
    /// for the staging slot would be wrong for 9C or 9E).
    fn put(
        &self,
        ch: &mut dyn Channel,
        slot: KeySlot,
        home: KeySlot,
    ) -> Result<Option<PublicKeyInfo>, CardError> {
        let policy = |p: PinPolicy| {
            if slot == home {
                p
            } else {
                p.effective(home)
            }
        };
        match self {
            NewKey::Import { key, policy: p } => {
                keys::import(ch, slot, key, policy(*p))?;
                Ok(None)
            }
            NewKey::Generate {
                algorithm,
                policy: p,
            } => keys::generate(ch, slot, *algorithm, policy(*p)).map(Some),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            NewKey::Import { .. } => Kind::Import,
            NewKey::Generate { .. } => Kind::Generate,
        }
    }
}

/// A key loaded into a slot, with what goes beside it.
pub struct Load<'a> {
    /// The slot.
    pub slot: KeySlot,
    /// The key.
    pub key: &'a NewKey<'a>,
    /// Its certificate (`None`: the slot ends without one; the old one never stays).
    pub certificate: Option<&'a [u8]>,
    /// The CA chain kept beside it (`None`: none).
    pub chain: Option<&'a [u8]>,
    /// Keep the slot's old key and certificate in Key History (the next retired slot)
    /// instead of replacing them.
    pub keep_old: bool,
}

/// Refusals of the planner (the card was not touched).
fn refuse(sw: StatusWord) -> CardError {
    CardError::Status(sw)
}

/// The next retired slot Key History would count.
pub fn next_history_slot(history: &KeyHistory) -> Option<KeySlot> {
    let used = usize::from(history.on_card_certs) + usize::from(history.off_card_certs);
    KeySlot::all()
        .filter(|s| s.retired_number().is_some())
        .nth(used)
}

/// Loads a key (and certificate and chain) into `load.slot`. `accept` sees the new key's
/// public key before anything is committed; returning false abandons the change with the
/// card unchanged. Returns the new public key when the card reports it (a card without GET
/// METADATA reports only a generated one).
pub fn load(
    ch: &mut dyn Channel,
    caps: Caps,
    load: &Load<'_>,
    accept: &dyn Fn(&PublicKeyInfo) -> bool,
) -> Result<Option<PublicKeyInfo>, CardError> {
    let history = admin::key_history(ch)?.unwrap_or_default();
    let slot = load.slot;
    if !caps.staged() {
        return load_in_place(ch, caps, load, accept);
    }
    let old_key = change::key_digest(ch, slot)?;
    let keep = load.keep_old && old_key.is_some();
    let history_slot = if keep {
        let h = next_history_slot(&history).ok_or(refuse(StatusWord::NoSpace))?;
        if change::key_digest(ch, h)?.is_some() || admin::read_certificate(ch, h)?.is_some() {
            log::warn!("retired slot {h} holds data Key History does not count");
            return Err(refuse(StatusWord::NoSpace));
        }
        Some(h)
    } else {
        None
    };
    let skip: Vec<KeySlot> = history_slot.into_iter().collect();
    let staging = change::free_retired_slot(ch, &history, &skip)?;
    let staging = match (staging, history_slot) {
        (Some(s), _) => s,
        // Key History is one short of full: no room to stage the new key beside the old one,
        // so the old key is retired first and the new one goes straight into the slot.
        (None, Some(h)) => return load_after_retiring(ch, load, &history, h, accept),
        (None, None) => return Err(refuse(StatusWord::NoSpace)),
    };
    let old_cert = admin::read_certificate(ch, slot)?;
    let old_chain = get_data(ch, slot.chain_tag())?.filter(|v| !v.is_empty());

    let mut blobs: Vec<&[u8]> = Vec::new();
    blobs.extend(load.certificate);
    blobs.extend(load.chain.filter(|c| !c.is_empty()));
    if keep {
        blobs.extend(old_cert.as_deref());
        blobs.extend(old_chain.as_deref());
    }
    let mut change = Change::begin(ch, load.key.kind(), &[staging], blobs.len())?;
    let generated = load.key.put(ch, staging, slot)?;
    let public = match generated {
        Some(p) => p,
        None => keys::metadata(ch, staging)?
            .and_then(|m| m.public_key)
            .ok_or(CardError::Malformed("the card does not report the new key"))?,
    };
    if !accept(&public) {
        change.finish(ch)?;
        return Err(CardError::Malformed(
            "the card holds a different key than the one loaded",
        ));
    }
    let cert = change.want(ch, load.certificate)?;
    let chain = change.want_chain(ch, load.chain)?;
    let mut targets = vec![Target {
        slot,
        key: Want::Is(change::digest(&public.spki_der)),
        cert,
        chain,
    }];
    let mut new_history = None;
    if let (Some(h), Some(old)) = (history_slot, old_key) {
        let cert = change.want(ch, old_cert.as_deref())?;
        let chain = change.want_chain(ch, old_chain.as_deref())?;
        targets.push(Target {
            slot: h,
            key: Want::Is(old),
            cert,
            chain,
        });
        new_history = Some((
            history.on_card_certs.saturating_add(1),
            history.off_card_certs,
        ));
    }
    change.commit(ch, targets, new_history)?;
    change.finish(ch)?;
    Ok(Some(public))
}

/// [`load`] keeping the old key when no retired slot is free to stage the new one: the old
/// key and certificate move into history slot `history_slot` (committed), then the new key
/// goes straight into the emptied slot. A crash in between leaves the slot empty and the old
/// e-Cert whole in Key History.
fn load_after_retiring(
    ch: &mut dyn Channel,
    load: &Load<'_>,
    history: &KeyHistory,
    history_slot: KeySlot,
    accept: &dyn Fn(&PublicKeyInfo) -> bool,
) -> Result<Option<PublicKeyInfo>, CardError> {
    let slot = load.slot;
    let old_key = change::key_digest(ch, slot)?.ok_or(refuse(StatusWord::ReferenceNotFound))?;
    let old_cert = admin::read_certificate(ch, slot)?;
    let old_chain = get_data(ch, slot.chain_tag())?.filter(|v| !v.is_empty());
    let blobs: Vec<&[u8]> = [
        load.certificate,
        load.chain,
        old_cert.as_deref(),
        old_chain.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|b| !b.is_empty())
    .collect();
    let mut change = Change::begin(ch, load.key.kind(), &[], blobs.len())?;
    let cert = change.want(ch, load.certificate)?;
    let chain = change.want_chain(ch, load.chain)?;
    let retired = Target {
        slot: history_slot,
        key: Want::Is(old_key),
        cert: change.want(ch, old_cert.as_deref())?,
        chain: change.want_chain(ch, old_chain.as_deref())?,
    };
    let counts = Some((
        history.on_card_certs.saturating_add(1),
        history.off_card_certs,
    ));
    change.commit(ch, vec![Target::empty(slot), retired.clone()], counts)?;
    let public = match load.key.put(ch, slot, slot)? {
        Some(p) => p,
        None => keys::metadata(ch, slot)?
            .and_then(|m| m.public_key)
            .ok_or(CardError::Malformed("the card does not report the new key"))?,
    };
    if !accept(&public) {
        change.commit(ch, vec![Target::empty(slot), retired], counts)?;
        change.finish(ch)?;
        return Err(CardError::Malformed(
            "the card holds a different key than the one loaded",
        ));
    }
    let loaded = Target {
        slot,
        key: Want::Is(change::digest(&public.spki_der)),
        cert,
        chain,
    };
    change.commit(ch, vec![loaded, retired], counts)?;
    change.finish(ch)?;
    Ok(Some(public))
}

/// [`load`] on a card that cannot stage keys: the old certificate goes first (so the card
/// never shows the new key with it), then the key, then the new certificate.
fn load_in_place(
    ch: &mut dyn Channel,
    caps: Caps,
    load: &Load<'_>,
    accept: &dyn Fn(&PublicKeyInfo) -> bool,
) -> Result<Option<PublicKeyInfo>, CardError> {
    let slot = load.slot;
    let occupied = admin::read_certificate(ch, slot)?.is_some()
        || (caps.metadata && keys::metadata(ch, slot)?.is_some());
    if load.keep_old && occupied {
        log::warn!("the card cannot move keys (MOVE KEY): refusing to overwrite key slot {slot}");
        return Err(refuse(StatusWord::InsNotSupported));
    }
    let old_cert = admin::read_certificate(ch, slot)?;
    let old_chain = super::get_optional(ch, slot.chain_tag())?.filter(|v| !v.is_empty());
    let blobs = [
        load.certificate,
        load.chain,
        old_cert.as_deref(),
        old_chain.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|b| !b.is_empty())
    .count();
    let mut change = Change::begin(ch, load.key.kind(), &[], blobs)?;
    let cert = change.want(ch, load.certificate)?;
    let chain = change.want_chain(ch, load.chain)?;
    // The old certificate is kept too: a card that turns out not to have the command (key
    // import is an extension) gets it back, unchanged.
    let before = Target {
        slot,
        key: Want::Keep,
        cert: change.want(ch, old_cert.as_deref())?,
        chain: change.want_chain(ch, old_chain.as_deref())?,
    };
    change.commit(
        ch,
        vec![Target {
            slot,
            key: Want::Keep,
            cert: Want::Empty,
            chain: change.no_chain(),
        }],
        None,
    )?;
    let generated = match load.key.put(ch, slot, slot) {
        Ok(g) => g,
        Err(e @ CardError::Status(StatusWord::InsNotSupported | StatusWord::ClaNotSupported)) => {
            // Nothing was written to the key: the slot gets its certificate back.
            change.commit(ch, vec![before], None)?;
            change.finish(ch)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let public = match generated {
        Some(p) => Some(p),
        None if caps.metadata => keys::metadata(ch, slot)?.and_then(|m| m.public_key),
        None => None,
    };
    if let Some(p) = &public {
        if !accept(p) {
            change.finish(ch)?;
            return Err(CardError::Malformed(
                "the card holds a different key than the one loaded",
            ));
        }
    }
    change.commit(
        ch,
        vec![Target {
            slot,
            key: Want::Keep,
            cert,
            chain,
        }],
        None,
    )?;
    change.finish(ch)?;
    Ok(public)
}

/// Writes `der` as the certificate of `slot` (and, when `chain` is given, the chain beside it).
pub fn write_certificate(
    ch: &mut dyn Channel,
    slot: KeySlot,
    der: &[u8],
    chain: Option<&[u8]>,
) -> Result<(), CardError> {
    let chain = chain.map(|c| (!c.is_empty()).then_some(c));
    let areas = 1 + usize::from(matches!(chain, Some(Some(_))));
    let mut change = Change::begin(ch, Kind::WriteCertificate, &[], areas)?;
    let cert = change.want(ch, Some(der))?;
    let chain = match chain {
        None => Want::Keep,
        Some(c) => change.want_chain(ch, c)?,
    };
    change.commit(
        ch,
        vec![Target {
            slot,
            key: Want::Keep,
            cert,
            chain,
        }],
        None,
    )?;
    change.finish(ch)
}

/// Empties `slot`: its certificate and chain, and its key when `key` (needs MOVE KEY).
pub fn clear(ch: &mut dyn Channel, caps: Caps, slot: KeySlot, key: bool) -> Result<(), CardError> {
    if key && !caps.move_key {
        return Err(refuse(StatusWord::InsNotSupported));
    }
    let mut change = Change::begin(ch, Kind::Delete, &[], 0)?;
    change.commit(
        ch,
        vec![Target {
            slot,
            key: if key { Want::Empty } else { Want::Keep },
            cert: Want::Empty,
            chain: change.no_chain(),
        }],
        None,
    )?;
    change.finish(ch)
}

/// Generates a renewal key in a retired slot and counts it in Key History (a staged key:
/// a counted retired slot with a key and no certificate). `reuse` overwrites an earlier
/// staged key instead of taking a new slot. Returns the slot and the new public key.
pub fn stage_renewal(
    ch: &mut dyn Channel,
    algorithm: KeyAlgorithm,
    policy: PinPolicy,
    reuse: Option<KeySlot>,
) -> Result<(KeySlot, PublicKeyInfo), CardError> {
    let history = admin::key_history(ch)?.unwrap_or_default();
    let (slot, counted) = match reuse {
        Some(s) => (s, true),
        None => {
            let s = next_history_slot(&history).ok_or(refuse(StatusWord::NoSpace))?;
            if change::key_digest(ch, s)?.is_some() || admin::read_certificate(ch, s)?.is_some() {
                log::warn!("retired slot {s} holds data Key History does not count");
                return Err(refuse(StatusWord::NoSpace));
            }
            (s, false)
        }
    };
    let staging: Vec<KeySlot> = if counted { vec![] } else { vec![slot] };
    let mut change = Change::begin(ch, Kind::StageRenewal, &staging, 0)?;
    let public = keys::generate(ch, slot, algorithm, policy)?;
    let history_after = (!counted).then(|| {
        (
            history.on_card_certs.saturating_add(1),
            history.off_card_certs,
        )
    });
    change.commit(
        ch,
        vec![Target {
            slot,
            key: Want::Is(change::digest(&public.spki_der)),
            cert: Want::Empty,
            chain: change.no_chain(),
        }],
        history_after,
    )?;
    change.finish(ch)?;
    Ok((slot, public))
}

/// Installs a renewed certificate: the key staged in `staged` moves into `slot` with
/// `certificate` (and `chain`; `None` keeps the chain the slot has), and the old key and
/// certificate of `slot` move into `staged` (which Key History already counts), so old mail
/// still decrypts.
pub fn install_renewal(
    ch: &mut dyn Channel,
    slot: KeySlot,
    staged: KeySlot,
    certificate: &[u8],
    chain: Option<&[u8]>,
) -> Result<(), CardError> {
    let history = admin::key_history(ch)?.unwrap_or_default();
    let new_key = change::key_digest(ch, staged)?.ok_or(refuse(StatusWord::ReferenceNotFound))?;
    let old_key = change::key_digest(ch, slot)?.ok_or(refuse(StatusWord::ReferenceNotFound))?;
    let spare =
        change::free_retired_slot(ch, &history, &[staged])?.ok_or(refuse(StatusWord::NoSpace))?;
    let old_cert = admin::read_certificate(ch, slot)?;
    let old_chain = get_data(ch, slot.chain_tag())?.filter(|v| !v.is_empty());
    let keep_chain = chain.is_none();
    let chain = chain.filter(|c| !c.is_empty());
    let blobs: Vec<&[u8]> = [
        Some(certificate),
        chain,
        old_cert.as_deref(),
        old_chain.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut change = Change::begin(ch, Kind::InstallRenewal, &[spare], blobs.len())?;
    let new_cert = change.want(ch, Some(certificate))?;
    let new_chain = if keep_chain {
        Want::Keep
    } else {
        change.want_chain(ch, chain)?
    };
    let old_cert = change.want(ch, old_cert.as_deref())?;
    let old_chain = change.want_chain(ch, old_chain.as_deref())?;
    change.commit(
        ch,
        vec![
            Target {
                slot,
                key: Want::Is(new_key),
                cert: new_cert,
                chain: new_chain,
            },
            Target {
                slot: staged,
                key: Want::Is(old_key),
                cert: old_cert,
                chain: old_chain,
            },
        ],
        None,
    )?;
    change.finish(ch)
}
