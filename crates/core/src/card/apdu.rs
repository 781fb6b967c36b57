//! Command and response APDUs (ISO 7816-4 §5): short and extended length encodings, command
//! chaining for long data on short-length cards, and the response loop (61xx GET RESPONSE,
//! 6Cxx resend). Data fields live in zeroizing buffers because they carry PINs and keys.

use super::sw::StatusWord;
use super::{CardError, Channel};
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// Largest data field of a short APDU.
pub const SHORT_MAX: usize = 255;
/// Largest data field Tessera sends in one extended APDU.
pub const EXTENDED_MAX: usize = 65535;

static APDUS_SENT: AtomicU64 = AtomicU64::new(0);

/// Number of APDUs this process has sent to any card (for benchmarks and budgets).
pub fn apdus_sent() -> u64 {
    APDUS_SENT.load(Ordering::Relaxed)
}

/// A command APDU before encoding.
#[derive(Clone)]
pub struct Command {
    /// Class byte (chaining bit set by the encoder).
    pub cla: u8,
    /// Instruction.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Data field (may hold secrets).
    pub data: Zeroizing<Vec<u8>>,
    /// Expected response length; `None` = no Le field, `Some(0)` = maximum.
    pub le: Option<usize>,
}

impl std::fmt::Debug for Command {
    // Never print the data field: it can be a PIN, a PUK or key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02X} {:02X} {:02X} {:02X} Lc={}",
            self.cla,
            self.ins,
            self.p1,
            self.p2,
            self.data.len()
        )
    }
}

impl Command {
    /// A command with no data and Le = maximum.
    pub fn new(ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla: 0x00,
            ins,
            p1,
            p2,
            data: Zeroizing::new(Vec::new()),
            le: Some(0),
        }
    }

    /// Sets the data field.
    pub fn with_data(mut self, data: &[u8]) -> Self {
        self.data = Zeroizing::new(data.to_vec());
        self
    }

    /// Sets Le (`None` removes the field).
    pub fn with_le(mut self, le: Option<usize>) -> Self {
        self.le = le;
        self
    }

    /// Encodes as one APDU. `extended` selects extended length fields when the data or Le do
    /// not fit a short APDU; callers split long data with [`Command::chain`] on short-only cards.
    pub fn encode(&self, extended: bool) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.data.len() + 9));
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        let lc = self.data.len();
        let le = self.le;
        // Le = 0 means "as much as there is": on an extended-length card ask for 65536 at once
        // instead of collecting 256-byte 61xx pieces.
        let need_ext = lc > SHORT_MAX || le.is_some_and(|l| l > 256 || l == 0);
        if extended && need_ext {
            if lc > 0 {
                out.extend_from_slice(&[0x00, (lc >> 8) as u8, lc as u8]);
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = le {
                if lc == 0 {
                    out.push(0x00);
                }
                let le = if le >= 65536 { 0 } else { le };
                out.extend_from_slice(&[(le >> 8) as u8, le as u8]);
            }
        } else {
            if lc > 0 {
                out.push(lc.min(SHORT_MAX) as u8);
                out.extend_from_slice(self.data.get(..lc.min(SHORT_MAX)).unwrap_or_default());
            }
            if let Some(le) = le {
                out.push(if le >= 256 { 0 } else { le as u8 });
            }
        }
        out
    }

    /// Splits into a chain of short commands (CLA bit 0x10 on all but the last).
    pub fn chain(&self) -> Vec<Command> {
        if self.data.len() <= SHORT_MAX {
            return vec![self.clone()];
        }
        let chunks: Vec<&[u8]> = self.data.chunks(SHORT_MAX).collect();
        let last = chunks.len().saturating_sub(1);
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| Command {
                cla: if i == last { self.cla } else { self.cla | 0x10 },
                ins: self.ins,
                p1: self.p1,
                p2: self.p2,
                data: Zeroizing::new(chunk.to_vec()),
                le: if i == last { self.le } else { None },
            })
            .collect()
    }
}

/// A response APDU: data and status word.
pub struct Response {
    /// Response data (may hold decrypted secrets).
    pub data: Zeroizing<Vec<u8>>,
    /// Status word.
    pub sw: StatusWord,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.sw, self.data.len())
    }
}

impl Response {
    /// Splits raw bytes from the card into data and status word.
    pub fn parse(raw: &[u8]) -> Result<Self, CardError> {
        if raw.len() < 2 {
            return Err(CardError::Malformed("response shorter than a status word"));
        }
        let (data, sw) = raw.split_at(raw.len() - 2);
        let sw = match sw {
            [a, b] => u16::from_be_bytes([*a, *b]),
            _ => return Err(CardError::Malformed("response shorter than a status word")),
        };
        Ok(Self {
            data: Zeroizing::new(data.to_vec()),
            sw: StatusWord::from(sw),
        })
    }

