//! The IDPrime card application of the virtual card: a Thales (Gemalto) IDPrime as OpenSC's
//! `idprime` driver knows it — SELECT of the applet and of files by FID or path (P1 00/02/08),
//! READ BINARY, GET DATA (CPLC 9F7F, applet version DF30), VERIFY/CHANGE REFERENCE DATA with
//! exact counters, MSE SET, PSO HASH + PSO COMPUTE DIGITAL SIGNATURE, PSO DECIPHER with command
//! chaining, GET CHALLENGE — answered as the T=0 card it is: a command that carried data and
//! produces data answers 61xx and waits for GET RESPONSE; APDUs are parsed leniently (T=0 drops
//! Le from case 4 and adds P3=00 to case 1). It owns only volatile state (selection, the
//! verified PINs and the storage key they unwrapped, the security environment, buffers);
//! everything persistent lives in [`IdPrimeState`]. Protocol facts: IDPRIME-NOTES.md. Nothing
//! here may panic on any input.

pub mod crypto;
pub mod files;
pub mod model;
pub mod state;
#[cfg(test)]
mod tests;

use self::crypto::{DecipherAlgorithm, OperationError, SignAlgorithm};
use self::model::Model;
pub use self::state::{CertificateFormat, ECert, IdPrimeState, PersonalizeError};
use super::crypto::random_bytes;
use super::piv::Outcome;
use super::seal::{Credential, SealError, StorageSecret};
use zeroize::Zeroizing;

/// The IDPrime applet's AID.
pub const AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x00, 0x18, 0x80, 0x00, 0x00, 0x00, 0x06, 0x62,
];
/// Largest command data accepted through chaining (an RSA-4096 cryptogram and its indicator).
const MAX_COMMAND: usize = 1024;
/// The master file.
const FID_MF: u16 = 0x3F00;

/// Status words the card answers.
mod sw {
    pub const OK: u16 = 0x9000;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const CHAINING_UNSUPPORTED: u16 = 0x6884;
    pub const SECURITY: u16 = 0x6982;
    pub const BLOCKED: u16 = 0x6983;
    pub const CONDITIONS: u16 = 0x6985;
    pub const NO_CURRENT_EF: u16 = 0x6986;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const FUNCTION_UNSUPPORTED: u16 = 0x6A81;
    pub const NOT_FOUND: u16 = 0x6A82;
    pub const WRONG_P1P2: u16 = 0x6A86;
    pub const NO_REFERENCE: u16 = 0x6A88;
    pub const OFFSET_OUTSIDE: u16 = 0x6B00;
    pub const WRONG_INS: u16 = 0x6D00;
    pub const WRONG_CLA: u16 = 0x6E00;
    pub const NO_PRECISE_DIAGNOSIS: u16 = 0x6F00;

    /// 63Cx: verification failed, `n` tries left.
    pub fn tries(n: u8) -> u16 {
        0x63C0 | u16::from(n.min(15))
    }
}

/// What a handler returns: response data (SW 9000), or a status word.
type Reply = Result<Vec<u8>, u16>;

/// A short APDU, parsed leniently.
struct Apdu<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    /// Whether the command carried a data field (case 3/4 at the T=0 level).
    has_data: bool,
    /// Ne: `None` without an Le byte.
    ne: Option<usize>,
}

/// Parses a short APDU: header only (case 1), header + P3 with no data (case 2, or a T=0
/// case 1 with P3=00), header + Lc + data (case 3, or T=0 case 4 without Le), or
/// header + Lc + data + Le (case 4). The card has no extended length.
fn parse(raw: &[u8]) -> Result<Apdu<'_>, u16> {
    let ([cla, ins, p1, p2], body) = match raw.split_first_chunk::<4>() {
        Some((h, b)) => (*h, b),
        None => return Err(sw::WRONG_LENGTH),
    };
    let ne = |b: u8| if b == 0 { 256 } else { usize::from(b) };
    let (data, ne) = match *body {
        [] => (&[][..], None),
        [le] => (&[][..], Some(ne(le))),
        [lc, ref rest @ ..] => {
            let lc = usize::from(lc);
            match (rest.get(..lc), rest.len() - lc.min(rest.len())) {
                (Some(data), 0) if rest.len() == lc => (data, None),
                (Some(data), 1) => (data, rest.last().map(|&b| ne(b))),
                _ => return Err(sw::WRONG_LENGTH),
            }
        }
    };
    Ok(Apdu {
        cla,
        ins,
        p1,
        p2,
        data,
        has_data: !data.is_empty(),
        ne,
    })
}

