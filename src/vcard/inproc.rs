//! The virtual card reached in-process: a [`Transport`] whose APDUs run the applet directly
//! against the state file. A PC/SC transaction becomes holding the file lock, so another
//! process using the same card file waits, as it would behind pcscd. Faults that tests need
//! (a reset by "another process", a removed card) are injected here.

use super::piv::Applet;
use super::store::CardFile;
use crate::card::{CardError, Channel, TransactionOp, Transport};
use std::path::Path;

/// The card as seen inside a transaction.
struct Session {
    file: CardFile,
    applet: Applet,
}

impl Channel for Session {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        let applet = &mut self.applet;
        self.file.update(|state| {
            let out = applet.process(state, apdu);
            (out.response, out.changed)
        })
    }

    fn extended_length(&self) -> bool {
        true
    }
}

/// A virtual card as a transport.
pub struct VirtualTransport {
    session: Session,
    atr: Vec<u8>,
    name: String,
    reset_pending: bool,
    removed: bool,
}

impl VirtualTransport {
    /// Opens the card file at `path`.
    pub fn open(path: &Path) -> Result<Self, CardError> {
        Ok(Self {
            session: Session {
                file: CardFile::open(path)?,
                applet: Applet::new(),
            },
            atr: super::atr(),
            name: format!("Tessera Virtual PIV {}", path.display()),
            reset_pending: false,
            removed: false,
        })
    }

    /// Simulates a card reset by another process: verifications are lost and the next
    /// transaction reports [`CardError::Reset`].
    pub fn inject_reset(&mut self) {
        self.session.applet.reset();
        self.reset_pending = true;
    }

    /// Simulates removing (`true`) or re-inserting (`false`) the card.
    pub fn set_removed(&mut self, removed: bool) {
        if removed != self.removed {
            self.session.applet.reset();
            self.reset_pending = !removed;
        }
        self.removed = removed;
    }

    /// Whether the card is in its (virtual) reader.
    pub fn is_present(&self) -> bool {
        !self.removed
    }
}

impl Transport for VirtualTransport {
    fn transaction(&mut self, op: &mut TransactionOp<'_>) -> Result<(), CardError> {
        if self.removed {
            return Err(CardError::NoCard);
        }
        if std::mem::take(&mut self.reset_pending) {
            return Err(CardError::Reset);
        }
        self.session.file.hold()?;
        let out = op(&mut self.session);
        self.session.file.release();
        out
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn name(&self) -> &str {
        &self.name
    }
}