    /// The data if the status is 9000, else the status as an error.
    pub fn success(self) -> Result<Zeroizing<Vec<u8>>, CardError> {
        if self.sw.is_success() {
            Ok(self.data)
        } else {
            Err(CardError::Status(self.sw))
        }
    }
}

/// Sends one logical command: extended length or chaining as the transport allows, then
/// collects 61xx continuations and honours 6Cxx. Counts every APDU sent.
pub fn exchange(t: &mut dyn Channel, cmd: &Command) -> Result<Response, CardError> {
    let parts = if t.extended_length() && cmd.data.len() <= EXTENDED_MAX {
        vec![cmd.clone()]
    } else {
        cmd.chain()
    };
    let mut resp = None;
    for part in &parts {
        let r = send_one(t, part)?;
        let last = std::ptr::eq(part, parts.last().unwrap_or(part));
        if !last && !r.sw.is_success() {
            return Ok(r);
        }
        resp = Some(r);
    }
    let mut resp = resp.ok_or(CardError::Malformed("empty command chain"))?;
    let mut data = std::mem::take(&mut resp.data);
    let mut guard = 0;
    while let StatusWord::BytesRemaining(n) = resp.sw {
        guard += 1;
        if guard > 512 {
            return Err(CardError::Malformed("endless 61xx response"));
        }
        let get = Command::new(0xC0, 0, 0).with_le(Some(if n == 0 { 256 } else { usize::from(n) }));
        resp = send_one(t, &get)?;
        data.extend_from_slice(&resp.data);
    }
    Ok(Response { data, sw: resp.sw })
}

fn send_one(t: &mut dyn Channel, cmd: &Command) -> Result<Response, CardError> {
    let ext = t.extended_length();
    let r = transmit_logged(t, cmd, ext)?;
    if let StatusWord::CorrectLength(n) = r.sw {
        let again = cmd
            .clone()
            .with_le(Some(if n == 0 { 256 } else { usize::from(n) }));
        return transmit_logged(t, &again, ext);
    }
    Ok(r)
}

fn transmit_logged(t: &mut dyn Channel, cmd: &Command, ext: bool) -> Result<Response, CardError> {
    let raw = cmd.encode(ext);
    APDUS_SENT.fetch_add(1, Ordering::Relaxed);
    let out = Zeroizing::new(t.transmit_raw(&raw)?);
    let r = Response::parse(&out)?;
    log::debug!("apdu {:?} -> {:?}", cmd, r);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_four_cases() {
        assert_eq!(
            &Command::new(0xCB, 0x3F, 0xFF).with_le(None).encode(false)[..],
            &[0, 0xCB, 0x3F, 0xFF]
        );
        assert_eq!(
            &Command::new(0xCB, 0x3F, 0xFF).encode(false)[..],
            &[0, 0xCB, 0x3F, 0xFF, 0]
        );
        assert_eq!(
            &Command::new(0x20, 0, 0x80)
                .with_data(&[1, 2])
                .with_le(None)
                .encode(false)[..],
            &[0, 0x20, 0, 0x80, 2, 1, 2]
        );
        let long = Command::new(0xDB, 0x3F, 0xFF).with_data(&[7; 300]);
        let ext = long.encode(true);
        assert_eq!(&ext[..7], &[0, 0xDB, 0x3F, 0xFF, 0, 0x01, 0x2C]);
        assert_eq!(&ext[ext.len() - 2..], &[0, 0]);
        assert_eq!(ext.len(), 4 + 3 + 300 + 2);
        let le_only = Command::new(0xCB, 0x3F, 0xFF)
            .with_le(Some(1000))
            .encode(true);
        assert_eq!(&le_only[..], &[0, 0xCB, 0x3F, 0xFF, 0, 0x03, 0xE8]);
    }

    #[test]
    fn chains_long_data() {
        let long = Command::new(0xDB, 0x3F, 0xFF).with_data(&[7; 600]);
        let chain = long.chain();
        assert_eq!(chain.len(), 3);
        assert_eq!(chain[0].cla, 0x10);
        assert_eq!(chain[1].cla, 0x10);
        assert_eq!(chain[2].cla, 0x00);
        assert_eq!(chain[0].le, None);
        assert_eq!(chain.iter().map(|c| c.data.len()).sum::<usize>(), 600);
    }

    #[test]
    fn parses_responses() {
        assert!(Response::parse(&[0x90]).is_err());
        let r = Response::parse(&[1, 2, 0x63, 0xC1]).unwrap();
        assert_eq!(r.sw, StatusWord::VerifyFail { tries: 1 });
        assert_eq!(&r.data[..], &[1, 2]);
    }
}