/// The operation MSE SET prepared.
#[derive(Debug, Clone, Copy)]
enum Environment {
    /// Signing with the key at `key_reference`.
    Sign {
        algorithm: SignAlgorithm,
        key_reference: u8,
    },
    /// Decrypting with the key at `key_reference`.
    Decipher {
        algorithm: DecipherAlgorithm,
        key_reference: u8,
    },
}

/// Command data collected through command chaining.
struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Zeroizing<Vec<u8>>,
}

/// What the current selection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// Nothing, the master file or the applet DF: READ BINARY has no EF.
    Directory,
    /// A file of the applet.
    File(u16),
}

/// Volatile applet state.
pub struct Applet {
    /// Whether the IDPrime applet was selected since the last reset.
    selected: bool,
    selection: Selection,
    /// PINs verified since the last reset (by reference).
    verified: Vec<u8>,
    /// The storage secret the last successful verification unwrapped.
    storage: Option<StorageSecret>,
    environment: Option<Environment>,
    /// What PSO HASH received, waiting for PSO COMPUTE DIGITAL SIGNATURE.
    hash: Option<Zeroizing<Vec<u8>>>,
    chain: Option<Chain>,
    /// Response bytes still to be fetched with GET RESPONSE.
    remaining: Zeroizing<Vec<u8>>,
    /// Set by handlers that change the persistent state.
    changed: bool,
}

impl Default for Applet {
    fn default() -> Self {
        Self {
            selected: false,
            selection: Selection::Directory,
            verified: Vec::new(),
            storage: None,
            environment: None,
            hash: None,
            chain: None,
            remaining: Zeroizing::new(Vec::new()),
            changed: false,
        }
    }
}

impl Applet {
    /// A freshly powered card.
    pub fn new() -> Self {
        Self::default()
    }

    /// Power-off or reset: forget the selection, every verification and buffer.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Processes one command APDU.
    pub fn process(&mut self, state: &mut IdPrimeState, raw: &[u8]) -> Outcome {
        self.changed = false;
        let response = self.process_raw(state, raw);
        Outcome {
            response,
            changed: std::mem::take(&mut self.changed),
        }
    }

    fn process_raw(&mut self, state: &mut IdPrimeState, raw: &[u8]) -> Vec<u8> {
        let cmd = match parse(raw) {
            Ok(c) => c,
            Err(status) => {
                self.chain = None;
                return status.to_be_bytes().to_vec();
            }
        };
        if cmd.cla & !0x10 != 0 {
            self.chain = None;
            return sw::WRONG_CLA.to_be_bytes().to_vec();
        }
        if cmd.ins == 0xC0 && cmd.cla == 0 {
            return self.get_response(&cmd);
        }
        self.remaining.clear();

        let continues = self
            .chain
            .as_ref()
            .is_some_and(|c| (c.ins, c.p1, c.p2) == (cmd.ins, cmd.p1, cmd.p2));
        if !continues {
            // Another command abandons an unfinished chain.
            self.chain = None;
        }
        if cmd.cla & 0x10 != 0 {
            // Only PSO DECIPHER takes chained data (its cryptogram exceeds 255 bytes).
            if (cmd.ins, cmd.p1, cmd.p2) != (0x2A, 0x80, 0x86) {
                return sw::CHAINING_UNSUPPORTED.to_be_bytes().to_vec();
            }
            let chain = self.chain.get_or_insert_with(|| Chain {
                ins: cmd.ins,
                p1: cmd.p1,
                p2: cmd.p2,
                data: Zeroizing::new(Vec::new()),
            });
            if chain.data.len() + cmd.data.len() > MAX_COMMAND {
                self.chain = None;
                return sw::WRONG_LENGTH.to_be_bytes().to_vec();
            }
            chain.data.extend_from_slice(cmd.data);
            return sw::OK.to_be_bytes().to_vec();
        }
        let collected = self.chain.take().map(|mut c| {
            c.data.extend_from_slice(cmd.data);
            c.data
        });
        let data: &[u8] = match &collected {
            Some(d) if d.len() > MAX_COMMAND => return sw::WRONG_LENGTH.to_be_bytes().to_vec(),
            Some(d) => d,
            None => cmd.data,
        };
        let full = Apdu {
            data,
            has_data: cmd.has_data || collected.is_some(),
            ..cmd
        };
        match self.execute(state, &full) {
            Ok(out) => self.respond(Zeroizing::new(out), &full),
            Err(status) => status.to_be_bytes().to_vec(),
        }
    }

