//! The IDPrime driver's error: the causes the layers above need to tell apart (wrong PIN with
//! tries left, blocked, not logged in, not supported by this card family, damaged card data,
//! not an IDPrime card) and, for everything else, the card I/O error it came from (card
//! removed or reset, reader failure, an unexpected status word). It maps status words once,
//! here, so no caller compares SW bytes.

use crate::card::{CardError, StatusWord};

/// What the IDPrime family cannot do; the card is never asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// Key pair generation on the card (OpenSC has none; the applet's commands are not public).
    KeyGeneration,
    /// Loading a private key from the host.
    KeyImport,
    /// Writing or replacing a certificate file.
    CertificateWrite,
    /// Deleting a certificate or a key.
    ObjectDelete,
    /// Unblocking the PIN: IDPrime does it with the issuer's admin key (challenge–response),
    /// not with a PUK; that key and protocol are the issuer's.
    PinUnblock,
    /// Raw RSA (CKM_RSA_X_509) or PKCS#1 signing of data that is not a DigestInfo.
    RawRsa,
    /// A hash the card does not take for this operation.
    Hash,
    /// An OAEP label: the card's decipher command has no field for it.
    OaepLabel,
    /// An operation that does not fit the key (ECDSA with an RSA key, …).
    KeyAlgorithm,
    /// Elliptic-curve keys on a model whose applet has none.
    EcOnThisModel,
    /// ECDH key derivation (not driven by this driver).
    KeyDerivation,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KeyGeneration => "key generation on the card",
            Self::KeyImport => "loading a key onto the card",
            Self::CertificateWrite => "writing certificates",
            Self::ObjectDelete => "deleting certificates or keys",
            Self::PinUnblock => "unblocking the PIN (the admin-key unblock is the card issuer's)",
            Self::RawRsa => "raw RSA or PKCS#1 signing of data that is not a DigestInfo",
            Self::Hash => "this hash algorithm",
            Self::OaepLabel => "OAEP with a label",
            Self::KeyAlgorithm => "this operation with this key type",
            Self::EcOnThisModel => "elliptic-curve keys on this model",
            Self::KeyDerivation => "key derivation",
        })
    }
}

/// Errors of the IDPrime driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PIN was wrong; this many tries are left (at least one).
    #[error("wrong PIN, {tries_left} tries left")]
    WrongPin {
        /// Tries left before the PIN blocks.
        tries_left: u8,
    },
    /// The PIN is blocked (no tries left).
    #[error("the PIN is blocked")]
    Blocked,
    /// A PIN that the card would refuse by its format (checked before it reaches the card, so
    /// no try is spent).
    #[error("PIN format: {0}")]
    PinFormat(&'static str),
    /// The input does not fit the operation (a digest of the wrong length, a cryptogram
    /// longer than the modulus, …); nothing was sent.
    #[error("bad input: {0}")]
    BadInput(&'static str),
    /// The key needs the PIN verified first (6982).
    #[error("the PIN must be verified first")]
    NotLoggedIn,
    /// The IDPrime family cannot do this.
    #[error("not supported by IDPrime cards: {0}")]
    NotSupported(Unsupported),
    /// A file on the card does not parse (index, container map, certificate, …).
    #[error("damaged card data: {0}")]
    Damaged(&'static str),
    /// The card has no IDPrime applet (SELECT refused) or no index file.
    #[error("not an IDPrime card")]
    NotIdPrime,
    /// Card I/O: removed, reset, reader failure, an answer outside the protocol, or a status
    /// word with no meaning of its own here.
    #[error(transparent)]
    Card(#[from] CardError),
}

impl Error {
    /// True when the card was removed or reset: every verification is gone.
    pub fn is_removed(&self) -> bool {
        matches!(self, Self::Card(CardError::NoCard | CardError::Reset))
    }

    /// The error for a status word after a command that is not VERIFY: the PIN-related words
    /// keep their meaning, the rest stay a status error.
    pub(crate) fn from_status(sw: StatusWord) -> Self {
        match sw {
            StatusWord::VerifyFail { tries: 0 } | StatusWord::AuthBlocked => Self::Blocked,
            StatusWord::VerifyFail { tries } => Self::WrongPin { tries_left: tries },
            StatusWord::SecurityStatus => Self::NotLoggedIn,
            sw => Self::Card(CardError::Status(sw)),
        }
    }
}
