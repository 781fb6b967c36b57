//! ISO 7816-4 status words as a type: the card's last two bytes, named in the spec's words.
//! Parsing is total (every u16 maps to a variant); nothing here knows about PIV objects.

use std::fmt;

/// A status word (SW1 SW2) returned by a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusWord {
    /// 9000: success.
    Success,
    /// 61xx: more response bytes available (xx = how many, 00 = 256 or more).
    BytesRemaining(u8),
    /// 6Cxx: wrong Le; resend with Le = xx.
    CorrectLength(u8),
    /// 63Cx: verification failed (or status query), x tries left.
    VerifyFail {
        /// Tries left before the reference is blocked.
        tries: u8,
    },
    /// 6983: authentication method blocked.
    AuthBlocked,
    /// 6982: security status not satisfied.
    SecurityStatus,
    /// 6700: wrong length.
    WrongLength,
    /// 6A80: incorrect parameters in the data field.
    IncorrectData,
    /// 6A82: file or application not found.
    NotFound,
    /// 6A84: not enough memory.
    NoSpace,
    /// 6A86: incorrect P1/P2.
    IncorrectP1P2,
    /// 6A88: referenced data not found.
    ReferenceNotFound,
    /// 6985: conditions of use not satisfied.
    ConditionsNotSatisfied,
    /// 6984: reference data not usable.
    DataInvalid,
    /// 6D00: instruction not supported.
    InsNotSupported,
    /// 6E00: class not supported.
    ClaNotSupported,
    /// 6884: command chaining not supported.
    ChainingNotSupported,
    /// 6F00: no precise diagnosis.
    Unknown,
    /// Any other status word.
    Other(u16),
}

impl From<u16> for StatusWord {
    fn from(sw: u16) -> Self {
        let [sw1, sw2] = sw.to_be_bytes();
        match (sw1, sw2) {
            (0x90, 0x00) => Self::Success,
            (0x61, n) => Self::BytesRemaining(n),
            (0x6C, n) => Self::CorrectLength(n),
            (0x63, n) if n & 0xF0 == 0xC0 => Self::VerifyFail { tries: n & 0x0F },
            (0x69, 0x83) => Self::AuthBlocked,
            (0x69, 0x82) => Self::SecurityStatus,
            (0x67, 0x00) => Self::WrongLength,
            (0x6A, 0x80) => Self::IncorrectData,
            (0x6A, 0x82) => Self::NotFound,
            (0x6A, 0x84) => Self::NoSpace,
            (0x6A, 0x86) => Self::IncorrectP1P2,
            (0x6A, 0x88) => Self::ReferenceNotFound,
            (0x69, 0x85) => Self::ConditionsNotSatisfied,
            (0x69, 0x84) => Self::DataInvalid,
            (0x6D, 0x00) => Self::InsNotSupported,
            (0x6E, 0x00) => Self::ClaNotSupported,
            (0x68, 0x84) => Self::ChainingNotSupported,
            (0x6F, 0x00) => Self::Unknown,
            _ => Self::Other(sw),
        }
    }
}

impl From<StatusWord> for u16 {
    fn from(sw: StatusWord) -> u16 {
        match sw {
            StatusWord::Success => 0x9000,
            StatusWord::BytesRemaining(n) => 0x6100 | u16::from(n),
            StatusWord::CorrectLength(n) => 0x6C00 | u16::from(n),
            StatusWord::VerifyFail { tries } => 0x63C0 | u16::from(tries & 0x0F),
            StatusWord::AuthBlocked => 0x6983,
            StatusWord::SecurityStatus => 0x6982,
            StatusWord::WrongLength => 0x6700,
            StatusWord::IncorrectData => 0x6A80,
            StatusWord::NotFound => 0x6A82,
            StatusWord::NoSpace => 0x6A84,
            StatusWord::IncorrectP1P2 => 0x6A86,
            StatusWord::ReferenceNotFound => 0x6A88,
            StatusWord::ConditionsNotSatisfied => 0x6985,
            StatusWord::DataInvalid => 0x6984,
            StatusWord::InsNotSupported => 0x6D00,
            StatusWord::ClaNotSupported => 0x6E00,
            StatusWord::ChainingNotSupported => 0x6884,
            StatusWord::Unknown => 0x6F00,
            StatusWord::Other(sw) => sw,
        }
    }
}

impl StatusWord {
    /// The two bytes as sent on the wire.
    pub fn to_bytes(self) -> [u8; 2] {
        u16::from(self).to_be_bytes()
    }

    /// True for 9000.
    pub fn is_success(self) -> bool {
        self == Self::Success
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", u16::from(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_status_word() {
        for sw in 0..=u16::MAX {
            assert_eq!(u16::from(StatusWord::from(sw)), sw);
        }
    }

    #[test]
    fn names_verify_fail() {
        assert_eq!(
            StatusWord::from(0x63C2),
            StatusWord::VerifyFail { tries: 2 }
        );
        assert_eq!(StatusWord::from(0x6300), StatusWord::Other(0x6300));
    }
}