    /// T=0 delivery: data for a command that carried data waits for GET RESPONSE (61xx);
    /// otherwise up to Ne bytes now and the rest announced with 61xx.
    fn respond(&mut self, mut out: Zeroizing<Vec<u8>>, cmd: &Apdu<'_>) -> Vec<u8> {
        if out.is_empty() {
            return sw::OK.to_be_bytes().to_vec();
        }
        let now = if cmd.has_data {
            0
        } else {
            cmd.ne.unwrap_or(256).min(out.len())
        };
        self.remaining = Zeroizing::new(out.split_off(now));
        let mut response = out.to_vec();
        response.extend_from_slice(&self.pending_status().to_be_bytes());
        response
    }

    /// 9000, or 61xx while response bytes wait (xx = 00 for 256 or more).
    fn pending_status(&self) -> u16 {
        match self.remaining.len() {
            0 => sw::OK,
            n => 0x6100 | u16::try_from(n).ok().filter(|&n| n < 256).unwrap_or(0),
        }
    }

    fn get_response(&mut self, cmd: &Apdu<'_>) -> Vec<u8> {
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return sw::WRONG_P1P2.to_be_bytes().to_vec();
        }
        if self.remaining.is_empty() {
            return sw::CONDITIONS.to_be_bytes().to_vec();
        }
        let n = cmd.ne.unwrap_or(256).min(self.remaining.len());
        let rest = self.remaining.split_off(n);
        let mut response = std::mem::replace(&mut self.remaining, Zeroizing::new(rest)).to_vec();
        response.extend_from_slice(&self.pending_status().to_be_bytes());
        response
    }

    fn execute(&mut self, state: &mut IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        match cmd.ins {
            0xA4 => self.select(state, cmd),
            0xB0 => self.read_binary(state, cmd),
            0xCA => get_data(state, cmd),
            0x84 => get_challenge(cmd),
            // The card manager answers CPLC whatever is selected; the applet the rest.
            _ if !self.selected => Err(sw::WRONG_INS),
            0x20 => self.verify(state, cmd),
            0x24 => self.change_reference_data(state, cmd),
            // Unblocking is the admin key's challenge-response (the issuer's tool), not
            // RESET RETRY COUNTER with a PUK; file writes need the admin key too.
            0x2C | 0xD6 => Err(sw::SECURITY),
            0x22 => self.manage_security_environment(state, cmd),
            0x2A => self.perform_security_operation(state, cmd),
            _ => Err(sw::WRONG_INS),
        }
    }

    fn select(&mut self, state: &IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        let wants_fci = match cmd.p2 {
            0x00 | 0x04 => true,
            0x0C => false,
            _ => return Err(sw::WRONG_P1P2),
        };
        let fid = match cmd.p1 {
            0x04 => {
                if cmd.data != AID {
                    return Err(sw::NOT_FOUND);
                }
                self.selected = true;
                self.selection = Selection::Directory;
                if !wants_fci {
                    return Ok(Vec::new());
                }
                let mut fci = files::fci(0x0000, 0, true);
                // 84: the DF name.
                fci.push(0x84);
                fci.push(AID.len() as u8);
                fci.extend_from_slice(&AID);
                if let Some(len) = fci.get_mut(1) {
                    *len += 2 + AID.len() as u8;
                }
                return Ok(fci);
            }
            0x00 | 0x02 => match *cmd.data {
                [] => FID_MF,
                [hi, lo] => u16::from_be_bytes([hi, lo]),
                _ => return Err(sw::WRONG_DATA),
            },
            0x08 | 0x09 => {
                if cmd.data.is_empty() || !cmd.data.len().is_multiple_of(2) {
                    return Err(sw::WRONG_DATA);
                }
                let path: Vec<u16> = cmd
                    .data
                    .chunks_exact(2)
                    .filter_map(|w| <[u8; 2]>::try_from(w).ok())
                    .map(u16::from_be_bytes)
                    .collect();
                // The applet's files sit directly under it: a path is one FID (the MF's
                // FID in front is allowed).
                match path.as_slice() {
                    [FID_MF] => FID_MF,
                    [fid] | [FID_MF, fid] => *fid,
                    _ => return Err(sw::NOT_FOUND),
                }
            }
            _ => return Err(sw::WRONG_P1P2),
        };
        if fid == FID_MF {
            self.selection = Selection::Directory;
            return Ok(if wants_fci {
                files::fci(FID_MF, 0, true)
            } else {
                Vec::new()
            });
        }
        let file = self
            .selected
            .then(|| state.files.get(&fid))
            .flatten()
            .ok_or(sw::NOT_FOUND)?;
        self.selection = Selection::File(fid);
        Ok(if wants_fci {
            files::fci(fid, file.len(), false)
        } else {
            Vec::new()
        })
    }

    fn read_binary(&mut self, state: &IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 & 0x80 != 0 {
            // Short EF identifiers: not on this card.
            return Err(sw::FUNCTION_UNSUPPORTED);
        }
        let Selection::File(fid) = self.selection else {
            return Err(sw::NO_CURRENT_EF);
        };
        let file = state.files.get(&fid).ok_or(sw::NO_CURRENT_EF)?;
        let offset = usize::from(u16::from_be_bytes([cmd.p1, cmd.p2]));
        if offset >= file.len() {
            return Err(sw::OFFSET_OUTSIDE);
        }
        let n = cmd.ne.unwrap_or(256).min(file.len() - offset);
        Ok(file.get(offset..offset + n).unwrap_or_default().to_vec())
    }

    fn verify(&mut self, state: &mut IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0x00 {
            return Err(sw::WRONG_P1P2);
        }
        let reference = cmd.p2;
        let pin = state.pin(reference).ok_or(sw::NO_REFERENCE)?;
        if cmd.data.is_empty() {
            // Status: verified, or the tries left.
            return if pin.blocked() {
                Err(sw::BLOCKED)
            } else if self.verified.contains(&reference) {
                Ok(Vec::new())
            } else {
                Err(sw::tries(pin.tries_left))
            };
        }
        if pin.blocked() {
            return Err(sw::BLOCKED);
        }
        let compared = presented_form(state.model, cmd.data).ok_or(sw::WRONG_LENGTH)?;
        let storage = self.check_pin(state, reference, &compared)?;
        self.storage = Some(storage);
        if !self.verified.contains(&reference) {
            self.verified.push(reference);
        }
        Ok(Vec::new())
    }

    /// Checks `compared` against PIN `reference`, counting: a right PIN restores the tries,
    /// a wrong one spends one and forgets the PIN's verification.
    fn check_pin(
        &mut self,
        state: &mut IdPrimeState,
        reference: u8,
        compared: &[u8],
    ) -> Result<StorageSecret, u16> {
        let result = state.open_with_pin(reference, compared);
        let pin = state.pin_mut(reference).ok_or(sw::NO_REFERENCE)?;
        match result {
            Ok(storage) => {
                if pin.tries_left != pin.max_tries {
                    pin.tries_left = pin.max_tries;
                    self.changed = true;
                }
                Ok(storage)
            }
            Err(SealError::WrongSecret) => {
                pin.tries_left = pin.tries_left.saturating_sub(1);
                self.changed = true;
                let left = pin.tries_left;
                self.verified.retain(|&r| r != reference);
                if self.verified.is_empty() {
                    self.storage = None;
                }
                Err(sw::tries(left))
            }
            Err(e) => {
                log::error!("virtual IDPrime card: PIN {reference:02X}: {e}");
                Err(sw::NO_PRECISE_DIAGNOSIS)
            }
        }
    }

    fn change_reference_data(&mut self, state: &mut IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0x00 {
            return Err(sw::WRONG_P1P2);
        }
        let reference = cmd.p2;
        let pin = state.pin(reference).ok_or(sw::NO_REFERENCE)?;
        if pin.blocked() {
            return Err(sw::BLOCKED);
        }
        // old‖new: padded models send two 16-byte blocks; otherwise the old PIN is as long as
        // the current one.
        let split = if state.model.pads_pin() {
            model::PIN_MAX
        } else {
            usize::from(pin.length)
        };
        if cmd.data.len() <= split {
            return Err(sw::WRONG_LENGTH);
        }
        let (old, new) = cmd.data.split_at(split);
        let old = presented_form(state.model, old).ok_or(sw::WRONG_LENGTH)?;
        let new_compared = presented_form(state.model, new).ok_or(sw::WRONG_LENGTH)?;
        let new_value = unpadded(new);
        let storage = self.check_pin(state, reference, &old)?;
        let kdf = state.kdf;
        let credential = Credential::new(&new_compared, &storage, kdf).map_err(|e| {
            log::error!("virtual IDPrime card: new PIN: {e}");
            sw::NO_PRECISE_DIAGNOSIS
        })?;
        let pin = state.pin_mut(reference).ok_or(sw::NO_REFERENCE)?;
        pin.credential = credential;
        pin.length = new_value.len() as u8;
        pin.is_default = new_value == model::FACTORY_PIN;
        pin.tries_left = pin.max_tries;
        self.changed = true;
        self.storage = Some(storage);
        if !self.verified.contains(&reference) {
            self.verified.push(reference);
        }
        Ok(Vec::new())
    }

    fn manage_security_environment(&mut self, state: &IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0x41 || !matches!(cmd.p2, 0xB6 | 0xB8) {
            return Err(sw::WRONG_P1P2);
        }
        self.environment = None;
        self.hash = None;
        let mut algorithm = None;
        let mut key_reference = None;
        let mut rest = cmd.data;
        while let [tag, len, ref tail @ ..] = *rest {
            let value = tail.get(..usize::from(len)).ok_or(sw::WRONG_DATA)?;
            match (tag, value) {
                (0x80, &[a]) => algorithm = Some(a),
                (0x84, &[k]) => key_reference = Some(k),
                _ => return Err(sw::WRONG_DATA),
            }
            rest = tail.get(usize::from(len)..).unwrap_or_default();
        }
        if !rest.is_empty() {
            return Err(sw::WRONG_DATA);
        }
        let (Some(algorithm), Some(key_reference)) = (algorithm, key_reference) else {
            return Err(sw::WRONG_DATA);
        };
        let key = state.keys.get(&key_reference).ok_or(sw::NO_REFERENCE)?;
        let is_ec = key.algorithm.rsa_bits().is_none();
        self.environment = Some(if cmd.p2 == 0xB6 {
            let algorithm = SignAlgorithm::from_reference(algorithm)
                .filter(|a| a.is_ec() == is_ec)
                .ok_or(sw::WRONG_DATA)?;
            Environment::Sign {
                algorithm,
                key_reference,
            }
        } else {
            let algorithm = DecipherAlgorithm::from_reference(algorithm)
                .filter(|_| !is_ec)
                .ok_or(sw::WRONG_DATA)?;
            Environment::Decipher {
                algorithm,
                key_reference,
            }
        });
        Ok(Vec::new())
    }

    fn perform_security_operation(&mut self, state: &IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        match (cmd.p1, cmd.p2) {
            (0x90, 0xA0) => self.pso_hash(cmd),
            (0x9E, 0x9A) => self.pso_sign(state, cmd),
            (0x80, 0x86) => self.pso_decipher(state, cmd),
            _ => Err(sw::WRONG_P1P2),
        }
    }

    /// PSO HASH: `90 L hash` from the host; the card keeps it for the signature and echoes it.
    fn pso_hash(&mut self, cmd: &Apdu<'_>) -> Reply {
        self.hash = None;
        let Some(Environment::Sign { algorithm, .. }) = self.environment else {
            return Err(sw::CONDITIONS);
        };
        let value = match *cmd.data {
            [0x90, len, ref value @ ..] if value.len() == usize::from(len) => value,
            _ => return Err(sw::WRONG_DATA),
        };
        if !algorithm.accepts_hash_len(value.len()) {
            return Err(sw::WRONG_DATA);
        }
        self.hash = Some(Zeroizing::new(value.to_vec()));
        Ok(value.to_vec())
    }

    /// Opens the key at `key_reference` once its PIN is verified.
    fn usable_key(
        &mut self,
        state: &IdPrimeState,
        key_reference: u8,
    ) -> Result<super::crypto::PrivateKey, u16> {
        let key = state.keys.get(&key_reference).ok_or(sw::NO_REFERENCE)?;
        let storage = match &self.storage {
            Some(s) if self.verified.contains(&key.pin) => s,
            _ => return Err(sw::SECURITY),
        };
        let opened = state.open_key(key_reference, storage).map_err(|e| {
            log::error!("virtual IDPrime card: key {key_reference:02X}: {e}");
            sw::NO_PRECISE_DIAGNOSIS
        })?;
        if key.pin == model::SIGNATURE_PIN {
            // The Digital Signature PIN authorises one signature (user consent).
            self.verified.retain(|&r| r != model::SIGNATURE_PIN);
        }
        Ok(opened)
    }

    fn pso_sign(&mut self, state: &IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        let Some(Environment::Sign {
            algorithm,
            key_reference,
        }) = self.environment
        else {
            return Err(sw::CONDITIONS);
        };
        if cmd.has_data {
            return Err(sw::WRONG_DATA);
        }
        let Some(hash) = self.hash.take() else {
            return Err(sw::CONDITIONS);
        };
        let key = self.usable_key(state, key_reference)?;
        crypto::sign(&key, algorithm, &hash).map_err(operation_status)
    }

    fn pso_decipher(&mut self, state: &IdPrimeState, cmd: &Apdu<'_>) -> Reply {
        let Some(Environment::Decipher {
            algorithm,
            key_reference,
        }) = self.environment
        else {
            return Err(sw::CONDITIONS);
        };
        let cryptogram = match *cmd.data {
            // 81: the padding-indicator byte OpenSC sends.
            [0x81, ref c @ ..] if !c.is_empty() => c,
            _ => return Err(sw::WRONG_DATA),
        };
        let key = self.usable_key(state, key_reference)?;
        crypto::decipher(&key, algorithm, cryptogram)
            .map(|p| p.to_vec())
            .map_err(operation_status)
    }
}

