//! Tessera's core: card I/O (APDUs, BER-TLV, ATRs, transports and the connectors that find
//! cards), the card applets (PIV; IDPrime), and the token layer that maps a card to PKCS#11
//! slots, tokens, objects and login state. It has no C ABI and no user interface: the PKCS#11
//! module (`tessera-pkcs11`) and the control manager (`tessera`) are built on it. Layers, top to
//! bottom: `token`, `applet`, `card`.

pub mod applet;
pub mod card;
pub mod logging;
pub mod token;
