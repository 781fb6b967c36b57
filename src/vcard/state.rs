//! Persistent state of the virtual PIV card (what survives power-off). STUB: the applet helper
//! fills this in.
use serde::{Deserialize, Serialize};

/// Everything the card keeps across power cycles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CardState {
    /// Card serial number (GET SERIAL).
    pub serial: u32,
}

impl CardState {
    /// A factory-fresh card.
    pub fn factory(serial: u32) -> Self {
        Self { serial }
    }
}
