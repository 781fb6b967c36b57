//! Host-side IDPrime driver (Thales/Gemalto IDPrime 3810/830/840/930/940 and the SafeNet
//! eToken 5110 family): detection by ATR and SELECT, the Windows-minidriver files the applet
//! keeps (index, container map, key-reference map, certificates, card id, token info), the key
//! references per model, PIN verification and change, and the PSO signature and decryption
//! forms OpenSC's `idprime` driver sends. Plain functions over [`crate::card::Channel`], run
//! inside a transaction the caller holds; they return plain data (IDs and labels as OpenSC gives
//! them) and know nothing of PKCS#11 handles, sessions or login state.
//!
//! Protocol facts: `shared/reference/IDPRIME-NOTES.md` (OpenSC 0.23 … 0.27 and a probe).
//!
//! A caller holding a transaction on a card whose ATR [`matches_atr`]:
//! [`Profile::from_atr`] once; [`keys::read_contents`] for everything on the card (key
//! containers with CKA_IDs, labels, key references and PINs; token label; serial), or
//! [`card_identity`] to prove a cached reading still holds; [`pin_status`] / [`verify_pin`] /
//! [`change_pin`] with the key's [`PinRef`]; [`sign_pkcs1`], [`sign_pss`], [`sign_ecdsa`],
//! [`decrypt`] with the key's [`PrivateKeyRef`]. Errors say the cause ([`Error`]).

pub mod atr;
pub mod error;
pub mod files;
pub mod keys;
pub mod pin;
pub mod security;

#[cfg(test)]
mod tests;

pub use atr::{matches_atr, Model, Protocol};
pub use error::{Error, Unsupported};
pub use files::{CacheFreshness, CardId, ContainerRecord, Fci, IndexEntry, KeyRefRecord};
pub use keys::{
    read_contents, CardContents, CertificateRole, Curve, KeyAlgorithm, KeyContainer, PinRef,
    PrivateKeyRef, SkippedCertificate,
};
pub use pin::{change_pin, pin_status, unblock_pin, verify_pin, PinStatus};
pub use security::{
    decrypt, get_challenge, sign_ecdsa, sign_pkcs1, sign_pkcs1_input, sign_pss, CardHash,
    DecryptPadding, OaepHash,
};

use crate::card::{exchange, Channel, Command, Response, StatusWord};

/// The IDPrime applet's AID.
pub const AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x00, 0x18, 0x80, 0x00, 0x00, 0x00, 0x06, 0x62,
];

/// What the driver needs to know about the card in hand: its model (from the ATR) and the
/// protocol its ATR offers (which decides how Le travels, as OpenSC encodes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The model the ATR names.
    pub model: Model,
    /// T=0 or T=1.
    pub protocol: Protocol,
}

impl Profile {
    /// The profile of a card with this ATR; `None` when it is not an IDPrime ATR.
    pub fn from_atr(atr: &[u8]) -> Option<Self> {
        Some(Self {
            model: matches_atr(atr)?,
            protocol: atr::protocol(atr),
        })
    }
}

/// A short command as OpenSC encodes it for the card's protocol: under T=0 a case-4 command
/// loses its Le and a case-1 command gets P3=00 (OpenSC's `sc_apdu2bytes`). `le` above 256 (or 0)
/// asks for 256, the short maximum, written as an explicit 256 so that no channel turns it into
/// an extended-length field: IDPrime cards take short APDUs only (the rest comes with 61xx).
pub(crate) fn command(
    profile: &Profile,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &[u8],
    le: Option<usize>,
) -> Command {
    let le = le.map(|l| if l == 0 || l > 256 { 256 } else { l });
    let le = match (profile.protocol, data.is_empty(), le) {
        (Protocol::T0, false, Some(_)) => None,
        (Protocol::T0, true, None) => Some(256),
        (_, _, le) => le,
    };
    Command::new(ins, p1, p2).with_data(data).with_le(le)
}

/// Sends one command (61xx and 6Cxx handled below).
pub(crate) fn transmit(ch: &mut dyn Channel, cmd: &Command) -> Result<Response, Error> {
    Ok(exchange(ch, cmd)?)
}

/// SELECT the IDPrime applet by AID with P2=0C (no FCI), retried with P2=00 when the card
/// answers 6A86, as OpenSC does. Any refusal means the card has no IDPrime applet.
pub fn select_applet(ch: &mut dyn Channel, profile: &Profile) -> Result<(), Error> {
    let mut sw = transmit(ch, &command(profile, 0xA4, 0x04, 0x0C, &AID, None))?.sw;
    if sw == StatusWord::IncorrectP1P2 {
        sw = transmit(ch, &command(profile, 0xA4, 0x04, 0x00, &AID, None))?.sw;
    }
    if sw.is_success() {
        Ok(())
    } else {
        log::debug!("IDPrime SELECT answered {sw}: not an IDPrime card");
        Err(Error::NotIdPrime)
    }
}

