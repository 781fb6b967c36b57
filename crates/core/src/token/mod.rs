//! The PKCS#11 core: slots, tokens, sessions, objects, login state and operations, in Rust
//! types. It receives decoded values from the C ABI layer (`tessera-pkcs11`) and never sees a
//! raw pointer; it reaches cards only through applet drivers (`crate::applet`).
//!
//! Attribute values travel in their C byte representation (CK_ULONG native-endian, CK_BBOOL one
//! byte, byte arrays as they are) so that the ABI layer copies bytes and interprets nothing.

pub mod attr;
pub mod config;
pub mod error;
pub mod library;
pub mod mechanism;

/// Where a card is (a reader, a card file), as slots report it.
pub use crate::card::Location;
pub use error::{Error, Result};
pub use library::Library;

use cryptoki_sys::*;
use zeroize::Zeroizing;

/// One attribute of a caller's template (value may be key material, hence zeroizing).
#[derive(Clone)]
pub struct Attr {
    /// CKA_* type.
    pub ty: CK_ATTRIBUTE_TYPE,
    /// The value bytes as the caller gave them.
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attr({:#x}, {} bytes)", self.ty, self.value.len())
    }
}

/// The answer for one attribute of C_GetAttributeValue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrAnswer {
    /// The value, in its C byte representation.
    Value(Vec<u8>),
    /// The attribute exists but may not be revealed (CKR_ATTRIBUTE_SENSITIVE).
    Sensitive,
    /// The object has no such attribute (CKR_ATTRIBUTE_TYPE_INVALID).
    Invalid,
}

/// Where an operation's output goes: a length query (NULL pointer) or the caller's buffer.
pub enum OutBuf<'a> {
    /// The caller only asks for the length; the operation stays active.
    Query,
    /// The caller's buffer; too small → CKR_BUFFER_TOO_SMALL with the needed length, and the
    /// operation stays active.
    Into(&'a mut [u8]),
}

/// A mechanism with its decoded parameter.
#[derive(Clone, Debug)]
pub struct Mechanism {
    /// CKM_* type.
    pub ty: CK_MECHANISM_TYPE,
    /// Its parameter.
    pub param: MechParam,
}

/// Decoded mechanism parameters (only the shapes Tessera's mechanisms take).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MechParam {
    /// No parameter (pParameter NULL, ulParameterLen 0).
    None,
    /// CK_RSA_PKCS_PSS_PARAMS.
    Pss {
        /// Hash mechanism (CKM_SHA256 …).
        hash: CK_MECHANISM_TYPE,
        /// Mask generation function (CKG_MGF1_SHA256 …).
        mgf: CK_RSA_PKCS_MGF_TYPE,
        /// Salt length in bytes.
        salt_len: usize,
    },
    /// CK_RSA_PKCS_OAEP_PARAMS.
    Oaep {
        /// Hash mechanism.
        hash: CK_MECHANISM_TYPE,
        /// Mask generation function.
        mgf: CK_RSA_PKCS_MGF_TYPE,
        /// Encoding parameter source data (label); empty when none.
        label: Vec<u8>,
    },
    /// CK_ECDH1_DERIVE_PARAMS.
    Ecdh {
        /// Key derivation function (CKD_NULL …).
        kdf: CK_EC_KDF_TYPE,
        /// Shared data for the KDF.
        shared_data: Vec<u8>,
        /// The other party's public value (EC point, raw or DER OCTET STRING).
        public_data: Vec<u8>,
    },
    /// Any other parameter, as bytes (mechanisms that take one Tessera does not interpret).
    Other(Vec<u8>),
}

/// What the library reports in C_GetInfo.
pub const MANUFACTURER: &str = "Tessera";
/// Library description in C_GetInfo.
pub const LIBRARY_DESCRIPTION: &str = "Tessera PKCS#11 for PIV cards";
pub mod objects;
pub mod session;
pub mod slot;
pub(crate) mod write;
