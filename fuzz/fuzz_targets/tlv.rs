//! BER-TLV reader: any input parses or errors, and what parses re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_core::card::{atr, tlv};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((tag, value, next)) = tlv::take_do(rest) {
        let _ = tlv::find(value, 0x80);
        let _ = tlv::expect_only(value, tag);
        let consumed = &rest[..rest.len() - next.len()];
        // Minimal encodings must round-trip exactly.
        let again = tlv::encode(tag, value);
        if again.len() == consumed.len() {
            assert_eq!(again, consumed);
        }
        rest = next;
    }
    let _ = tlv::objects(data).count();
    let _ = atr::supports_extended_length(data);
});
