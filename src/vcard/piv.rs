//! The PIV applet's command dispatcher. STUB: the applet helper fills this in.
use super::state::CardState;

/// Result of one command: the raw response and whether persistent state changed.
pub struct Outcome {
    /// Response data followed by SW1 SW2.
    pub response: Vec<u8>,
    /// True when `state` was modified and must be saved.
    pub changed: bool,
}

/// Volatile applet state (selection, verifications, chaining buffers).
#[derive(Default)]
pub struct Applet {}

impl Applet {
    /// A freshly powered card.
    pub fn new() -> Self {
        Self::default()
    }
    /// Power-off or reset: forget every verification and buffer.
    pub fn reset(&mut self) {}
    /// Processes one command APDU.
    pub fn process(&mut self, _state: &mut CardState, _apdu: &[u8]) -> Outcome {
        Outcome { response: vec![0x6D, 0x00], changed: false }
    }
}
