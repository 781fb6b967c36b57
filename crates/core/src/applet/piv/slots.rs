//! PIV key slots as Tessera publishes them: key reference, data object, and the PKCS#11
//! identity OpenSC gives them (CKA_ID and labels), which users have in their URIs and
//! configurations — so these values are public API and must not change.

use crate::card::tlv::Tag;

/// First tag of the per-slot chain objects Tessera keeps ([`KeySlot::chain_tag`]).
pub const CHAIN_TAG_BASE: Tag = 0x5FFF80;

/// A PIV key slot (key reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeySlot(u8);

/// How a slot is meant to be used, which decides default key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRole {
    /// 9A: PIV authentication (TLS client auth, login).
    Authentication,
    /// 9C: digital signature (non-repudiation).
    Signature,
    /// 9D and retired 82–95: key management (decryption, key agreement).
    KeyManagement,
    /// 9E: card authentication (no PIN).
    CardAuthentication,
}

impl KeySlot {
    /// 9A PIV Authentication.
    pub const AUTHENTICATION: Self = Self(0x9A);
    /// 9C Digital Signature.
    pub const SIGNATURE: Self = Self(0x9C);
    /// 9D Key Management.
    pub const KEY_MANAGEMENT: Self = Self(0x9D);
    /// 9E Card Authentication.
    pub const CARD_AUTHENTICATION: Self = Self(0x9E);
    /// First retired key management slot (82).
    pub const RETIRED_FIRST: u8 = 0x82;
    /// Last retired key management slot (95).
    pub const RETIRED_LAST: u8 = 0x95;

    /// The slot with this key reference, if it is one of the 24 key slots.
    pub fn from_reference(r: u8) -> Option<Self> {
        match r {
            0x9A | 0x9C | 0x9D | 0x9E | Self::RETIRED_FIRST..=Self::RETIRED_LAST => Some(Self(r)),
            _ => None,
        }
    }

    /// The four primary slots then the 20 retired ones, in key-reference order.
    pub fn all() -> impl Iterator<Item = KeySlot> {
        [0x9Au8, 0x9C, 0x9D, 0x9E]
            .into_iter()
            .chain(Self::RETIRED_FIRST..=Self::RETIRED_LAST)
            .map(KeySlot)
    }

    /// The four primary slots.
    pub fn primary() -> [KeySlot; 4] {
        [
            Self::AUTHENTICATION,
            Self::SIGNATURE,
            Self::KEY_MANAGEMENT,
            Self::CARD_AUTHENTICATION,
        ]
    }

    /// The key reference byte.
    pub fn reference(self) -> u8 {
        self.0
    }

    /// 1–20 for retired slots.
    pub fn retired_number(self) -> Option<u8> {
        (Self::RETIRED_FIRST..=Self::RETIRED_LAST)
            .contains(&self.0)
            .then(|| self.0 - Self::RETIRED_FIRST + 1)
    }

    /// The slot's role.
    pub fn role(self) -> SlotRole {
        match self.0 {
            0x9A => SlotRole::Authentication,
            0x9C => SlotRole::Signature,
            0x9E => SlotRole::CardAuthentication,
            _ => SlotRole::KeyManagement,
        }
    }

    /// The certificate container (SP 800-73-4 part 1 table 3 / table 10).
    pub fn certificate_tag(self) -> Tag {
        match self.0 {
            0x9A => 0x5FC105,
            0x9C => 0x5FC10A,
            0x9D => 0x5FC10B,
            0x9E => 0x5FC101,
            r => 0x5FC10D + u32::from(r - Self::RETIRED_FIRST),
        }
    }

    /// The data object where Tessera keeps the CA chain of the slot's certificate
    /// (5FFF80 + the slot's position in [`KeySlot::all`]).
    pub fn chain_tag(self) -> Tag {
        let index = Self::all().position(|s| s == self).unwrap_or(0);
        CHAIN_TAG_BASE + index as Tag
    }

    /// CKA_ID as OpenSC assigns it: 9A→01, 9C→02, 9D→03, 9E→04, retired n → the decimal
    /// number n+4 written as hex digits (82→05 … 86→09, 87→10 … 95→24).
    pub fn cka_id(self) -> u8 {
        match self.0 {
            0x9A => 0x01,
            0x9C => 0x02,
            0x9D => 0x03,
            0x9E => 0x04,
            r => {
                let n = r - Self::RETIRED_FIRST + 5;
                ((n / 10) << 4) | (n % 10)
            }
        }
    }

    /// The slot whose CKA_ID is `id`.
    pub fn from_cka_id(id: &[u8]) -> Option<Self> {
        match id {
            [b] => Self::all().find(|s| s.cka_id() == *b),
            _ => None,
        }
    }

    /// Certificate object label (OpenSC's).
    pub fn certificate_label(self) -> String {
        match self.retired_number() {
            Some(n) => format!("Retired Certificate for Key Management {n}"),
            None => match self.0 {
                0x9A => "Certificate for PIV Authentication",
                0x9C => "Certificate for Digital Signature",
                0x9D => "Certificate for Key Management",
                _ => "Certificate for Card Authentication",
            }
            .to_owned(),
        }
    }

    /// Private key object label (OpenSC's).
    pub fn private_key_label(self) -> String {
        match self.retired_number() {
            Some(n) => format!("Retired KEY MAN {n}"),
            None => match self.0 {
                0x9A => "PIV AUTH key",
                0x9C => "SIGN key",
                0x9D => "KEY MAN key",
                _ => "CARD AUTH key",
            }
            .to_owned(),
        }
    }

    /// Public key object label (OpenSC's).
    pub fn public_key_label(self) -> String {
        match self.retired_number() {
            Some(n) => format!("Retired KEY MAN {n}"),
            None => match self.0 {
                0x9A => "PIV AUTH pubkey",
                0x9C => "SIGN pubkey",
                0x9D => "KEY MAN pubkey",
                _ => "CARD AUTH pubkey",
            }
            .to_owned(),
        }
    }
}

impl std::fmt::Display for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tags_follow_opensc_and_sp800_73() {
        let all: Vec<_> = KeySlot::all().collect();
        assert_eq!(all.len(), 24);
        let ids: Vec<u8> = all.iter().map(|s| s.cka_id()).collect();
        assert_eq!(&ids[..6], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(KeySlot::from_reference(0x86).unwrap().cka_id(), 0x09);
        assert_eq!(KeySlot::from_reference(0x87).unwrap().cka_id(), 0x10);
        assert_eq!(KeySlot::from_reference(0x95).unwrap().cka_id(), 0x24);
        assert_eq!(
            KeySlot::from_reference(0x82).unwrap().certificate_tag(),
            0x5FC10D
        );
        assert_eq!(
            KeySlot::from_reference(0x95).unwrap().certificate_tag(),
            0x5FC120
        );
        for s in &all {
            assert_eq!(KeySlot::from_cka_id(&[s.cka_id()]), Some(*s));
        }
        assert_eq!(
            KeySlot::from_reference(0x95).unwrap().private_key_label(),
            "Retired KEY MAN 20"
        );
        assert!(KeySlot::from_reference(0x9B).is_none());
    }
}
