//! The virtual card: a complete PIV applet (SP 800-73-4 plus the YubiKey extensions) in
//! software, its persistent state in one file, and the two ways to reach it — in-process as a
//! [`crate::card::Transport`] and over pcscd's vpcd driver. It is the embedded default card and
//! the test bench's fault injector; it shares no code with the host-side PIV driver on purpose,
//! so that one cannot hide the other's mistakes.

pub mod crypto;
pub mod inproc;
pub mod piv;
pub mod state;
pub mod store;
pub mod vpcd;

pub use inproc::VirtualTransport;
pub use piv::Applet;
pub use state::CardState;
pub use store::CardFile;

/// Environment variable naming in-process virtual cards (paths separated by ':').
pub const ENV_VCARD: &str = "TESSERA_VCARD";

/// The card's answer-to-reset: T=1, historical bytes announce extended Lc/Le (card
/// capabilities 73 C0 21 C0) followed by "Tessera".
pub fn atr() -> Vec<u8> {
    // T0 = F|13: TA1..TD1 present, 13 historical bytes: category 80, card capabilities
    // 73 C0 21 C0 (extended Lc/Le), then a tag 5 object "Tessera" (7 bytes).
    let mut body = vec![0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15];
    body.extend_from_slice(&[0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57]);
    body.extend_from_slice(b"Tessera");
    crate::card::atr::with_check_byte(&body)
}

/// Paths listed in `TESSERA_VCARD`, in order, without empty entries.
pub fn configured_paths() -> Vec<std::path::PathBuf> {
    std::env::var_os(ENV_VCARD)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn atr_announces_extended_length() {
        let atr = super::atr();
        assert!(crate::card::atr::supports_extended_length(&atr));
        assert_eq!(crate::card::atr::historical_bytes(&atr).len(), 13);
    }
}
