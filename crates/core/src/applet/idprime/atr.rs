//! IDPrime detection by answer-to-reset: OpenSC's ATR tables (0.23's one generic entry, and the
//! per-model entries of 0.24 … 0.27 with their masks and their order), the model an ATR names,
//! what each model's applet does differently (key references, PIN padding, EC), and the
//! transmission protocol the ATR offers. Pure functions over bytes; nothing here talks to a card.

/// An IDPrime model as OpenSC ≥ 0.24 tells them apart by ATR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// IDPrime 3810 (and the virtual card's persona).
    Md3810,
    /// IDPrime MD 830.
    Md830,
    /// IDPrime 930 / 3930.
    Md930,
    /// The eToken 5110+ FIPS built on the 930 ("930_PLUS" in OpenSC 0.27).
    Md930Plus,
    /// IDPrime 940 / 940C / 940B and the eToken 5110 (T=1).
    Md940,
    /// IDPrime MD 840.
    Md840,
    /// An IDPrime ATR whose model bytes name none of the above.
    Generic,
}

impl Model {
    /// The name OpenSC gives the model.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md3810 => "Gemalto IDPrime 3810",
            Self::Md830 => "Gemalto IDPrime MD 830",
            Self::Md930 => "Gemalto IDPrime 930/3930",
            Self::Md930Plus => "Gemalto IDPrime 930 (eToken 5110+ FIPS)",
            Self::Md940 => "Gemalto IDPrime 940",
            Self::Md840 => "Gemalto IDPrime MD 840",
            Self::Generic => "Gemalto IDPrime (generic)",
        }
    }

    /// Whether the PIN goes to the card zero-padded to 16 bytes (OpenSC ≥ 0.24: 840, 940 and
    /// generic; the eToken 5110 counts as a 940).
    pub fn pin_padded(self) -> bool {
        matches!(self, Self::Md840 | Self::Md940 | Self::Generic)
    }

    /// Whether the applet has the second, "Digital Signature" PIN (reference 0x83).
    pub fn has_signature_pin(self) -> bool {
        self == Self::Md940
    }

    /// Whether key references come from the key-reference map file 0005 instead of a formula.
    pub fn uses_keyref_map(self) -> bool {
        self == Self::Md940
    }

    /// Whether the applet has elliptic-curve keys (ECDSA, algorithm reference 44).
    pub fn supports_ec(self) -> bool {
        matches!(
            self,
            Self::Md840 | Self::Md930 | Self::Md930Plus | Self::Md940
        )
    }

    /// RSA modulus sizes the applet signs and decrypts with.
    pub fn rsa_bits(self) -> &'static [usize] {
        match self {
            Self::Md940 | Self::Md930Plus => &[1024, 2048, 3072, 4096],
            Self::Md930 => &[1024, 2048, 4096],
            _ => &[1024, 2048],
        }
    }

    /// The key reference of container `n` by the model's formula (OpenSC ≥ 0.24); `None` for
    /// the 940, whose references come from its key-reference map, and when the formula leaves
    /// the byte range.
    pub fn key_reference(self, n: u8) -> Option<u8> {
        let (base, step): (u8, u8) = match self {
            Self::Md3810 => (0x31, 1),
            Self::Md830 => (0x41, 1),
            Self::Md930 => (0x11, 2),
            Self::Md930Plus => (0x10, 2),
            Self::Md840 => (0xF7, 1),
            Self::Generic => (0x56, 1),
            Self::Md940 => return None,
        };
        n.checked_mul(step).and_then(|k| base.checked_add(k))
    }
}

/// The transmission protocol the ATR offers first. Under T=0 a case-4 command carries no Le
/// and a case-1 command gets P3=00, as OpenSC encodes them (and as a card behind vpcd, which
/// passes bytes unchanged, receives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// T=0 (IDPrime cards: the ATR has no TD1).
    T0,
    /// T=1 (the eToken USB keys).
    T1,
}

