//! The PIV card application of the virtual card (SP 800-73-4 part 2 plus the YubiKey
//! extensions): APDU parsing for every ISO case, command chaining in, 61xx GET RESPONSE out, and
//! the command handlers. It owns only volatile state (verifications, pending challenges,
//! buffers); everything persistent lives in [`CardState`], which the caller loads and saves.
//! What differs between card families (which commands exist, status words, algorithms) is asked
//! of the state's [`Profile`], never decided here. A verified PIN leaves the card's storage
//! secret in the applet (zeroized when the verification ends: logout, wrong PIN, reset, drop),
//! which opens the private keys and objects sealed to it. Key commands (GENERAL AUTHENTICATE, GENERATE,
//! IMPORT, MOVE, METADATA, ATTEST) are in `piv/keys.rs`. Nothing here may panic on any input:
//! the applet is fuzzed.

mod keys;
#[cfg(test)]
mod tests;

use super::crypto::{self, MgmtAlgorithm};
use super::profile::{Extension, Profile};
use super::seal::{SealError, StorageSecret};
use super::state::{CardState, Secret, TouchPolicy, TAG_PRINTED};
use crate::card::tlv;
use zeroize::Zeroizing;

/// The full PIV application identifier (NIST RID, PIX 00 00 10 00 01 00).
pub const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// Largest data object PUT DATA accepts (the complete `53 L …` encoding).
pub const MAX_OBJECT: usize = 4096;
/// Largest command data accepted through chaining or extended length.
const MAX_COMMAND: usize = 16 * 1024;
/// Application label in the SELECT response.
const LABEL: &[u8] = b"Tessera PIV";

/// A status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sw(pub(crate) u16);

impl Sw {
    const OK: Sw = Sw(0x9000);
    const WRONG_LENGTH: Sw = Sw(0x6700);
    const SECURITY: Sw = Sw(0x6982);
    const BLOCKED: Sw = Sw(0x6983);
    const CONDITIONS: Sw = Sw(0x6985);
    const WRONG_DATA: Sw = Sw(0x6A80);
    const NOT_FOUND: Sw = Sw(0x6A82);
    const NO_SPACE: Sw = Sw(0x6A84);
    const WRONG_P1P2: Sw = Sw(0x6A86);
    const NO_REFERENCE: Sw = Sw(0x6A88);
    const WRONG_INS: Sw = Sw(0x6D00);
    const WRONG_CLA: Sw = Sw(0x6E00);
    /// No precise diagnosis: the card's stored data does not open (a damaged file).
    const NO_DIAGNOSIS: Sw = Sw(0x6F00);

    /// 6Cxx: wrong Le, `n` bytes are available.
    fn correct_length(n: usize) -> Sw {
        Sw(0x6C00 | u16::try_from(n).ok().filter(|&n| n < 256).unwrap_or(0))
    }

    /// Verification failed, `n` tries left (63Cx; the nibble saturates at 15).
    fn tries(n: u8) -> Sw {
        Sw(0x63C0 | u16::from(n.min(15)))
    }

    fn bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

/// What a handler returns: response data for 9000, or a status word.
type Reply = Result<Vec<u8>, Sw>;

/// A parsed command APDU.
struct Apdu<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    /// Expected response length (Ne): `None` when the APDU has no Le field.
    ne: Option<usize>,
    /// Whether Lc or Le came in extended form.
    extended: bool,
}

