//! The core's error: a PKCS#11 return value, plus the length the caller needs when the answer
//! is CKR_BUFFER_TOO_SMALL. Lower layers' errors map here once, in one place.

use crate::card::{CardError, StatusWord};
use cryptoki_sys::*;

/// A PKCS#11 failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    rv: CK_RV,
    needed: Option<usize>,
}

/// Result of a core operation.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with this return value.
    pub const fn new(rv: CK_RV) -> Self {
        Self { rv, needed: None }
    }

    /// CKR_BUFFER_TOO_SMALL; `needed` is written back to the caller's length.
    pub const fn buffer_too_small(needed: usize) -> Self {
        Self {
            rv: CKR_BUFFER_TOO_SMALL,
            needed: Some(needed),
        }
    }

    /// The PKCS#11 return value.
    pub fn rv(&self) -> CK_RV {
        self.rv
    }

    /// For CKR_BUFFER_TOO_SMALL: the length needed.
    pub fn needed(&self) -> Option<usize> {
        self.needed
    }
}

impl From<CK_RV> for Error {
    fn from(rv: CK_RV) -> Self {
        Self::new(rv)
    }
}

impl From<CardError> for Error {
    fn from(e: CardError) -> Self {
        let rv = match e {
            CardError::NoCard => CKR_DEVICE_REMOVED,
            CardError::Reset => CKR_USER_NOT_LOGGED_IN,
            CardError::Status(sw) => match sw {
                StatusWord::SecurityStatus => CKR_USER_NOT_LOGGED_IN,
                StatusWord::VerifyFail { .. } => CKR_PIN_INCORRECT,
                StatusWord::AuthBlocked => CKR_PIN_LOCKED,
                StatusWord::NoSpace => CKR_DEVICE_MEMORY,
                _ => CKR_DEVICE_ERROR,
            },
            CardError::Malformed(_) | CardError::Tlv(_) => CKR_DEVICE_ERROR,
            CardError::Reader(_) | CardError::State(_) => CKR_DEVICE_ERROR,
        };
        log::debug!("card error {e} -> CKR {rv:#x}");
        Self::new(rv)
    }
}

impl From<crate::applet::keys::KeyError> for Error {
    fn from(e: crate::applet::keys::KeyError) -> Self {
        Error::new(e.rv())
    }
}