/// The first protocol an ATR offers (TD1's T; T=0 when there is no TD1).
pub fn protocol(atr: &[u8]) -> Protocol {
    let Some(&t0) = atr.get(1) else {
        return Protocol::T0;
    };
    if t0 & 0x80 == 0 {
        return Protocol::T0;
    }
    let td1_at =
        2 + usize::from(t0 & 0x10 != 0) + usize::from(t0 & 0x20 != 0) + usize::from(t0 & 0x40 != 0);
    match atr.get(td1_at) {
        Some(td1) if td1 & 0x0F == 1 => Protocol::T1,
        _ => Protocol::T0,
    }
}

/// One entry of an OpenSC ATR table: the ATR, its mask, the model it names.
#[derive(Debug, Clone, Copy)]
pub struct AtrEntry {
    /// The reference ATR.
    pub atr: &'static [u8],
    /// Bits of the ATR that must match (same length as `atr`).
    pub mask: &'static [u8],
    /// The model a matching card is.
    pub model: Model,
    /// OpenSC's name for the entry.
    pub name: &'static str,
}

impl AtrEntry {
    /// OpenSC's `_sc_match_atr` for one entry: same length, equal under the mask.
    pub fn matches(&self, atr: &[u8]) -> bool {
        atr.len() == self.atr.len()
            && self.mask.len() == self.atr.len()
            && atr
                .iter()
                .zip(self.atr)
                .zip(self.mask)
                .all(|((a, r), m)| a & m == r & m)
    }
}

/// The T=0 IDPrime ATR with the 3810's model bytes (`84 41 3D F6`).
const ATR_3810: &[u8] = &[
    0x3B, 0x7F, 0x96, 0x00, 0x00, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x84, 0x41, 0x3D, 0xF6, 0x12, 0x0F,
    0xFE, 0x82, 0x90, 0x00,
];
const ATR_830: &[u8] = &[
    0x3B, 0x7F, 0x96, 0x00, 0x00, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x84, 0x56, 0x51, 0x10, 0x12, 0x0F,
    0xFE, 0x82, 0x90, 0x00,
];
const ATR_930: &[u8] = &[
    0x3B, 0x7F, 0x96, 0x00, 0x00, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x84, 0x61, 0x60, 0xFB, 0x12, 0x0F,
    0xFE, 0x82, 0x90, 0x00,
];
const ATR_840: &[u8] = &[
    0x3B, 0x7F, 0x96, 0x00, 0x00, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x85, 0x03, 0x00, 0xEF, 0x12, 0x0F,
    0xFE, 0x82, 0x90, 0x00,
];
const ATR_940: &[u8] = &[
    0x3B, 0x7F, 0x96, 0x00, 0x00, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x85, 0x59, 0x56, 0xFB, 0x12, 0x0F,
    0xFE, 0x82, 0x90, 0x00,
];
const ATR_940C: &[u8] = &[
    0x3B, 0x7F, 0x96, 0x00, 0x00, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x85, 0x05, 0x00, 0x39, 0x12, 0x0F,
    0xFE, 0x82, 0x90, 0x00,
];
/// eToken 5110+ FIPS (T=1).
const ATR_930_PLUS: &[u8] = &[
    0x3B, 0xFF, 0x96, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x43, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x84, 0x65,
    0x66, 0xFB, 0x12, 0x01, 0x78, 0x82, 0x90, 0x00, 0x85,
];
/// eToken 5110 (T=1), a 940 inside.
const ATR_940_ETOKEN: &[u8] = &[
    0x3B, 0xFF, 0x96, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x43, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x85, 0x59,
    0x56, 0xFB, 0x12, 0x0F, 0xFE, 0x82, 0x90, 0x00, 0x00,
];
/// eToken with the 840's model bytes (T=1), generic in OpenSC 0.26+.
const ATR_GENERIC_ETOKEN: &[u8] = &[
    0x3B, 0xFF, 0x96, 0x00, 0x00, 0x81, 0x31, 0x80, 0x43, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x85, 0x03,
    0x00, 0xEF, 0x12, 0x0F, 0xFE, 0x82, 0x90, 0x00, 0x66,
];

