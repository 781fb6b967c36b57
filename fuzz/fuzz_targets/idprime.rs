//! IDPrime driver: its file parsers on any bytes, and a whole card read (two models) against a
//! card whose every answer comes from the input. Nothing panics; a certificate that decodes is
//! never larger than the compressed format allows.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_core::applet::idprime::{atr, files, keys, Model, Profile, Protocol};
use tessera_core::card::{CardError, Channel};

/// Answers each APDU with the next input record: a length byte, then that many bytes (data and
/// status word); the card is "removed" when the input runs out.
struct Replay<'a> {
    data: &'a [u8],
    sent: usize,
}

impl Channel for Replay<'_> {
    fn transmit_raw(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        self.sent += 1;
        if self.sent > 4096 {
            return Err(CardError::NoCard);
        }
        let (&len, rest) = self.data.split_first().ok_or(CardError::NoCard)?;
        let (answer, rest) = rest.split_at(usize::from(len).min(rest.len()));
        self.data = rest;
        Ok(answer.to_vec())
    }

    fn extended_length(&self) -> bool {
        false
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = atr::matches_atr(data);
    let _ = atr::protocol(data);
    if let Ok(index) = files::parse_index(data) {
        for e in &index {
            let _ = (e.certificate(), e.is_token_info(), e.name(), e.directory());
        }
    }
    let _ = files::parse_container_map(data);
    let _ = files::parse_keyref_map(data);
    let _ = files::parse_fci(data);
    let _ = files::parse_token_info(data);
    if let Ok(der) = files::decode_certificate_file(data) {
        assert!(der.len() <= data.len().max(65535));
        let _ = keys::parse_certificate(&der);
    }
    for model in [Model::Md3810, Model::Md940] {
        let profile = Profile {
            model,
            protocol: Protocol::T0,
        };
        let mut card = Replay { data, sent: 0 };
        let _ = keys::read_contents(&mut card, &profile);
    }
});
