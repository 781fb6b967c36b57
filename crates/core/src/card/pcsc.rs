//! Real readers through PC/SC (the `pcsc` crate over pcsc-lite). Shared mode; one PC/SC
//! transaction per logical operation; the card handle is never dropped (pcsc's `Card` resets
//! the card on drop, which would wipe every process's PIN verification) but disconnected with
//! `LeaveCard`. A reset by another process is answered by reconnecting without reset and
//! reporting [`CardError::Reset`] once.

use super::connector::{Connector, Location};
use super::{atr, CardError, Channel, TransactionOp, Transport};
pub use ::pcsc::Context;
use ::pcsc::{Card, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use std::ffi::{CStr, CString};
use std::time::Duration;

/// A reader as seen by a status query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    /// Reader name as pcscd reports it.
    pub name: String,
    /// A card is in the reader.
    pub card_present: bool,
    /// The card's ATR (empty when no card).
    pub atr: Vec<u8>,
}

fn reader_err(e: pcsc::Error) -> CardError {
    match e {
        pcsc::Error::ResetCard => CardError::Reset,
        pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard => CardError::NoCard,
        other => CardError::Reader(other.to_string()),
    }
}

/// Opens a PC/SC context (fails when pcscd is not reachable).
pub fn establish() -> Result<Context, CardError> {
    Context::establish(Scope::User).map_err(reader_err)
}

/// Lists readers with card presence and ATR, without connecting to any card.
pub fn readers(ctx: &Context) -> Result<Vec<ReaderInfo>, CardError> {
    let names = match ctx.list_readers_owned() {
        Ok(n) => n,
        Err(pcsc::Error::NoReadersAvailable) => return Ok(Vec::new()),
        Err(e) => return Err(reader_err(e)),
    };
    let mut states: Vec<ReaderState> = names
        .into_iter()
        .map(|n| ReaderState::new(n, State::UNAWARE))
        .collect();
    if states.is_empty() {
        return Ok(Vec::new());
    }
    ctx.get_status_change(Duration::ZERO, &mut states)
        .map_err(reader_err)?;
    Ok(states.iter().map(info_of).collect())
}

fn info_of(s: &ReaderState) -> ReaderInfo {
    let present = s.event_state().contains(State::PRESENT);
    ReaderInfo {
        name: s.name().to_string_lossy().into_owned(),
        card_present: present,
        atr: if present {
            s.atr().to_vec()
        } else {
            Vec::new()
        },
    }
}

/// Blocks until a reader in `watch` changes state (card inserted or removed) or `timeout`
/// passes; returns the readers' new states, or `None` on timeout. [`Context::cancel`] from
/// another thread ends the wait with [`CardError::Reader`] ("cancelled").
pub fn wait_for_change(
    ctx: &Context,
    watch: &[ReaderInfo],
    timeout: Option<Duration>,
) -> Result<Option<Vec<ReaderInfo>>, CardError> {
    let mut states: Vec<ReaderState> = Vec::with_capacity(watch.len());
    for r in watch {
        let name =
            CString::new(r.name.clone()).map_err(|_| CardError::Reader("reader name".into()))?;
        let current = if r.card_present {
            State::PRESENT
        } else {
            State::EMPTY
        };
        states.push(ReaderState::new(name, current));
    }
    match ctx.get_status_change(timeout, &mut states) {
        Ok(()) => Ok(Some(states.iter().map(info_of).collect())),
        Err(pcsc::Error::Timeout) => Ok(None),
        Err(e) => Err(reader_err(e)),
    }
}

/// One card in one reader.
pub struct PcscTransport {
    card: Option<Card>,
    atr: Vec<u8>,
    extended: bool,
    name: String,
    /// The handle saw a reset or removal; reconnect before the next transaction.
    stale: bool,
}

impl PcscTransport {
    /// Connects in shared mode to the card in `reader`.
    pub fn connect(ctx: &Context, reader: &CStr) -> Result<Self, CardError> {
        let card = ctx
            .connect(reader, ShareMode::Shared, Protocols::ANY)
            .map_err(reader_err)?;
        let mut t = Self {
            card: Some(card),
            atr: Vec::new(),
            extended: false,
            name: reader.to_string_lossy().into_owned(),
            stale: false,
        };
        t.refresh_atr();
        Ok(t)
    }

    fn refresh_atr(&mut self) {
        if let Some(card) = &self.card {
            if let Ok(status) = card.status2_owned() {
                self.atr = status.atr().to_vec();
            }
        }
        self.extended = atr::supports_extended_length(&self.atr);
    }

    fn reconnect(&mut self) -> Result<(), CardError> {
        let card = self.card.as_mut().ok_or(CardError::NoCard)?;
        card.reconnect(ShareMode::Shared, Protocols::ANY, Disposition::LeaveCard)
            .map_err(reader_err)?;
        self.stale = false;
        self.refresh_atr();
        Ok(())
    }

    /// Disconnects, leaving the card as it is (PIN verifications of other processes survive).
    pub fn disconnect(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if let Some(card) = self.card.take() {
            if let Err((card, e)) = card.disconnect(Disposition::LeaveCard) {
                log::debug!("SCardDisconnect: {e}");
                // Never let pcsc's Drop reset the card.
                std::mem::forget(card);
            }
        }
    }
}