/// Parses the four ISO 7816-3 cases in short and extended form.
fn parse_apdu(raw: &[u8]) -> Result<Apdu<'_>, Sw> {
    let (header, body) = match raw.split_first_chunk::<4>() {
        Some((h, b)) => (*h, b),
        None => return Err(Sw::WRONG_LENGTH),
    };
    let [cla, ins, p1, p2] = header;
    let extended = matches!(*body, [0, _, _, ..]);
    let mk = |data, ne| Apdu {
        cla,
        ins,
        p1,
        p2,
        data,
        ne,
        extended,
    };
    let short_ne = |b: u8| if b == 0 { 256 } else { usize::from(b) };
    let ext_ne = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
        0 => 65536,
        n => usize::from(n),
    };
    match *body {
        [] => Ok(mk(&[], None)),
        [le] => Ok(mk(&[], Some(short_ne(le)))),
        [0, hi, lo] => Ok(mk(&[], Some(ext_ne(hi, lo)))),
        [0, hi, lo, ref rest @ ..] if body.len() > 3 => {
            let lc = usize::from(u16::from_be_bytes([hi, lo]));
            if lc == 0 {
                return Err(Sw::WRONG_LENGTH);
            }
            match (rest.get(..lc), rest.len().checked_sub(lc)) {
                (Some(data), Some(0)) => Ok(mk(data, None)),
                (Some(data), Some(2)) => {
                    let le = rest.get(lc..).unwrap_or_default();
                    match *le {
                        [a, b] => Ok(mk(data, Some(ext_ne(a, b)))),
                        _ => Err(Sw::WRONG_LENGTH),
                    }
                }
                _ => Err(Sw::WRONG_LENGTH),
            }
        }
        [lc, ref rest @ ..] => {
            let lc = usize::from(lc);
            match (rest.get(..lc), rest.len().checked_sub(lc)) {
                (Some(data), Some(0)) => Ok(mk(data, None)),
                (Some(data), Some(1)) => Ok(mk(data, rest.last().map(|&b| short_ne(b)))),
                _ => Err(Sw::WRONG_LENGTH),
            }
        }
    }
}

/// Result of one command: the raw response and whether persistent state changed.
pub struct Outcome {
    /// Response data followed by SW1 SW2.
    pub response: Vec<u8>,
    /// True when `state` was modified and must be saved.
    pub changed: bool,
}

/// A GENERAL AUTHENTICATE exchange with the management key waiting for its second step.
enum PendingAuth {
    /// Mutual authentication: the card sent `E(K, witness)` and waits for the witness.
    Witness(Zeroizing<Vec<u8>>),
    /// External authentication: the card sent a challenge and waits for `E(K, challenge)`.
    Challenge(Zeroizing<Vec<u8>>),
}

/// Command data collected through command chaining.
struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Zeroizing<Vec<u8>>,
}

/// PIN or PUK.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Pin,
    Puk,
}

/// Volatile applet state (selection, verifications, chaining buffers).
#[derive(Default)]
pub struct Applet {
    selected: bool,
    pin_verified: bool,
    /// What the verified PIN unwrapped: opens the keys and objects sealed to the storage key.
    /// Present exactly while `pin_verified`; zeroized when dropped.
    storage: Option<StorageSecret>,
    /// A successful VERIFY not yet spent by a key with PIN policy "always".
    pin_fresh: bool,
    mgmt_authenticated: bool,
    pending_auth: Option<PendingAuth>,
    chain: Option<Chain>,
    /// Response bytes still to be fetched with GET RESPONSE.
    remaining: Zeroizing<Vec<u8>>,
    /// Set by handlers that modify the persistent state during the current command.
    changed: bool,
}

impl Applet {
    /// A freshly powered card.
    pub fn new() -> Self {
        Self::default()
    }

    /// Power-off or reset: forget every verification and buffer.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Ends the PIN verification and drops the storage secret it unwrapped.
    fn forget_pin(&mut self) {
        self.pin_verified = false;
        self.pin_fresh = false;
        self.storage = None;
    }

    /// The storage secret of the verified PIN when it is still this card's (another process
    /// may have reset the card since: then the verification is over).
    fn verified_storage(&mut self, state: &CardState) -> Option<StorageSecret> {
        match &self.storage {
            Some(s) if self.pin_verified && state.is_storage_secret(s) => Some(s.clone()),
            _ => {
                self.forget_pin();
                None
            }
        }
    }

    /// Whether the PIV application was explicitly selected since the last reset. Commands are
    /// answered either way: PIV is the card's default application, as on a YubiKey.
    pub fn is_selected(&self) -> bool {
        self.selected
    }

