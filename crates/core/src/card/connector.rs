//! Connectors: the places cards are found (the PC/SC service's readers, virtual card files).
//! The token layer sees readers as [`Location`]s with presence and ATR, and gets a
//! [`Transport`] from the connector that serves a location; it never names a transport. The
//! program that loads the token layer (the PKCS#11 module, the control manager) chooses the
//! connectors.

use super::{CardError, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a card is, as the user would name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A reader, by the name its service gives it.
    Reader(String),
    /// A card kept in a file (the software card).
    File(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Reader(name) => f.write_str(name),
            Location::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A reader as a status query sees it (no APDU sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    /// The reader.
    pub location: Location,
    /// A card is in the reader.
    pub card_present: bool,
    /// The card's ATR when the connector knows it without connecting (else empty).
    pub atr: Vec<u8>,
}

/// One place cards are found.
pub trait Connector: Send + Sync {
    /// The readers now (IPC or a file check, never an APDU); `None` when the service behind
    /// the connector cannot be reached. A connector may answer from a cache a few
    /// milliseconds old.
    fn readers(&self) -> Option<Vec<ReaderInfo>>;
    /// Connects to the card at `location` (one of this connector's readers).
    fn connect(&self, location: &Location) -> Result<Box<dyn Transport>, CardError>;
    /// What a slot of this reader is called (C_GetSlotInfo's description).
    fn describe(&self, location: &Location) -> String {
        location.to_string()
    }
    /// Blocks until one of `watch` changes (card inserted or removed) or `timeout` passes.
    /// Returns `false` at once when this connector cannot wait for events (the caller polls).
    fn wait_for_change(&self, _watch: &[ReaderInfo], _timeout: Duration) -> bool {
        false
    }
    /// Ends a blocked [`Connector::wait_for_change`] early (C_Finalize).
    fn cancel(&self) {}
}

/// The connectors a program uses, in the order their readers get slots.
pub type Connectors = Vec<Arc<dyn Connector>>;
