//! Sessions and the operation each one has in progress.

use super::mechanism::{Digester, PublicKey, SignOp, VerifyOp};
use super::{objects::ObjectId, Mechanism};
use crate::applet::piv::{KeyAlgorithm, KeySlot};
use cryptoki_sys::*;
use std::collections::{BTreeMap, VecDeque};
use zeroize::Zeroizing;

/// A private-key operation's key on the card.
#[derive(Debug, Clone, Copy)]
pub struct CardKey {
    /// The key slot.
    pub slot: KeySlot,
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
    /// The card wants the PIN right before each use.
    pub always_authenticate: bool,
    /// The key needs a PIN at all (false for card authentication, 9E): after a reset by
    /// another process such a key is simply used again instead of reporting a lost login.
    pub needs_login: bool,
}

/// The operation in progress in a session.
pub enum Operation {
    /// C_DigestInit…
    Digest(Digester),
    /// C_SignInit…
    Sign {
        /// Host half of the mechanism.
        op: SignOp,
        /// The key.
        key: CardKey,
        /// PIN given by CKU_CONTEXT_SPECIFIC login for this one signature.
        context_pin: Option<Zeroizing<Vec<u8>>>,
    },
    /// C_VerifyInit…
    Verify {
        /// Host verification state.
        op: VerifyOp,
        /// The public key.
        key: PublicKey,
    },
    /// C_EncryptInit…
    Encrypt {
        /// Mechanism.
        mech: Mechanism,
        /// The public key.
        key: PublicKey,
        /// Output computed but not yet delivered (buffer was too small).
        pending: Option<Vec<u8>>,
    },
    /// C_DecryptInit…
    Decrypt {
        /// Mechanism.
        mech: Mechanism,
        /// The key.
        key: CardKey,
        /// PIN from CKU_CONTEXT_SPECIFIC.
        context_pin: Option<Zeroizing<Vec<u8>>>,
        /// Plaintext computed but not yet delivered.
        pending: Option<Zeroizing<Vec<u8>>>,
    },
}

impl Operation {
    /// The card key this operation uses, when it wants a context-specific login.
    pub fn wants_context_login(&self) -> bool {
        match self {
            Self::Sign { key, .. } | Self::Decrypt { key, .. } => key.always_authenticate,
            _ => false,
        }
    }

    /// Stores the context-specific PIN for the next use of the key.
    pub fn set_context_pin(&mut self, pin: Zeroizing<Vec<u8>>) {
        match self {
            Self::Sign { context_pin, .. } | Self::Decrypt { context_pin, .. } => {
                *context_pin = Some(pin)
            }
            _ => {}
        }
    }
}

/// A session object (created by C_DeriveKey), gone when its session closes.
pub struct SessionObject {
    /// Attribute values in C representation.
    pub attributes: BTreeMap<CK_ATTRIBUTE_TYPE, Zeroizing<Vec<u8>>>,
    /// Attributes that may not be revealed.
    pub sensitive: bool,
}

/// One session.
pub struct Session {
    /// Its slot.
    pub slot: CK_SLOT_ID,
    /// Read/write session.
    pub rw: bool,
    /// The slot generation it was opened in (a removed card kills it).
    pub generation: u64,
    /// Pending find results.
    pub find: Option<VecDeque<CK_OBJECT_HANDLE>>,
    /// Operation in progress.
    pub op: Option<Operation>,
}

/// The token object a handle names (session objects have handles of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Handle {
    /// A token object.
    Token(CK_SLOT_ID, ObjectId),
}