    /// Processes one command APDU.
    pub fn process(&mut self, state: &mut CardState, apdu: &[u8]) -> Outcome {
        self.changed = false;
        let response = self.process_raw(state, apdu);
        Outcome {
            response,
            changed: std::mem::take(&mut self.changed),
        }
    }

    fn process_raw(&mut self, state: &mut CardState, raw: &[u8]) -> Vec<u8> {
        let cmd = match parse_apdu(raw) {
            Ok(c) if c.extended && !state.profile.extended_length() => Err(Sw::WRONG_LENGTH),
            parsed => parsed,
        };
        let cmd = match cmd {
            Ok(c) => c,
            Err(sw) => {
                self.chain = None;
                self.remaining.clear();
                return sw.bytes().to_vec();
            }
        };
        if cmd.cla & !0x10 != 0 {
            self.chain = None;
            return Sw::WRONG_CLA.bytes().to_vec();
        }
        if cmd.ins == 0xC0 && cmd.cla & 0x10 == 0 {
            return self.get_response(state.profile, &cmd);
        }
        self.remaining.clear();

        let same_chain = self
            .chain
            .as_ref()
            .is_some_and(|c| (c.ins, c.p1, c.p2) == (cmd.ins, cmd.p1, cmd.p2));
        if !same_chain {
            // A different command abandons an unfinished chain.
            self.chain = None;
        }
        if cmd.cla & 0x10 != 0 {
            let chain = self.chain.get_or_insert_with(|| Chain {
                ins: cmd.ins,
                p1: cmd.p1,
                p2: cmd.p2,
                data: Zeroizing::new(Vec::new()),
            });
            if chain.data.len() + cmd.data.len() > MAX_COMMAND {
                self.chain = None;
                return Sw::NO_SPACE.bytes().to_vec();
            }
            chain.data.extend_from_slice(cmd.data);
            return Sw::OK.bytes().to_vec();
        }
        let collected = self.chain.take().map(|mut c| {
            c.data.extend_from_slice(cmd.data);
            c.data
        });
        let data: &[u8] = match &collected {
            Some(d) => {
                if d.len() > MAX_COMMAND {
                    return Sw::NO_SPACE.bytes().to_vec();
                }
                d
            }
            None => cmd.data,
        };
        let full = Apdu { data, ..cmd };
        match self.execute(state, &full) {
            Ok(out) => self.respond(Zeroizing::new(out), full.ne),
            Err(sw) => sw.bytes().to_vec(),
        }
    }

    /// Sends at most Ne bytes now (256 when the command had no Le) and keeps the rest for
    /// GET RESPONSE, announced with 61xx.
    fn respond(&mut self, mut out: Zeroizing<Vec<u8>>, ne: Option<usize>) -> Vec<u8> {
        let limit = ne.unwrap_or(256);
        if out.len() > limit {
            self.remaining = Zeroizing::new(out.split_off(limit));
        }
        let mut response = out.to_vec();
        let sw = match self.remaining.len() {
            0 => Sw::OK,
            n => Sw(0x6100 | u16::try_from(n).ok().filter(|&n| n < 256).unwrap_or(0)),
        };
        response.extend_from_slice(&sw.bytes());
        response
    }