impl Drop for PcscTransport {
    fn drop(&mut self) {
        self.release();
    }
}

struct PcscChannel<'a, 'tx> {
    tx: &'a pcsc::Transaction<'tx>,
    extended: bool,
    lost: bool,
}

impl Channel for PcscChannel<'_, '_> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        let mut buf = zeroize::Zeroizing::new(vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED]);
        match self.tx.transmit(apdu, &mut buf) {
            Ok(resp) => Ok(resp.to_vec()),
            Err(e) => {
                let err = reader_err(e);
                if matches!(err, CardError::Reset | CardError::NoCard) {
                    self.lost = true;
                }
                Err(err)
            }
        }
    }

    fn extended_length(&self) -> bool {
        self.extended
    }
}

impl Transport for PcscTransport {
    fn transaction(&mut self, op: &mut TransactionOp<'_>) -> Result<(), CardError> {
        if self.stale {
            self.reconnect()?;
            return Err(CardError::Reset);
        }
        let extended = self.extended;
        let card = self.card.as_mut().ok_or(CardError::NoCard)?;
        let (result, lost) = match card.transaction2() {
            Ok(tx) => {
                let mut ch = PcscChannel {
                    tx: &tx,
                    extended,
                    lost: false,
                };
                let r = op(&mut ch);
                let lost = ch.lost;
                drop(tx);
                (r, lost)
            }
            Err((_card, e)) => (Err(reader_err(e)), false),
        };
        match result {
            Err(CardError::Reset) if !lost => {
                // SCardBeginTransaction saw the reset: reconnect now, report it once.
                self.reconnect()?;
                return Err(CardError::Reset);
            }
            Err(CardError::NoCard) => self.stale = true,
            _ => {}
        }
        if lost {
            self.stale = true;
        }
        result
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// How long reader states from pcscd are reused: calls that send no APDU (NSS polls
/// C_GetTokenInfo constantly) then cost no pcscd round trip either. A card pulled within that
/// window is noticed by its next APDU.
const READER_STATE_TTL: Duration = Duration::from_millis(100);

/// The readers of the PC/SC service (pcscd) as a [`Connector`]. The context is established
/// when first needed and again after pcscd went away; it is shared by every card's
/// connection but held only for listing and connecting, never for a card's transaction.
#[derive(Default)]
pub struct PcscConnector {
    ctx: parking_lot::Mutex<Option<Context>>,
    cache: parking_lot::Mutex<Option<(std::time::Instant, Vec<ReaderInfo>)>>,
}

impl PcscConnector {
    /// A connector that has not contacted pcscd yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn context(&self) -> Option<Context> {
        let mut ctx = self.ctx.lock();
        if ctx.is_none() {
            *ctx = establish().ok();
        }
        ctx.clone()
    }

    fn readers_now(&self) -> Option<Vec<ReaderInfo>> {
        let ctx = self.context()?;
        match readers(&ctx) {
            Ok(r) => {
                *self.cache.lock() = Some((std::time::Instant::now(), r.clone()));
                Some(r)
            }
            Err(e) => {
                log::debug!("pcsc readers: {e}");
                *self.ctx.lock() = None;
                *self.cache.lock() = None;
                None
            }
        }
    }
}

fn located(r: ReaderInfo) -> super::connector::ReaderInfo {
    super::connector::ReaderInfo {
        location: Location::Reader(r.name),
        card_present: r.card_present,
        atr: r.atr,
    }
}

impl Connector for PcscConnector {
    fn readers(&self) -> Option<Vec<super::connector::ReaderInfo>> {
        let cached = self
            .cache
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < READER_STATE_TTL)
            .map(|(_, r)| r.clone());
        let list = match cached {
            Some(r) => r,
            None => self.readers_now()?,
        };
        Some(list.into_iter().map(located).collect())
    }

    fn connect(&self, location: &Location) -> Result<Box<dyn Transport>, CardError> {
        let Location::Reader(name) = location else {
            return Err(CardError::NoCard);
        };
        let ctx = self.context().ok_or(CardError::NoCard)?;
        let cname = CString::new(name.clone()).map_err(|_| CardError::NoCard)?;
        Ok(Box::new(PcscTransport::connect(&ctx, &cname)?))
    }

    fn wait_for_change(&self, watch: &[super::connector::ReaderInfo], timeout: Duration) -> bool {
        let watch: Vec<ReaderInfo> = watch
            .iter()
            .filter_map(|r| match &r.location {
                Location::Reader(name) => Some(ReaderInfo {
                    name: name.clone(),
                    card_present: r.card_present,
                    atr: r.atr.clone(),
                }),
                Location::File(_) => None,
            })
            .collect();
        let Some(ctx) = self.ctx.lock().clone() else {
            return false;
        };
        if watch.is_empty() {
            return false;
        }
        let _ = wait_for_change(&ctx, &watch, Some(timeout));
        *self.cache.lock() = None;
        true
    }

    fn cancel(&self) {
        if let Some(ctx) = self.ctx.lock().as_ref() {
            let _ = ctx.cancel();
        }
    }
}
