//! Response parsing and the response loop: a scripted card answers every APDU with the next
//! fuzz-chosen response (61xx chains, 6Cxx, garbage); the host side must end with a result or
//! an error, never a panic or an endless loop. Also feeds the host PIV parsers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_core::applet::piv;
use tessera_core::card::{exchange, CardError, Channel, Command, Response};

struct Scripted<'a> {
    answers: std::slice::Split<'a, u8, fn(&u8) -> bool>,
    extended: bool,
}

impl Channel for Scripted<'_> {
    fn transmit_raw(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        self.answers.next().map(<[u8]>::to_vec).ok_or(CardError::NoCard)
    }
    fn extended_length(&self) -> bool {
        self.extended
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Response::parse(data);
    let Some((&mode, script)) = data.split_first() else { return };
    // 0xFF separates the scripted answers.
    let sep: fn(&u8) -> bool = |b| *b == 0xFF;
    let mut card = Scripted { answers: script.split(sep), extended: mode & 1 == 1 };
    match mode % 6 {
        0 => {
            let _ = exchange(&mut card, &Command::new(0xCB, 0x3F, 0xFF).with_data(&[0x5C, 1, 0x7E]));
        }
        1 => {
            let _ = piv::get_data(&mut card, 0x5FC105);
        }
        2 => {
            let _ = piv::verify_pin(&mut card, Some(b"123456"));
        }
        3 => {
            let _ = piv::authenticate_management(
                &mut card,
                piv::ManagementAlgorithm::TripleDes,
                &piv::DEFAULT_MANAGEMENT_KEY,
            );
        }
        4 => {
            let _ = piv::serial(&mut card);
        }
        _ => {
            let _ = exchange(&mut card, &Command::new(0xDB, 0x3F, 0xFF).with_data(&[0u8; 700]));
        }
    }
});