fn operation_status(e: OperationError) -> u16 {
    match e {
        OperationError::WrongKey => sw::CONDITIONS,
        OperationError::BadInput => sw::WRONG_DATA,
    }
}

/// The PIN as presented, in the form the card compares; `None` when it has the wrong length
/// (on padding models: not 16 bytes, or not digits followed by zeros).
fn presented_form(model: Model, presented: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if model.pads_pin() {
        if presented.len() != model::PIN_MAX {
            return None;
        }
        let value = unpadded(presented);
        if presented.get(value.len()..)?.iter().any(|&b| b != 0) {
            return None;
        }
        state::compared_form(model, value)
    } else {
        state::compared_form(model, presented)
    }
}

/// A PIN block without its zero padding.
fn unpadded(block: &[u8]) -> &[u8] {
    let end = block.iter().position(|&b| b == 0).unwrap_or(block.len());
    block.get(..end).unwrap_or_default()
}

/// GET DATA: the CPLC (`9F 7F 2A` + 42 bytes; the card manager's, answered whatever is
/// selected) and the applet version (`DF 30 L text`).
fn get_data(state: &IdPrimeState, cmd: &Apdu<'_>) -> Reply {
    match (cmd.p1, cmd.p2) {
        (0x9F, 0x7F) => Ok(cplc(state)),
        (0xDF, 0x30) => {
            let version = state.model.applet_version();
            let mut out = vec![0xDF, 0x30, version.len() as u8];
            out.extend_from_slice(version);
            Ok(out)
        }
        _ => Err(sw::NO_REFERENCE),
    }
}