    fn get_response(&mut self, profile: Profile, cmd: &Apdu<'_>) -> Vec<u8> {
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Sw::WRONG_P1P2.bytes().to_vec();
        }
        if self.remaining.is_empty() {
            return Sw::CONDITIONS.bytes().to_vec();
        }
        let left = self.remaining.len();
        // Short Le 00 (256) asks for everything up to 256 bytes: never a wrong Le.
        if profile.strict_get_response_le()
            && cmd
                .ne
                .is_some_and(|ne| ne > left && ne != 256 && !cmd.extended)
        {
            // The remainder stays for a GET RESPONSE with the right Le.
            return Sw::correct_length(left).bytes().to_vec();
        }
        let out = std::mem::take(&mut self.remaining);
        self.respond(out, Some(cmd.ne.unwrap_or(256)))
    }

    fn execute(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if let Some(sw) = Extension::from_ins(cmd.ins).and_then(|e| state.profile.refusal(e)) {
            return Err(Sw(sw));
        }
        match cmd.ins {
            0xA4 => self.select(state.profile, cmd),
            0xCB => self.get_data(state, cmd),
            0xDB => self.put_data(state, cmd),
            0x20 => self.verify(state, cmd),
            0x24 => self.change_reference(state, cmd),
            0x2C => self.reset_retry_counter(state, cmd),
            0x87 => self.general_authenticate(state, cmd),
            0x47 => self.generate(state, cmd),
            0xFD => state.profile.version().map(Vec::from).ok_or(Sw::WRONG_INS),
            0xF8 => Ok(state.serial.to_be_bytes().to_vec()),
            0xF7 => self.metadata(state, cmd),
            0xFF => self.set_management_key(state, cmd),
            0xFE => self.import_key(state, cmd),
            0xFA => self.set_pin_retries(state, cmd),
            0xFB => self.factory_reset(state, cmd),
            0xF6 => self.move_key(state, cmd),
            0xF9 => self.attest(state, cmd),
            _ => Err(Sw::WRONG_INS),
        }
    }

    /// SELECT by (possibly truncated, at least the RID) PIV AID.
    fn select(&mut self, profile: Profile, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0x04 || !matches!(cmd.p2, 0x00 | 0x0C) {
            return Err(Sw::WRONG_P1P2);
        }
        if cmd.data.len() < 5 || !PIV_AID.starts_with(cmd.data) {
            return Err(Sw::NOT_FOUND);
        }
        self.selected = true;
        self.pending_auth = None;
        if cmd.p2 == 0x0C {
            return Ok(Vec::new());
        }
        // Application Property Template (SP 800-73-4 part 2, table 3).
        let mut apt = Vec::new();
        tlv::push_do(&mut apt, 0x4F, PIV_AID.get(5..).unwrap_or_default());
        tlv::push_do(
            &mut apt,
            0x79,
            &tlv::encode(0x4F, PIV_AID.get(..5).unwrap_or_default()),
        );
        if let Some(ids) = profile.select_algorithms() {
            tlv::push_do(&mut apt, 0x50, LABEL);
            let mut algs = Vec::new();
            for &id in ids {
                tlv::push_do(&mut algs, 0x80, &[id]);
            }
            tlv::push_do(&mut algs, 0x06, &[0x00]);
            tlv::push_do(&mut apt, 0xAC, &algs);
        }
        Ok(tlv::encode(0x61, &apt))
    }

    fn get_data(&mut self, state: &CardState, cmd: &Apdu<'_>) -> Reply {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(Sw::WRONG_P1P2);
        }
        let id = tlv::expect_only(cmd.data, 0x5C).map_err(|_| Sw::WRONG_DATA)?;
        let tag = object_tag(id).ok_or(Sw::WRONG_DATA)?;
        let storage = if tag == TAG_PRINTED {
            Some(self.verified_storage(state).ok_or(Sw::SECURITY)?)
        } else {
            None
        };
        let absent = Sw(state.profile.absent_object_sw());
        if !state.profile.keeps_object(tag) {
            return Err(absent);
        }
        match state.object(tag, storage.as_ref()) {
            Ok(Some(object)) => Ok(object.to_vec()),
            Ok(None) => Err(absent),
            Err(e) => Err(seal_sw(e)),
        }
    }

    fn put_data(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(Sw::WRONG_P1P2);
        }
        if !self.mgmt_authenticated {
            return Err(Sw::SECURITY);
        }
        let (first, value, rest) = tlv::take_do(cmd.data).map_err(|_| Sw::WRONG_DATA)?;
        let (tag, object, content_len) = match first {
            0x5C => {
                let tag = object_tag(value).ok_or(Sw::WRONG_DATA)?;
                let (t, content, after) = tlv::take_do(rest).map_err(|_| Sw::WRONG_DATA)?;
                if t != 0x53 || !after.is_empty() {
                    return Err(Sw::WRONG_DATA);
                }
                (tag, rest, content.len())
            }
            // Discovery object and BIT group template are written as themselves.
            0x7E | 0x7F61 if rest.is_empty() => (first, cmd.data, value.len()),
            _ => return Err(Sw::WRONG_DATA),
        };
        if !state.profile.keeps_object(tag) {
            return Err(Sw::WRONG_DATA);
        }
        if object.len() > MAX_OBJECT {
            return Err(Sw::NO_SPACE);
        }
        if content_len == 0 {
            if state.remove_object(tag) {
                self.changed = true;
            }
        } else if state.put_object(tag, object).map_err(seal_sw)? {
            self.changed = true;
        }
        Ok(Vec::new())
    }

    fn verify(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p2 != 0x80 {
            return Err(Sw::NO_REFERENCE);
        }
        match (cmd.p1, cmd.data.len()) {
            (0xFF, 0) => {
                self.forget_pin();
                return Ok(Vec::new());
            }
            (0x00, 0) => {
                return if self.pin_verified {
                    Ok(Vec::new())
                } else if state.pin.blocked() {
                    Err(Sw::BLOCKED)
                } else {
                    Err(Sw::tries(state.pin.tries_left))
                };
            }
            (0x00, 8) => {}
            (0x00 | 0xFF, _) => return Err(Sw::WRONG_DATA),
            _ => return Err(Sw::WRONG_P1P2),
        }
        match self.check_reference(state, Which::Pin, cmd.data) {
            Ok(storage) => {
                self.pin_verified = true;
                self.pin_fresh = true;
                self.storage = Some(storage);
                Ok(Vec::new())
            }
            Err(sw) => {
                self.forget_pin();
                Err(sw)
            }
        }
    }

    /// Checks an 8-byte padded value against the PIN or PUK's slow hash, spending a try when
    /// wrong and restoring the counter when right; a right value yields the storage secret it
    /// unwraps.
    fn check_reference(
        &mut self,
        state: &mut CardState,
        which: Which,
        presented: &[u8],
    ) -> Result<StorageSecret, Sw> {
        let blocked = match which {
            Which::Pin => state.pin.blocked(),
            Which::Puk => state.puk.blocked(),
        };
        if blocked {
            return Err(Sw::BLOCKED);
        }
        let opened = match which {
            Which::Pin => state.open_with_pin(presented),
            Which::Puk => state.open_with_puk(presented),
        };
        let reference = match which {
            Which::Pin => &mut state.pin,
            Which::Puk => &mut state.puk,
        };
        match opened {
            Ok(storage) => {
                if reference.tries_left != reference.max_tries {
                    reference.tries_left = reference.max_tries;
                    self.changed = true;
                }
                Ok(storage)
            }
            Err(SealError::WrongSecret) => {
                reference.tries_left = reference.tries_left.saturating_sub(1);
                self.changed = true;
                Err(Sw::tries(reference.tries_left))
            }
            Err(e) => Err(seal_sw(e)),
        }
    }

    fn change_reference(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0x00 {
            return Err(Sw::WRONG_P1P2);
        }
        let which = match cmd.p2 {
            0x80 => Which::Pin,
            0x81 => Which::Puk,
            _ => return Err(Sw::NO_REFERENCE),
        };
        let (old, new) = split_pair(cmd.data)?;
        let checked = self.check_reference(state, which, old);
        if which == Which::Pin && checked.is_err() {
            self.forget_pin();
        }
        let storage = checked?;
        let value = unpad_new_value(new).ok_or(Sw::WRONG_DATA)?;
        // The same value again (how the PUK is checked for an SO login) keeps its hash.
        if !crypto::ct_eq(old, new) {
            match which {
                Which::Pin => state.set_pin(value.as_bytes(), &storage),
                Which::Puk => state.set_puk(value.as_bytes(), &storage),
            }
            .map_err(seal_sw)?;
            self.changed = true;
        }
        Ok(Vec::new())
    }

    fn reset_retry_counter(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0x00 {
            return Err(Sw::WRONG_P1P2);
        }
        if cmd.p2 != 0x80 {
            return Err(Sw::NO_REFERENCE);
        }
        let (puk, new) = split_pair(cmd.data)?;
        let storage = self.check_reference(state, Which::Puk, puk)?;
        let new = unpad_new_value(new).ok_or(Sw::WRONG_DATA)?;
        state.set_pin(new.as_bytes(), &storage).map_err(seal_sw)?;
        state.pin.tries_left = state.pin.max_tries;
        self.forget_pin();
        self.changed = true;
        Ok(Vec::new())
    }

    fn set_management_key(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0xFF || !matches!(cmd.p2, 0xFF | 0xFE) {
            return Err(Sw::WRONG_P1P2);
        }
        if !self.mgmt_authenticated {
            return Err(Sw::SECURITY);
        }
        let (&alg, rest) = cmd.data.split_first().ok_or(Sw::WRONG_DATA)?;
        let alg = MgmtAlgorithm::from_id(alg)
            .filter(|&a| state.profile.has_management_algorithm(a))
            .ok_or(Sw::WRONG_DATA)?;
        let key = tlv::expect_only(rest, 0x9B).map_err(|_| Sw::WRONG_DATA)?;
        if key.len() != alg.key_len() {
            return Err(Sw::WRONG_DATA);
        }
        let touch = if cmd.p2 == 0xFE {
            TouchPolicy::Always
        } else {
            TouchPolicy::Never
        };
        let same = state.management_key.algorithm == alg
            && state.management_key.touch_policy == touch
            && state
                .management_key()
                .is_ok_and(|current| crypto::ct_eq(&current, key));
        if !same {
            state.set_management_key(alg, key, touch).map_err(seal_sw)?;
            self.changed = true;
        }
        self.pending_auth = None;
        Ok(Vec::new())
    }

    fn set_pin_retries(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if !self.mgmt_authenticated || !self.pin_verified {
            return Err(Sw::SECURITY);
        }
        if cmd.p1 == 0 || cmd.p2 == 0 {
            return Err(Sw::WRONG_P1P2);
        }
        let storage = self.verified_storage(state).ok_or(Sw::SECURITY)?;
        state
            .set_retries_with(&storage, cmd.p1, cmd.p2)
            .map_err(seal_sw)?;
        self.changed = true;
        self.forget_pin();
        Ok(Vec::new())
    }

    /// Yubico RESET: only once both PIN and PUK are blocked.
    fn factory_reset(&mut self, state: &mut CardState, _cmd: &Apdu<'_>) -> Reply {
        if !(state.pin.blocked() && state.puk.blocked()) {
            return Err(Sw::CONDITIONS);
        }
        state.reset_to_factory().map_err(seal_sw)?;
        let selected = self.selected;
        self.reset();
        self.selected = selected;
        self.changed = true;
        Ok(Vec::new())
    }
}

