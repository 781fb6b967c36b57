//! The IDPrime models the virtual card can present, and everything that differs between them:
//! the answer-to-reset (model bytes 10–13), the CPLC "OS release level" byte that OpenSC 0.23
//! types the card by, how a container index becomes a key reference, the PIN format, and which
//! key algorithms the card takes. The applet and the personalisation ask the model and never
//! compare models themselves. Facts from OpenSC's idprime driver (0.23 and 0.24+) as gathered in
//! shared/reference/IDPRIME-NOTES.md; where the notes could not say what a real card does, the
//! choice is marked as ours.

use crate::crypto::KeyAlgorithm;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A Thales (Gemalto) IDPrime model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Model {
    /// IDPrime MD 3810 (dual interface, RSA up to 2048, PIN not padded). OpenSC 0.23 types it
    /// by the CPLC OS level 01 ("V1": key reference 0x31+n, no padding); 0.24+ by its ATR
    /// (same formula, same PIN): both versions read it the same way.
    #[default]
    #[serde(rename = "3810")]
    Idp3810,
    /// IDPrime 940 (RSA up to 4096 and EC, PIN zero-padded to 16 bytes, key references from the
    /// key-reference map file 0005, a second "Digital Signature PIN" 0x83).
    #[serde(rename = "940")]
    Idp940,
}

/// The user PIN's reference (P2 of VERIFY and CHANGE REFERENCE DATA) on every model.
pub const USER_PIN: u8 = 0x11;
/// The 940's Digital Signature PIN.
pub const SIGNATURE_PIN: u8 = 0x83;
/// Shortest PIN OpenSC's IDPrime PIN object allows.
pub const PIN_MIN: usize = 4;
/// Longest PIN (and the padded length where the model pads).
pub const PIN_MAX: usize = 16;
/// The PIN every IDPrime card ships with.
pub const FACTORY_PIN: &[u8] = b"0000";
/// Tries of the user PIN. Ours: the notes record no real card's counter, so the virtual card
/// uses the count Tessera's PIV card uses; the value is kept in the card file per PIN.
pub const PIN_TRIES: u8 = 3;

impl Model {
    /// Every model, in `--model` order.
    pub const ALL: [Model; 2] = [Model::Idp3810, Model::Idp940];

    /// The name used on the command line and in the card file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Idp3810 => "3810",
            Self::Idp940 => "940",
        }
    }

    /// The product name, as OpenSC 0.24+ names the card.
    pub const fn product(self) -> &'static str {
        match self {
            Self::Idp3810 => "IDPrime MD 3810",
            Self::Idp940 => "IDPrime 940",
        }
    }

    /// The T=0 answer-to-reset: `3B 7F 96 00 00 80 31 80 65 B0 <model> 12 0F FE 82 90 00`.
    /// Exactly 20 bytes with no TD1, so T=0 only: the form OpenSC 0.23 matches (its mask
    /// leaves the four model bytes open) and 0.24+ matches per model.
    pub fn atr(self) -> Vec<u8> {
        let model: [u8; 4] = match self {
            Self::Idp3810 => [0x84, 0x41, 0x3D, 0xF6],
            Self::Idp940 => [0x85, 0x59, 0x56, 0xFB],
        };
        let mut atr = vec![0x3B, 0x7F, 0x96, 0x00, 0x00, 0x80, 0x31, 0x80, 0x65, 0xB0];
        atr.extend_from_slice(&model);
        atr.extend_from_slice(&[0x12, 0x0F, 0xFE, 0x82, 0x90, 0x00]);
        atr
    }

    /// High byte of the CPLC "OS release level". OpenSC 0.23 derives the key-reference formula
    /// and the PIN padding from it: 01 (V1) = 0x31+n and no padding, the 3810's behaviour;
    /// 04 (V4) = 0x56+n and zero padding, which the 940 persona's key-reference map follows so
    /// that 0.23 and 0.24+ agree (ours: a real 940's CPLC level is not recorded in the notes).
    pub const fn os_release_level(self) -> u8 {
        match self {
            Self::Idp3810 => 0x01,
            Self::Idp940 => 0x04,
        }
    }

    /// The key reference of the key in container `n` (`kxcNN`): 0x31+n on the 3810 (OpenSC
    /// 0.23 "V1" and 0.24+ "3810" alike). On the 940 the card's key-reference map (file 0005)
    /// says it; the persona writes 0x56+n there, the reference 0.23 computes for OS level 04.
    pub fn key_reference(self, n: u8) -> Option<u8> {
        if n >= self.max_containers() {
            return None;
        }
        Some(match self {
            Self::Idp3810 => 0x31 + n,
            Self::Idp940 => 0x56 + n,
        })
    }

    /// How many key containers the persona fills: one decimal digit, since OpenSC 0.23 reads
    /// only the last digit of `kxcNN` (`kxc10` would collide with `kxc00`).
    pub const fn max_containers(self) -> u8 {
        10
    }

    /// Whether the card compares the PIN zero-padded to 16 bytes (OpenSC pads it for the 840,
    /// 940 and eToken models, and for 0.23's V3/V4 types) rather than as the bare digits.
    pub const fn pads_pin(self) -> bool {
        matches!(self, Self::Idp940)
    }

    /// Whether the model has the second, Digital Signature PIN (0x83).
    pub const fn has_signature_pin(self) -> bool {
        matches!(self, Self::Idp940)
    }

    /// Whether the card keeps the key-reference map file 0005 (which OpenSC 0.24+ reads on the
    /// 940 instead of a formula).
    pub const fn has_key_reference_map(self) -> bool {
        matches!(self, Self::Idp940)
    }

    /// Whether the model takes keys of `alg`: RSA 1024/2048 on the 3810 (what OpenSC declares
    /// for it); RSA 2048–4096 and P-256/P-384 on the 940.
    pub const fn supports(self, alg: KeyAlgorithm) -> bool {
        match self {
            Self::Idp3810 => matches!(alg, KeyAlgorithm::Rsa1024 | KeyAlgorithm::Rsa2048),
            Self::Idp940 => !matches!(alg, KeyAlgorithm::Rsa1024),
        }
    }

    /// What the card answers to GET DATA DF30 (the applet version string OpenSC 0.25+ logs).
    /// Ours: no real card's string is recorded.
    pub const fn applet_version(self) -> &'static [u8] {
        match self {
            Self::Idp3810 => b"IDPrime 3810 Tessera virtual 1.0",
            Self::Idp940 => b"IDPrime 940 Tessera virtual 1.0",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown IDPrime model {s} (3810 or 940)"))
    }
}
