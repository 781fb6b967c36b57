//! Behaviour profiles of the virtual card: which real card family the PIV applet imitates. A
//! profile is the one place that says, per card family, which commands exist (and with which
//! status word a missing one is refused), which algorithms and data objects the card keeps, how
//! it answers an absent object, a long APDU or a wrong Le, and which ATR it presents. The
//! handlers in `piv.rs` and `piv/keys.rs` ask it and never compare profiles themselves. The
//! profile is chosen at `tessera vcard init` and kept in the card state; it never changes.

use super::crypto::{KeyAlgorithm, MgmtAlgorithm};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A card family the virtual card can behave like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Profile {
    /// A YubiKey 5.7: SP 800-73-4 with every YubiKey extension (the card as it always was).
    #[default]
    #[serde(rename = "yubikey-5.7")]
    YubiKey57,
    /// A YubiKey 4 (firmware 4.3.7): no GET METADATA, MOVE KEY, GET SERIAL in the PIV
    /// application, AES management keys or RSA-3072/4096.
    #[serde(rename = "yubikey-4")]
    YubiKey4,
    /// A plain SP 800-73-4 card (government PIV cards): none of the YubiKey extensions, only
    /// the standard data containers.
    #[serde(rename = "piv-basic")]
    PivBasic,
    /// The odd answers seen on independent PIV applets: an empty GET METADATA, 6A80 for an
    /// absent object, 6E00 and 6D00 mixed for missing commands, no extended length, 6Cxx.
    #[serde(rename = "quirky")]
    Quirky,
}

/// The Yubico extension instructions (developers.yubico.com, "PIV: Yubico extensions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// SET MANAGEMENT KEY (FF).
    SetManagementKey,
    /// IMPORT ASYMMETRIC KEY (FE).
    ImportKey,
    /// GET VERSION (FD).
    GetVersion,
    /// RESET (FB).
    Reset,
    /// SET PIN RETRIES (FA).
    SetPinRetries,
    /// ATTEST (F9).
    Attest,
    /// GET SERIAL (F8; YubiKey 5.0 and later, older keys give it through the OTP application).
    GetSerial,
    /// GET METADATA (F7; YubiKey 5.3 and later).
    GetMetadata,
    /// MOVE KEY, also deleting a key (F6; YubiKey 5.7 and later).
    MoveKey,
}

impl Extension {
    /// Every extension, in instruction order.
    pub const ALL: [Extension; 9] = [
        Self::SetManagementKey,
        Self::ImportKey,
        Self::GetVersion,
        Self::Reset,
        Self::SetPinRetries,
        Self::Attest,
        Self::GetSerial,
        Self::GetMetadata,
        Self::MoveKey,
    ];

    /// The instruction byte.
    pub const fn ins(self) -> u8 {
        match self {
            Self::SetManagementKey => 0xFF,
            Self::ImportKey => 0xFE,
            Self::GetVersion => 0xFD,
            Self::Reset => 0xFB,
            Self::SetPinRetries => 0xFA,
            Self::Attest => 0xF9,
            Self::GetSerial => 0xF8,
            Self::GetMetadata => 0xF7,
            Self::MoveKey => 0xF6,
        }
    }

    /// The extension an instruction byte names.
    pub fn from_ins(ins: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.ins() == ins)
    }
}

/// INS not supported.
const SW_WRONG_INS: u16 = 0x6D00;
/// CLA not supported: what some independent applets answer for an instruction they lack.
const SW_WRONG_CLA: u16 = 0x6E00;
/// Data object or file not found.
const SW_NOT_FOUND: u16 = 0x6A82;
/// Incorrect parameters in the command data field.
const SW_WRONG_DATA: u16 = 0x6A80;

impl Profile {
    /// Every profile, the default first.
    pub const ALL: [Profile; 4] = [
        Self::YubiKey57,
        Self::YubiKey4,
        Self::PivBasic,
        Self::Quirky,
    ];

