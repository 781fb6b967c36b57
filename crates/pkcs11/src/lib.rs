//! The C ABI: every PKCS#11 2.40 function exported as `C_*`, the 2.40 and 3.0 function lists
//! and the "PKCS 11" interfaces. Each entry point checks pointers and lengths, turns them into
//! Rust values (only in [`raw`]), calls `crate::token::library`, and maps the result to a
//! CK_RV under `catch_unwind`. This layer knows pointers and nothing about APDUs or PIV.

// The layers below (`crate::token`, …).
use tessera_core::{logging, token};
use tessera_vcard as vcard;

pub mod crypto;
mod entry;
pub mod general;
pub mod interface;
pub mod object;
pub mod raw;
pub mod session;
pub mod slot;
