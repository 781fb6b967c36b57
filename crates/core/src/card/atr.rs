//! Facts read from an answer-to-reset (ISO 7816-3 §8, historical bytes per ISO 7816-4 §8.1.1):
//! only what Tessera decides on, today whether the card takes extended-length APDUs.

/// Returns the historical bytes of a well-formed ATR (empty when it does not parse).
pub fn historical_bytes(atr: &[u8]) -> &[u8] {
    let Some(&t0) = atr.get(1) else {
        return &[];
    };
    let k = usize::from(t0 & 0x0F);
    let mut pos = 2usize;
    let mut y = t0 >> 4;
    let mut proto_t0_only = true;
    loop {
        let present = usize::from(y & 1) + usize::from((y >> 1) & 1) + usize::from((y >> 2) & 1);
        pos += present;
        if y & 0x8 == 0 {
            break;
        }
        let Some(&td) = atr.get(pos) else {
            return &[];
        };
        if td & 0x0F != 0 {
            proto_t0_only = false;
        }
        pos += 1;
        y = td >> 4;
    }
    let _ = proto_t0_only;
    atr.get(pos..pos + k).unwrap_or(&[])
}

/// True when the card capabilities (compact-TLV tag 7, third byte bit 0x40) announce extended
/// Lc and Le fields.
pub fn supports_extended_length(atr: &[u8]) -> bool {
    let hist = historical_bytes(atr);
    let Some((&category, mut rest)) = hist.split_first() else {
        return false;
    };
    if category != 0x80 {
        return false;
    }
    while let Some((&head, tail)) = rest.split_first() {
        let tag = head >> 4;
        let len = usize::from(head & 0x0F);
        let Some(value) = tail.get(..len) else {
            return false;
        };
        if tag == 0x7 && len >= 3 {
            return value.get(2).is_some_and(|b| b & 0x40 != 0);
        }
        rest = tail.get(len..).unwrap_or_default();
    }
    false
}

/// Appends the XOR check byte TCK over T0.. to an ATR body that offers T=1.
pub fn with_check_byte(body: &[u8]) -> Vec<u8> {
    let mut atr = body.to_vec();
    let tck = body.iter().skip(1).fold(0u8, |acc, b| acc ^ b);
    atr.push(tck);
    atr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yubikey5_capabilities() {
        // YubiKey 5 NFC ATR: historical bytes 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40
        let atr = hex::decode("3BFD1300008131FE158073C021C057597562694B657940").unwrap();
        assert_eq!(historical_bytes(&atr)[0], 0x80);
        assert!(supports_extended_length(&atr));
    }

    #[test]
    fn short_only_card() {
        let atr = hex::decode("3B8980014A434F5033315632323279").unwrap();
        assert!(!supports_extended_length(&atr));
        assert!(!supports_extended_length(&[]));
        assert!(!supports_extended_length(&[0x3B]));
    }
}