/// The status word for a sealed secret that does not open: locked (the PIN is not verified) or
/// damaged.
pub(crate) fn seal_sw(e: SealError) -> Sw {
    match e {
        SealError::Locked => Sw::SECURITY,
        SealError::WrongSecret | SealError::Damaged => Sw::NO_DIAGNOSIS,
    }
}

/// The object tag named by a `5C` value (one to three bytes).
fn object_tag(id: &[u8]) -> Option<u32> {
    if id.is_empty() || id.len() > 3 {
        return None;
    }
    Some(id.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// Splits the 16-byte data of CHANGE REFERENCE DATA / RESET RETRY COUNTER.
fn split_pair(data: &[u8]) -> Result<(&[u8], &[u8]), Sw> {
    if data.len() != 16 {
        return Err(Sw::WRONG_DATA);
    }
    Ok(data.split_at(8))
}

/// A new PIN or PUK without its 0xFF padding: 6 to 8 bytes, padding only at the end.
fn unpad_new_value(padded: &[u8]) -> Option<Secret> {
    let len = padded
        .iter()
        .position(|&b| b == 0xFF)
        .unwrap_or(padded.len());
    let (value, padding) = padded.split_at(len);
    if !(6..=8).contains(&len) || padding.iter().any(|&b| b != 0xFF) {
        return None;
    }
    Some(Secret::from(value))
}
