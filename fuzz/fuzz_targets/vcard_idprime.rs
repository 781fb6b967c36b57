//! The virtual IDPrime card: a sequence of fuzz-chosen APDUs (each prefixed by a one-byte
//! length; `FF` alone resets the card) against personalised cards of each model (the first
//! input byte picks it) must never panic, every answer must end in a status word, and the
//! state must stay serialisable. The PIN `0000` is verified first on odd picks, so the key
//! operations are reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use once_cell::sync::Lazy;
use tessera_vcard::crypto::{attestation_root_certificate, KeyAlgorithm, PrivateKey};
use tessera_vcard::idprime::model::Model;
use tessera_vcard::idprime::{Applet, CertificateFormat, ECert, IdPrimeState};
use tessera_vcard::seal::KdfCost;

static CARDS: Lazy<Vec<IdPrimeState>> = Lazy::new(|| {
    let ecert = |alg| {
        let key = PrivateKey::generate(alg).expect("key");
        let cert = attestation_root_certificate(&key, 1).expect("certificate");
        (key.to_pkcs8().expect("pkcs8").to_vec(), cert)
    };
    let rsa = ecert(KeyAlgorithm::Rsa2048);
    let ec = ecert(KeyAlgorithm::EccP256);
    let make = |model, ecerts: &[ECert<'_>]| {
        IdPrimeState::personalized(model, 1, ecerts, CertificateFormat::Compressed, KdfCost::TEST)
            .expect("personalised")
    };
    vec![
        make(Model::Idp3810, &[pair(&rsa)]),
        make(Model::Idp940, &[pair(&rsa), pair(&ec)]),
    ]
});

fn pair(e: &(Vec<u8>, Vec<u8>)) -> ECert<'_> {
    ECert {
        key: &e.0,
        certificate: &e.1,
    }
}

const SELECT: [u8; 16] = [
    0x00, 0xA4, 0x04, 0x0C, 0x0B, 0xA0, 0x00, 0x00, 0x00, 0x18, 0x80, 0x00, 0x00, 0x00, 0x06, 0x62,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let mut state = CARDS[usize::from(pick >> 1) % CARDS.len()].clone();
    let mut applet = Applet::new();
    if pick & 1 == 1 {
        applet.process(&mut state, &SELECT);
        let mut pin = b"0000".to_vec();
        if state.model.pads_pin() {
            pin.resize(16, 0);
        }
        let mut verify = vec![0x00, 0x20, 0x00, 0x11, pin.len() as u8];
        verify.extend_from_slice(&pin);
        applet.process(&mut state, &verify);
    }
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