    /// The name used on the command line and in the state file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::YubiKey57 => "yubikey-5.7",
            Self::YubiKey4 => "yubikey-4",
            Self::PivBasic => "piv-basic",
            Self::Quirky => "quirky",
        }
    }

    /// What the profile models, in one line.
    pub const fn models(self) -> &'static str {
        match self {
            Self::YubiKey57 => "a YubiKey 5.7, with every YubiKey PIV extension",
            Self::YubiKey4 => "a YubiKey 4 with firmware 4.3.7",
            Self::PivBasic => "a plain NIST SP 800-73-4 card, as government PIV cards are",
            Self::Quirky => "the odd answers of independent PIV applets",
        }
    }

    /// The status word with which the card refuses an extension instruction, `None` when it
    /// implements it.
    pub const fn refusal(self, ext: Extension) -> Option<u16> {
        use Extension::*;
        match (self, ext) {
            (Self::YubiKey57, _) => None,
            (Self::YubiKey4, GetSerial | GetMetadata | MoveKey) => Some(SW_WRONG_INS),
            (Self::YubiKey4, _) => None,
            (Self::PivBasic, _) => Some(SW_WRONG_INS),
            // Seen on independent applets: a missing command is "INS" for some, "CLA" for
            // others. GET METADATA exists there, but answers nothing (see `empty_metadata`).
            (Self::Quirky, GetVersion) => Some(SW_WRONG_CLA),
            (Self::Quirky, GetSerial | Attest | MoveKey) => Some(SW_WRONG_INS),
            (Self::Quirky, _) => None,
        }
    }

    /// Whether the card implements an extension instruction.
    pub const fn has(self, ext: Extension) -> bool {
        self.refusal(ext).is_none()
    }

    /// The firmware version GET VERSION reports, `None` without GET VERSION.
    pub const fn version(self) -> Option<[u8; 3]> {
        match self {
            Self::YubiKey57 => Some([5, 7, 1]),
            Self::YubiKey4 => Some([4, 3, 7]),
            Self::PivBasic | Self::Quirky => None,
        }
    }

    /// Whether an attestation certificate names the card's serial (YubiKey 5.0 and later).
    pub const fn attests_serial(self) -> bool {
        matches!(self.version(), Some([major, ..]) if major >= 5)
    }

    /// Whether GET METADATA answers 9000 with no data for every reference.
    pub const fn empty_metadata(self) -> bool {
        matches!(self, Self::Quirky)
    }

    /// The status word of GET DATA for an object the card does not hold.
    pub const fn absent_object_sw(self) -> u16 {
        match self {
            Self::Quirky => SW_WRONG_DATA,
            _ => SW_NOT_FOUND,
        }
    }

    /// Whether the card keeps a data object with this tag: PUT DATA writes only these (and
    /// refuses the rest with 6A80, incorrect parameters in the command data field, as
    /// SP 800-73-4 answers a data field naming an object the card does not have; 6A81 would
    /// say PUT DATA itself is missing), and GET DATA of any other tag finds nothing.
    pub const fn keeps_object(self, tag: u32) -> bool {
        match self {
            // Only the SP 800-73-4 containers (5FC101–5FC123), Discovery and the BIT group
            // template: no Yubico objects (5FFFxx), so no admin data.
            Self::PivBasic => matches!(tag, 0x5FC101..=0x5FC123 | 0x7E | 0x7F61),
            _ => matches!(tag, 0x5FC100..=0x5FC1FF | 0x5FFF00..=0x5FFFFF | 0x7E | 0x7F61),
        }
    }

    /// Whether the card generates, imports and uses keys of this algorithm.
    pub const fn has_key_algorithm(self, alg: KeyAlgorithm) -> bool {
        use KeyAlgorithm::*;
        match self {
            Self::YubiKey57 => true,
            // RSA-3072/4096 came with 5.7; the virtual card never generates RSA-1024 anyway.
            Self::YubiKey4 => matches!(alg, Rsa1024 | Rsa2048 | EccP256 | EccP384),
            // SP 800-78-4 key sizes.
            Self::PivBasic | Self::Quirky => matches!(alg, Rsa2048 | EccP256 | EccP384),
        }
    }

    /// Whether SET MANAGEMENT KEY accepts this algorithm (AES came with YubiKey 5.4).
    pub const fn has_management_algorithm(self, alg: MgmtAlgorithm) -> bool {
        match self {
            Self::YubiKey4 => matches!(alg, MgmtAlgorithm::TripleDes),
            _ => self.has(Extension::SetManagementKey),
        }
    }

    /// Whether GENERATE and IMPORT take Yubico's PIN and touch policy objects (AA, AB); a plain
    /// card refuses them as unknown objects in the template.
    pub const fn has_key_policies(self) -> bool {
        !matches!(self, Self::PivBasic)
    }

    /// Whether the card takes extended-length APDUs (a YubiKey 4 does, though its ATR does not
    /// say so; ykman uses them from 4.0 on). Without, an extended APDU is answered 6700.
    pub const fn extended_length(self) -> bool {
        !matches!(self, Self::Quirky)
    }

    /// Whether GET RESPONSE with an Le above what is left is answered 6Cxx (xx: the bytes
    /// left, resend with that Le) instead of with the shorter answer. Only for an explicit Le:
    /// Le 00 asks for "all, up to 256", which is never wrong.
    pub const fn strict_get_response_le(self) -> bool {
        matches!(self, Self::Quirky)
    }

    /// The algorithm identifiers the SELECT answer lists (tag AC), `None` when the SELECT
    /// answer has no label and no algorithm list, as a YubiKey's.
    pub const fn select_algorithms(self) -> Option<&'static [u8]> {
        match self {
            Self::YubiKey57 => Some(&[0x07, 0x05, 0x16, 0x11, 0x14, 0x03, 0x08, 0x0A, 0x0C]),
            Self::YubiKey4 => None,
            Self::PivBasic => Some(&[0x07, 0x11, 0x14, 0x03]),
            Self::Quirky => Some(&[0x07, 0x11, 0x14, 0x03, 0x08, 0x0A, 0x0C]),
        }
    }

    /// The answer-to-reset. All offer T=1 only (TA1 13, TD1 81, TD2 31, TA3 FE, TB3 15).
    /// - yubikey-5.7: category 80, card capabilities 73 C0 21 C0 (command chaining, extended
    ///   Lc/Le), then "Tessera" as card issuer's data (tag 5).
    /// - yubikey-4: a YubiKey 4's own ATR, historical bytes "Yubikey4" (no capabilities).
    /// - piv-basic: as yubikey-5.7 with "Tessera/B": no YubiKey name anywhere.
    /// - quirky: capabilities 73 C0 21 80 (chaining, no extended Lc/Le) and "Tessera/Q".
    pub fn atr(self) -> Vec<u8> {
        const T1_ONLY: [u8; 7] = [0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15];
        let historical: Vec<u8> = match self {
            Self::YubiKey4 => b"Yubikey4".to_vec(),
            _ => {
                let (caps, issuer): (u8, &[u8]) = match self {
                    Self::Quirky => (0x80, b"Tessera/Q"),
                    Self::PivBasic => (0xC0, b"Tessera/B"),
                    _ => (0xC0, b"Tessera"),
                };
                let mut h = vec![0x80, 0x73, 0xC0, 0x21, caps];
                // Compact-TLV header: tag 5, length of the issuer's data (at most 9 here).
                h.push(0x50 | (issuer.len() as u8 & 0x0F));
                h.extend_from_slice(issuer);
                h
            }
        };
        // T0: TA1, TB1, TC1, TD1 present; the low nibble counts the historical bytes (<= 15).
        let mut body = vec![0x3B, 0xF0 | (historical.len() as u8 & 0x0F)];
        body.extend_from_slice(&T1_ONLY);
        body.extend_from_slice(&historical);
        crate::card::atr::with_check_byte(&body)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown profile name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown card profile {0:?} (one of: yubikey-5.7, yubikey-4, piv-basic, quirky)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::atr;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Profile>(&json).unwrap(), p);
        }
        assert!("yubikey-5".parse::<Profile>().is_err());
        assert_eq!(Profile::default(), Profile::YubiKey57);
    }

    #[test]
    fn atrs_say_what_each_card_is() {
        // The YubiKey 5.7 profile keeps the card's ATR byte for byte.
        assert_eq!(
            hex::encode_upper(Profile::YubiKey57.atr()),
            "3BFD1300008131FE158073C021C0575465737365726177"
        );
        // A YubiKey 4's own ATR (its check byte is D4).
        assert_eq!(
            hex::encode_upper(Profile::YubiKey4.atr()),
            "3BF81300008131FE15597562696B657934D4"
        );
        for p in Profile::ALL {
            let a = p.atr();
            let hist = atr::historical_bytes(&a);
            assert!(!hist.is_empty(), "{p}");
            assert_eq!(hist.len(), usize::from(a[1] & 0x0F), "{p}");
            let yubikey = hist.windows(7).any(|w| w.eq_ignore_ascii_case(b"yubikey"));
            assert_eq!(yubikey, p == Profile::YubiKey4, "{p}");
            let tessera = hist.windows(7).any(|w| w == b"Tessera");
            assert_eq!(tessera, p != Profile::YubiKey4, "{p}");
            assert_eq!(
                atr::supports_extended_length(&a),
                matches!(p, Profile::YubiKey57 | Profile::PivBasic),
                "{p}"
            );
        }
        assert_ne!(Profile::PivBasic.atr(), Profile::YubiKey57.atr());
    }

    #[test]
    fn every_extension_is_decided_once() {
        for e in Extension::ALL {
            assert_eq!(Extension::from_ins(e.ins()), Some(e));
            assert!(Profile::YubiKey57.has(e));
            assert_eq!(Profile::PivBasic.refusal(e), Some(0x6D00));
        }
        assert_eq!(Extension::from_ins(0xA4), None);
        assert_eq!(Profile::Quirky.refusal(Extension::GetVersion), Some(0x6E00));
        assert!(Profile::Quirky.has(Extension::GetMetadata));
        assert!(!Profile::YubiKey4.has(Extension::GetMetadata));
        assert!(Profile::YubiKey4.has(Extension::Attest));
    }
}
