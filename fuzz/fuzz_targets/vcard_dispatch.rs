//! The virtual card's command dispatcher: a sequence of fuzz-chosen APDUs (each prefixed by a
//! one-byte length) against a factory card of every behaviour profile (the first input byte
//! picks it) must never panic, and the state must stay serialisable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use once_cell::sync::Lazy;
use tessera_vcard::seal::KdfCost;
use tessera_vcard::{Applet, CardState, Profile};

// The test cost of the PIN/PUK hash: every VERIFY the fuzzer makes costs microseconds, not the
// ~30 ms of a real card file.
static FACTORY: Lazy<Vec<CardState>> = Lazy::new(|| {
    Profile::ALL
        .iter()
        .map(|p| CardState::factory_with_cost(*p, 12345678, KdfCost::TEST).expect("factory card"))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let cards = &*FACTORY;
    let mut state = cards[usize::from(pick) % cards.len()].clone();
    let mut applet = Applet::new();
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
