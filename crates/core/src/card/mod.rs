//! Card I/O: APDUs, BER-TLV, status words, ATR facts and the `Transport` trait that every way of
//! reaching a card (PC/SC reader, in-process virtual card, scripted test transport) implements.
//! Nothing here knows PIV or PKCS#11; applets build on [`apdu::exchange`].

pub mod apdu;
pub mod atr;
pub mod connector;
pub mod pcsc;
pub mod sw;
pub mod tlv;

pub use apdu::{exchange, Command, Response};
pub use connector::{Connector, Connectors, Location, ReaderInfo};
pub use sw::StatusWord;

/// Errors from talking to a card.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The card answered with a non-success status word.
    #[error("card returned status {0}")]
    Status(StatusWord),
    /// The card's answer does not parse.
    #[error("malformed card response: {0}")]
    Malformed(&'static str),
    /// A TLV structure does not parse.
    #[error("malformed TLV: {0}")]
    Tlv(#[from] tlv::TlvError),
    /// No card in the reader, or it was removed.
    #[error("no card present")]
    NoCard,
    /// The card was reset by someone else; the transport reconnected and the applet must be
    /// selected again (and every verification is gone).
    #[error("card was reset")]
    Reset,
    /// The reader or the service failed.
    #[error("reader error: {0}")]
    Reader(String),
    /// The virtual card's state file could not be read or written.
    #[error("virtual card state: {0}")]
    State(String),
}

/// The inside of a transaction: where APDUs are sent. [`apdu::exchange`] adds chaining,
/// extended length and response collection on top of `transmit_raw`.
pub trait Channel {
    /// Sends one encoded APDU and returns the raw response (data followed by SW1 SW2).
    /// A card reset by someone else surfaces as [`CardError::Reset`].
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError>;
    /// Whether extended-length APDUs may be sent.
    fn extended_length(&self) -> bool;
}

/// The operation run inside one transaction.
pub type TransactionOp<'a> = dyn FnMut(&mut dyn Channel) -> Result<(), CardError> + 'a;

/// One way to reach one card (PC/SC reader, in-process virtual card, scripted test card).
pub trait Transport: Send {
    /// Runs `op` with exclusive use of the card (one logical operation), ending the
    /// transaction without resetting the card whatever `op` returns. When the card was reset
    /// or replaced by someone else since the last transaction, the transport reconnects
    /// without resetting and returns [`CardError::Reset`] once without running `op`: the
    /// caller must forget every verification and select the applet again.
    fn transaction(&mut self, op: &mut TransactionOp<'_>) -> Result<(), CardError>;
    /// The card's answer-to-reset.
    fn atr(&self) -> &[u8];
    /// Where the card is (reader name or virtual card path), for messages.
    fn name(&self) -> &str;
}

/// Runs `f` inside one transaction of `t` and returns its result.
pub fn with_transaction<R>(
    t: &mut dyn Transport,
    f: impl FnOnce(&mut dyn Channel) -> Result<R, CardError>,
) -> Result<R, CardError> {
    let mut f = Some(f);
    let mut out = None;
    t.transaction(&mut |ch| {
        if let Some(f) = f.take() {
            out = Some(f(ch)?);
        }
        Ok(())
    })?;
    out.ok_or(CardError::Malformed("transaction did not run"))
}
