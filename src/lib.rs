//! Tessera's control manager: the use cases behind the `tessera` command (status, PIN and PUK,
//! import and renewal of e-Certs, export, repair, the system check, browser registration, the
//! virtual cards), on the core's typed card operations. The layers below are re-exported under
//! the names the manager uses: `token`, `applet`, `card` (from `tessera-core`) and `vcard`
//! (from `tessera-vcard`).

pub use tessera_core::{applet, card, logging, token};
pub use tessera_vcard as vcard;

pub mod manager;