/// SELECT the applet, then the index file 0101 with its FCI (OpenSC's `match_card`): the
/// card is an IDPrime card when both succeed and the index has a size. Returns the index FCI.
pub fn select(ch: &mut dyn Channel, profile: &Profile) -> Result<Fci, Error> {
    select_applet(ch, profile)?;
    match files::select_file(ch, profile, files::INDEX_FID, files::SelectBy::Path) {
        Ok(Some(fci)) if fci.size > 0 => Ok(fci),
        Err(e) if files::is_card_failure(&e) => Err(e),
        // No index, an empty one, a refusal or an FCI that does not parse: OpenSC does not
        // bind either.
        _ => Err(Error::NotIdPrime),
    }
}

/// The card's OS generation from the CPLC "OS release level" (OpenSC 0.23's card types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// OS release level 01xx.
    V1,
    /// 02xx.
    V2,
    /// 03xx.
    V3,
    /// 04xx.
    V4,
}

impl Generation {
    /// The key reference OpenSC 0.23 computed for the certificate whose file name ends in the
    /// digit `d`, wrapping as OpenSC's `unsigned char` did (0.24+ uses the model instead:
    /// [`Model::key_reference`]).
    pub fn opensc023_key_reference(self, d: u8) -> u8 {
        let base: u8 = match self {
            Self::V1 => 0x31,
            Self::V2 => 0x11,
            Self::V3 => 0xF7,
            Self::V4 => 0x56,
        };
        base.wrapping_add(d)
    }

    /// Whether OpenSC 0.23 padded the PIN for this generation (V3 and V4).
    pub fn opensc023_pin_padded(self) -> bool {
        matches!(self, Self::V3 | Self::V4)
    }
}

/// Card Production Life Cycle data (GET DATA 9F7F): 42 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cplc(pub [u8; 42]);

impl Cplc {
    /// The OS release level (bytes 8–9).
    pub fn os_release_level(&self) -> u16 {
        u16::from_be_bytes([self.0[8], self.0[9]])
    }

    /// The generation OpenSC 0.23 read from the level's high byte; `None` for other values
    /// (OpenSC's "generic").
    pub fn generation(&self) -> Option<Generation> {
        match self.0[8] {
            1 => Some(Generation::V1),
            2 => Some(Generation::V2),
            3 => Some(Generation::V3),
            4 => Some(Generation::V4),
            _ => None,
        }
    }
}

/// GET DATA CPLC (`00 CA 9F 7F 2D`): the 42 CPLC bytes when the card answers exactly
/// `9F 7F 2A` + 42 bytes, else `None` (as OpenSC, any other answer is no information).
pub fn read_cplc(ch: &mut dyn Channel, profile: &Profile) -> Result<Option<Cplc>, Error> {
    let resp = transmit(ch, &command(profile, 0xCA, 0x9F, 0x7F, &[], Some(45)))?;
    if !resp.sw.is_success() {
        return Ok(None);
    }
    let cplc = match resp.data.as_slice() {
        [0x9F, 0x7F, 0x2A, rest @ ..] => <[u8; 42]>::try_from(rest).ok(),
        _ => None,
    };
    Ok(cplc.map(Cplc))
}

/// GET DATA DF30 (`00 CA DF 30 2D`): the applet version string (`DF 30 L ascii`), for
/// information only; `None` when the card does not answer it.
pub fn applet_version(ch: &mut dyn Channel, profile: &Profile) -> Result<Option<String>, Error> {
    let resp = transmit(ch, &command(profile, 0xCA, 0xDF, 0x30, &[], Some(45)))?;
    if !resp.sw.is_success() {
        return Ok(None);
    }
    Ok(match resp.data.as_slice() {
        [0xDF, 0x30, len, text @ ..] if usize::from(*len) == text.len() => {
            Some(String::from_utf8_lossy(text).into_owned())
        }
        _ => None,
    })
}

/// What tells one IDPrime card (and one state of it) from another without reading its
/// certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardIdentity {
    /// The card id (0201), when the card has one.
    pub card_id: Option<CardId>,
    /// The minidriver cache counters (0202), when the card keeps them.
    pub freshness: Option<CacheFreshness>,
}

/// SELECT the applet, then read the card id and the `cardcf` counters (5 APDUs): the proof a
/// cached reading of [`keys::read_contents`] still describes the card in the reader.
pub fn card_identity(ch: &mut dyn Channel, profile: &Profile) -> Result<CardIdentity, Error> {
    select_applet(ch, profile)?;
    let card_id = match files::read_card_id(ch, profile) {
        Ok(id) => id,
        Err(e) if files::is_card_failure(&e) => return Err(e),
        Err(_) => None,
    };
    Ok(CardIdentity {
        card_id,
        freshness: files::read_cache_freshness(ch, profile)?,
    })
}