/// T=0 per-model mask (0.24+): TA1 and bytes 15–16 (`0F FE`) ignored.
const MASK_T0_MODEL: &[u8] = &[
    0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00,
    0x00, 0xFF, 0xFF, 0xFF,
];
/// The 940's mask (0.26+): only the first model byte (`85`) counts.
const MASK_T0_940: &[u8] = &[
    0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0xFF, 0x00,
    0x00, 0xFF, 0xFF, 0xFF,
];
/// Generic T=0 mask of 0.24+: any model bytes, bytes 15–16 ignored.
const MASK_T0_GENERIC: &[u8] = &[
    0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0x00,
    0x00, 0xFF, 0xFF, 0xFF,
];
/// 0.23's only mask: any model bytes, everything else exact.
const MASK_T0_GENERIC_023: &[u8] = &[
    0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF,
];
const MASK_930_PLUS: &[u8] = &[
    0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00,
    0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00,
];
/// 0.27's eToken 5110 mask: any model bytes, and `12 01 78` as well as `12 0F FE`.
const MASK_940_ETOKEN: &[u8] = &[
    0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00,
    0x00, 0x00, 0xFF, 0xF0, 0x00, 0xFF, 0xFF, 0xFF, 0x00,
];
const MASK_GENERIC_ETOKEN: &[u8] = &[
    0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00,
    0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00,
];

/// OpenSC 0.23's table: one generic entry (T=0 only).
pub const OPENSC_023: &[AtrEntry] = &[AtrEntry {
    atr: ATR_3810,
    mask: MASK_T0_GENERIC_023,
    model: Model::Generic,
    name: "Gemalto IDPrime MD 8840, 3840, 3810, 840 and 830 Cards",
}];

/// OpenSC 0.27's table, in its order (first match wins: the 840 sits before the 940, whose
/// mask covers it).
pub const OPENSC_027: &[AtrEntry] = &[
    AtrEntry {
        atr: ATR_3810,
        mask: MASK_T0_MODEL,
        model: Model::Md3810,
        name: "Gemalto IDPrime 3810",
    },
    AtrEntry {
        atr: ATR_830,
        mask: MASK_T0_MODEL,
        model: Model::Md830,
        name: "Gemalto IDPrime 830",
    },
    AtrEntry {
        atr: ATR_930,
        mask: MASK_T0_MODEL,
        model: Model::Md930,
        name: "Gemalto IDPrime 930/3930",
    },
    AtrEntry {
        atr: ATR_930_PLUS,
        mask: MASK_930_PLUS,
        model: Model::Md930Plus,
        name: "based Gemalto IDPrime 930 (eToken 5110+ FIPS)",
    },
    AtrEntry {
        atr: ATR_840,
        mask: MASK_T0_MODEL,
        model: Model::Md840,
        name: "Gemalto IDPrime 840",
    },
    AtrEntry {
        atr: ATR_940,
        mask: MASK_T0_940,
        model: Model::Md940,
        name: "Gemalto IDPrime 940",
    },
    AtrEntry {
        atr: ATR_940C,
        mask: MASK_T0_MODEL,
        model: Model::Md940,
        name: "Gemalto IDPrime 940C",
    },
    AtrEntry {
        atr: ATR_940_ETOKEN,
        mask: MASK_940_ETOKEN,
        model: Model::Md940,
        name: "Gemalto IDPrime MD 940 (eToken 5110)",
    },
    AtrEntry {
        atr: ATR_3810,
        mask: MASK_T0_GENERIC,
        model: Model::Generic,
        name: "Gemalto IDPrime MD 8840, 3840, 3810, 840, 830 and MD 940 Cards",
    },
    AtrEntry {
        atr: ATR_GENERIC_ETOKEN,
        mask: MASK_GENERIC_ETOKEN,
        model: Model::Generic,
        name: "Gemalto IDPrime MD 8840, 3840, 3810, 840 and 830 Cards (eToken)",
    },
];

/// The first entry of `table` that matches `atr`.
pub fn match_in(table: &'static [AtrEntry], atr: &[u8]) -> Option<&'static AtrEntry> {
    table.iter().find(|e| e.matches(atr))
}

/// The IDPrime model an ATR names: OpenSC 0.27's table first, then 0.23's generic mask (a
/// card either version binds is an IDPrime card here). `None`: not an IDPrime ATR.
pub fn matches_atr(atr: &[u8]) -> Option<Model> {
    match_in(OPENSC_027, atr)
        .or_else(|| match_in(OPENSC_023, atr))
        .map(|e| e.model)
}
