//! The virtual card: a complete PIV applet (SP 800-73-4 plus the YubiKey extensions) in
//! software, behaving like one of several real card families (its [`Profile`]), or a Thales
//! IDPrime card as OpenSC's idprime driver knows it (its [`CardKind`]), its persistent
//! state in one file, and the two ways to reach it — in-process as a
//! [`crate::card::Transport`] and over pcscd's vpcd driver. It is the embedded default card and
//! the test bench's fault injector; it shares no code with the host-side PIV driver on purpose,
//! so that one cannot hide the other's mistakes.

// Card I/O from the core (`crate::card`): APDUs, TLV, ATRs, the transport it implements.
use tessera_core::card;

pub mod crypto;
pub mod idprime;
pub mod inproc;
pub mod kind;
pub mod piv;
pub mod profile;
pub mod seal;
pub mod state;
pub mod store;
pub mod vpcd;

pub use inproc::{VirtualConnector, VirtualTransport};
pub use kind::{CardApplet, CardKind};
pub use piv::Applet;
pub use profile::Profile;
pub use state::CardState;
pub use store::CardFile;

/// Environment variable naming in-process virtual cards (paths separated by ':').
pub const ENV_VCARD: &str = "TESSERA_VCARD";

/// The answer-to-reset of a card with the default profile (yubikey-5.7): T=1, historical bytes
/// announce extended Lc/Le (card capabilities 73 C0 21 C0) followed by "Tessera". A card's own
/// ATR is [`CardState::atr`].
pub fn atr() -> Vec<u8> {
    Profile::default().atr()
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

/// Where Tessera's programs find cards: the virtual cards `TESSERA_VCARD` names (their
/// slots first), then pcscd's readers.
pub fn standard_connectors() -> crate::card::Connectors {
    vec![
        std::sync::Arc::new(VirtualConnector::configured()),
        std::sync::Arc::new(crate::card::pcsc::PcscConnector::new()),
    ]
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