/// The Card Production Life Cycle data (GlobalPlatform): 42 bytes after the `9F 7F 2A`
/// header. Only the OS release level matters to OpenSC 0.23; the IC serial carries the last
/// four bytes of the card id. The other values are ours (a plausible Gemalto card).
pub fn cplc(state: &IdPrimeState) -> Vec<u8> {
    let serial = state
        .files
        .get(&files::FID_CARDID)
        .and_then(|id| id.get(12..16))
        .unwrap_or(&[0; 4])
        .to_vec();
    let mut out = vec![0x9F, 0x7F, 0x2A];
    out.extend_from_slice(&[0x40, 0x90]); // IC fabricator
    out.extend_from_slice(&[0x7B, 0x12]); // IC type
    out.extend_from_slice(&[0x12, 0x91]); // operating system identifier
    out.extend_from_slice(&[0x71, 0x53]); // operating system release date (YDDD)
    out.extend_from_slice(&[state.model.os_release_level(), 0x00]); // OS release level
    out.extend_from_slice(&[0x42, 0x10]); // IC fabrication date
    out.extend_from_slice(&serial); // IC serial number
    out.extend_from_slice(&[0x00, 0x01]); // IC batch identifier
    out.extend_from_slice(&[0x47, 0x50]); // IC module fabricator
    out.extend_from_slice(&[0x42, 0x20]); // IC module packaging date
    out.extend_from_slice(&[0x12, 0x91]); // ICC manufacturer
    out.extend_from_slice(&[0x42, 0x30]); // IC embedding date
    out.extend_from_slice(&[0x12, 0x92]); // IC pre-personaliser
    out.extend_from_slice(&[0x42, 0x40]); // IC pre-personalisation date
    out.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]); // pre-personalisation equipment
    out.extend_from_slice(&[0x12, 0x93]); // IC personaliser
    out.extend_from_slice(&[0x42, 0x50]); // IC personalisation date
    out.extend_from_slice(&[0x00, 0x00, 0x00, 0x02]); // personalisation equipment
    out
}

/// GET CHALLENGE: Ne random bytes (OpenSC asks 8 with P2=01, 16 with P2=00).
fn get_challenge(cmd: &Apdu<'_>) -> Reply {
    if cmd.p1 != 0 || !matches!(cmd.p2, 0x00 | 0x01) {
        return Err(sw::WRONG_P1P2);
    }
    match cmd.ne {
        Some(n) if !cmd.has_data => Ok(random_bytes(n)),
        _ => Err(sw::WRONG_LENGTH),
    }
}

/// The IDPrime card's answer-to-reset for its model.
pub fn atr(state: &IdPrimeState) -> Vec<u8> {
    state.model.atr()
}
