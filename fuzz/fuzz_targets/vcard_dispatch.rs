//! The virtual card's command dispatcher: a sequence of fuzz-chosen APDUs (each prefixed by a
//! one-byte length) against a factory card must never panic, and the state must stay
//! serialisable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use once_cell::sync::Lazy;
use tessera_pkcs11::vcard::{Applet, CardState};

static FACTORY: Lazy<CardState> = Lazy::new(|| CardState::factory(12345678));

fuzz_target!(|data: &[u8]| {
    let mut state = FACTORY.clone();
    let mut applet = Applet::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (apdu, next) = tail.split_at(n);
        if apdu == [0xFF] {
            applet.reset();
        } else {
            let out = applet.process(&mut state, apdu);
            assert!(out.response.len() >= 2);
        }
        rest = next;
    }
    let _ = serde_json::to_vec(&state);
});
