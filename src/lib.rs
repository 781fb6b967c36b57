//! Tessera: smart-card middleware for PIV cards. The crate is both the PKCS#11 module
//! (`libtessera_pkcs11.so`) and the library behind the `tessera` control manager. Layers, top
//! to bottom: `pkcs11` (C ABI), `token`, `applet`, `card` (APDUs and transports), `vcard` (the
//! software PIV card).

pub mod applet;
pub mod card;
pub mod manager;
pub mod pkcs11;
pub mod token;
pub mod vcard;
