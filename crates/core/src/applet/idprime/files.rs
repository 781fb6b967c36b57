//! The IDPrime applet's files as the host reads them: SELECT with the FCI and its size, READ
//! BINARY in short pieces, and the parsing of what the files hold — the index (0101), the
//! minidriver container map (0204), the 940's key-reference map (0005), certificate files
//! (plain DER or minidriver-compressed: `01 00`, little-endian length, zlib), the card id
//! (0201) and the `p11/tinfo` token label. Parsers take bytes and never panic; every length
//! that comes from the card is checked against what was read, and decompression is bounded.

use super::{command, transmit, Error, Profile};
use crate::card::{tlv, Channel, StatusWord};
use std::io::Read;

/// The index file listing every other file.
pub const INDEX_FID: [u8; 2] = [0x01, 0x01];
/// The card id (16 bytes; OpenSC reads it here whatever the index says).
pub const CARD_ID_FID: [u8; 2] = [0x02, 0x01];
/// The minidriver cache file `cardcf` (freshness counters).
pub const CARD_CACHE_FID: [u8; 2] = [0x02, 0x02];
/// The minidriver container map `mscp/cmapfile`.
pub const CONTAINER_MAP_FID: [u8; 2] = [0x02, 0x04];
/// The 940's key-reference map.
pub const KEYREF_MAP_FID: [u8; 2] = [0x00, 0x05];

/// Largest file the driver reads (OpenSC's MAX_FILE_SIZE).
pub const MAX_FILE_SIZE: usize = 65535;
/// READ BINARY addresses offsets up to 7FFF: files must end before 7FFF + 256.
const MAX_READ_OFFSET: usize = 0x7FFF;
/// Bytes per READ BINARY (short Le).
const READ_CHUNK: usize = 256;

/// One index record.
pub const INDEX_RECORD_LEN: usize = 21;
/// One minidriver CONTAINER_MAP_RECORD.
pub const CONTAINER_RECORD_LEN: usize = 86;
/// One key-reference map record.
pub const KEYREF_RECORD_LEN: usize = 8;
/// The card id's length.
pub const CARD_ID_LEN: usize = 16;

/// What a SELECT's FCI says about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fci {
    /// The file's size in bytes (tag 80, else 81).
    pub size: usize,
}

/// Parses an FCI/FCP template (`62` or `6F`) for the file size.
pub fn parse_fci(data: &[u8]) -> Result<Fci, Error> {
    let (tag, body, _) =
        tlv::take_do(data).map_err(|_| Error::Damaged("the card's FCI does not parse"))?;
    if tag != 0x62 && tag != 0x6F {
        return Err(Error::Damaged("the card's FCI is not a 62 or 6F template"));
    }
    let size = match tlv::find(body, 0x80) {
        Ok(Some(v)) => Some(v),
        Ok(None) => tlv::find(body, 0x81).ok().flatten(),
        Err(_) => return Err(Error::Damaged("the card's FCI does not parse")),
    }
    .ok_or(Error::Damaged("the card's FCI has no file size"))?;
    if size.is_empty() || size.len() > 4 {
        return Err(Error::Damaged("the card's FCI has a malformed file size"));
    }
    let size = size
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if size > MAX_FILE_SIZE {
        return Err(Error::Damaged("a file on the card is larger than 64 KiB"));
    }
    Ok(Fci { size })
}

/// How a file is selected: OpenSC selects the files it names by path ("0101") with P1=08 and
/// the certificate files listed in the index by file id with P1=00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectBy {
    /// P1=08: path from the current application.
    Path,
    /// P1=00: file identifier.
    FileId,
}

/// SELECT a file asking for its FCI (P2=00). `None` when the card has no such file (6A82).
pub fn select_file(
    ch: &mut dyn Channel,
    profile: &Profile,
    fid: [u8; 2],
    by: SelectBy,
) -> Result<Option<Fci>, Error> {
    let p1 = match by {
        SelectBy::Path => 0x08,
        SelectBy::FileId => 0x00,
    };
    let resp = transmit(ch, &command(profile, 0xA4, p1, 0x00, &fid, Some(256)))?;
    match resp.sw {
        StatusWord::Success => parse_fci(&resp.data).map(Some),
        StatusWord::NotFound => Ok(None),
        sw => Err(Error::from_status(sw)),
    }
}

/// READ BINARY of the selected file from offset 0 to `size`, in pieces of at most 256 bytes.
/// A card that answers fewer bytes than asked is asked again from where it stopped; one that
/// answers nothing, more than asked, or an error before `size` fails the read.
pub fn read_binary(ch: &mut dyn Channel, profile: &Profile, size: usize) -> Result<Vec<u8>, Error> {
    if size > MAX_READ_OFFSET + READ_CHUNK {
        return Err(Error::Damaged("a file on the card is too large to read"));
    }
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let offset = out.len();
        if offset > MAX_READ_OFFSET {
            return Err(Error::Damaged("a file on the card is too large to read"));
        }
        let want = (size - offset).min(READ_CHUNK);
        let [p1, p2] = (offset as u16).to_be_bytes();
        let resp = transmit(ch, &command(profile, 0xB0, p1, p2, &[], Some(want)))?;
        if !resp.sw.is_success() {
            return Err(match resp.sw {
                StatusWord::Other(0x6B00) | StatusWord::Other(0x6282) => {
                    Error::Damaged("a file on the card is shorter than its FCI says")
                }
                sw => Error::from_status(sw),
            });
        }
        if resp.data.is_empty() {
            return Err(Error::Damaged(
                "a file on the card is shorter than its FCI says",
            ));
        }
        if resp.data.len() > want {
            return Err(Error::Damaged("the card returned more bytes than asked"));
        }
        out.extend_from_slice(&resp.data);
    }
    Ok(out)
}

/// SELECT then read a whole file; `None` when it does not exist.
pub fn read_file(
    ch: &mut dyn Channel,
    profile: &Profile,
    fid: [u8; 2],
    by: SelectBy,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(fci) = select_file(ch, profile, fid, by)? else {
        return Ok(None);
    };
    read_binary(ch, profile, fci.size).map(Some)
}

/// One record of the index file: a file of the minidriver file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The file's identifier.
    pub fid: [u8; 2],
    /// The size the index records (never used by OpenSC; the FCI decides).
    pub size_hint: u16,
    /// The file name as stored (8 bytes, NUL-padded): `kxc00`, `cmapfile`, `tinfo`, …
    pub raw_name: [u8; 8],
    /// The directory as stored (9 bytes, NUL-padded): `mscp`, `p11`, or empty.
    pub raw_directory: [u8; 9],
}

/// Which of the two minidriver certificate kinds a certificate file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRole {
    /// `kxcNN`: key exchange (decryption and signature).
    KeyExchange,
    /// `kscNN`: signature only.
    Signature,
}

impl IndexEntry {
    /// The file name up to its first NUL (lossy UTF-8), for messages.
    pub fn name(&self) -> String {
        nul_terminated(&self.raw_name)
    }

    /// The directory up to its first NUL, for messages.
    pub fn directory(&self) -> String {
        nul_terminated(&self.raw_directory)
    }

    /// A certificate file exactly as OpenSC recognises one: the name starts with `ksc` or
    /// `kxc` and the directory is `mscp` (five bytes compared, the NUL included). Returns its
    /// role and container index: the two digits after the prefix, 0 when they are not two
    /// digits (OpenSC 0.26+).
    pub fn certificate(&self) -> Option<(CertificateRole, u8)> {
        if self.raw_directory.get(..5) != Some(b"mscp\0".as_slice()) {
            return None;
        }
        let role = match self.raw_name.get(..3) {
            Some(b"kxc") => CertificateRole::KeyExchange,
            Some(b"ksc") => CertificateRole::Signature,
            _ => return None,
        };
        let index = match self.raw_name.get(3..5) {
            Some([a @ b'0'..=b'9', b @ b'0'..=b'9']) => (a - b'0') * 10 + (b - b'0'),
            _ => 0,
        };
        Some((role, index))
    }

    /// The `p11/tinfo` token-label file.
    pub fn is_token_info(&self) -> bool {
        self.raw_name.get(..6) == Some(b"tinfo\0".as_slice())
            && self.raw_directory.get(..4) == Some(b"p11\0".as_slice())
    }
}

fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// Parses the index: a count N, then N records of 21 bytes. Bytes after the last record are
/// ignored (the file may be larger than its records); fewer bytes than N records is damage.
pub fn parse_index(data: &[u8]) -> Result<Vec<IndexEntry>, Error> {
    let (&count, mut rest) = data
        .split_first()
        .ok_or(Error::Damaged("the index file is empty"))?;
    let mut entries = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (record, tail) = rest
            .split_at_checked(INDEX_RECORD_LEN)
            .ok_or(Error::Damaged("the index file is shorter than its count"))?;
        rest = tail;
        let field = |from: usize, to: usize| record.get(from..to).unwrap_or_default();
        let fid = <[u8; 2]>::try_from(field(0, 2)).map_err(|_| Error::Damaged("index record"))?;
        let size = <[u8; 2]>::try_from(field(2, 4)).map_err(|_| Error::Damaged("index record"))?;
        entries.push(IndexEntry {
            fid,
            size_hint: u16::from_be_bytes(size),
            raw_name: field(4, 12)
                .try_into()
                .map_err(|_| Error::Damaged("index record"))?,
            raw_directory: field(12, 21)
                .try_into()
                .map_err(|_| Error::Damaged("index record"))?,
        });
    }
    Ok(entries)
}

/// One container of the minidriver container map (CONTAINER_MAP_RECORD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Its position in the map: the `NN` of the certificate files that belong to it.
    pub index: u8,
    /// The container name (a GUID, UTF-16LE on the card).
    pub guid: String,
    /// Minidriver flags (01 valid, 02 default container).
    pub flags: u8,
    /// Signature key size in bits (0: none).
    pub signature_key_bits: u16,
    /// Key-exchange key size in bits (0: none).
    pub key_exchange_key_bits: u16,
}

/// Parses the container map as OpenSC ≥ 0.24 does: 86-byte records, in order, up to the first
/// record whose first byte is 0; a trailing partial record is ignored. Never fails: a map that
/// says nothing lists no containers.
pub fn parse_container_map(data: &[u8]) -> Vec<ContainerRecord> {
    let mut out = Vec::new();
    for (i, record) in data.chunks_exact(CONTAINER_RECORD_LEN).enumerate() {
        let Ok(index) = u8::try_from(i) else { break };
        if record.first().is_none_or(|&b| b == 0) {
            break;
        }
        let name = record.get(..80).unwrap_or_default();
        let units: Vec<u16> = name
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect();
        let le16 = |at: usize| {
            u16::from_le_bytes([
                record.get(at).copied().unwrap_or(0),
                record.get(at + 1).copied().unwrap_or(0),
            ])
        };
        out.push(ContainerRecord {
            index,
            guid: String::from_utf16_lossy(&units),
            flags: record.get(80).copied().unwrap_or(0),
            signature_key_bits: le16(82),
            key_exchange_key_bits: le16(84),
        });
    }
    out
}

/// One record of the 940's key-reference map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefRecord {
    /// The key reference for MSE SET.
    pub key_reference: u8,
    /// The container (certificate file `NN`) the key belongs to.
    pub container: u8,
    /// The PIN index: 1 is the user PIN (0x11), anything else the Digital Signature PIN
    /// (0x83), as OpenSC reads it.
    pub pin_index: u8,
}

/// Parses the key-reference map: 8-byte records, byte 0 ≠ 0 for a used record, byte 1 the
/// key reference, byte 2 the container, byte 7 the PIN index (OpenSC 0.26+).
pub fn parse_keyref_map(data: &[u8]) -> Vec<KeyRefRecord> {
    data.chunks_exact(KEYREF_RECORD_LEN)
        .filter_map(|r| match r {
            [used, key_reference, container, _, _, _, _, pin_index] if *used != 0 => {
                Some(KeyRefRecord {
                    key_reference: *key_reference,
                    container: *container,
                    pin_index: *pin_index,
                })
            }
            _ => None,
        })
        .collect()
}

/// Turns a certificate file into certificate DER. A file starting `01 00` is compressed: a
/// little-endian length, then a zlib (or gzip) stream that must inflate to exactly that
/// length — never more (a zip bomb stops at the header's length plus one byte). Any other
/// file is plain DER. Either way the result is the one DER element at the front; bytes after
/// it (padding) are dropped.
pub fn decode_certificate_file(raw: &[u8]) -> Result<Vec<u8>, Error> {
    let der = match raw {
        [0x01, 0x00, lo, hi, stream @ ..] => {
            let expected = usize::from(u16::from_le_bytes([*lo, *hi]));
            if expected == 0 {
                return Err(Error::Damaged("a compressed certificate of length 0"));
            }
            inflate_bounded(stream, expected)?
        }
        [0x01, 0x00, ..] => {
            return Err(Error::Damaged(
                "a compressed certificate without its header",
            ))
        }
        plain => plain.to_vec(),
    };
    let len =
        der_element_len(&der).ok_or(Error::Damaged("a certificate file does not hold DER"))?;
    Ok(der.get(..len).unwrap_or_default().to_vec())
}

/// Inflates `stream` (zlib, or gzip when it starts 1F 8B, as OpenSC's automatic detection)
/// to exactly `expected` bytes.
fn inflate_bounded(stream: &[u8], expected: usize) -> Result<Vec<u8>, Error> {
    let limit = expected as u64 + 1;
    let mut out = Vec::with_capacity(expected);
    let read = if stream.starts_with(&[0x1F, 0x8B]) {
        flate2::read::GzDecoder::new(stream)
            .take(limit)
            .read_to_end(&mut out)
    } else {
        flate2::read::ZlibDecoder::new(stream)
            .take(limit)
            .read_to_end(&mut out)
    };
    read.map_err(|_| Error::Damaged("a compressed certificate does not inflate"))?;
    if out.len() > expected {
        return Err(Error::Damaged(
            "a compressed certificate inflates past its stated length",
        ));
    }
    if out.len() != expected {
        return Err(Error::Damaged(
            "a compressed certificate inflates short of its stated length",
        ));
    }
    Ok(out)
}

/// Length of the DER element (tag, length, value) at the front of `data`, when it is a
/// SEQUENCE with a definite length that fits in `data`.
fn der_element_len(data: &[u8]) -> Option<usize> {
    let (&tag, rest) = data.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, value) = tlv::take_len(rest).ok()?;
    let header = data.len() - value.len();
    (len <= value.len()).then_some(header + len)
}

/// The card id (file 0201): OpenSC's serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardId(pub [u8; CARD_ID_LEN]);

impl CardId {
    /// The PKCS#15 serial: 32 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The PKCS#11 serialNumber OpenSC shows: the last 16 characters of the PKCS#15 serial, which
/// is the card id in hex or "00000000" when the card has none.
pub fn opensc_serial(card_id: Option<&CardId>) -> String {
    let full = card_id.map_or_else(|| "00000000".to_owned(), CardId::hex);
    let skip = full.len().saturating_sub(16);
    full.get(skip..).unwrap_or_default().to_owned()
}

/// SELECT 0201 (P1=08) and read the card id. `None` when the file is absent or not exactly
/// 16 bytes (OpenSC then uses "00000000").
pub fn read_card_id(ch: &mut dyn Channel, profile: &Profile) -> Result<Option<CardId>, Error> {
    let Some(fci) = select_file(ch, profile, CARD_ID_FID, SelectBy::Path)? else {
        return Ok(None);
    };
    if fci.size != CARD_ID_LEN {
        return Ok(None);
    }
    let data = read_binary(ch, profile, CARD_ID_LEN)?;
    Ok(<[u8; CARD_ID_LEN]>::try_from(data.as_slice())
        .ok()
        .map(CardId))
}

/// Parses the `p11/tinfo` file: byte 0 ignored, byte 1 the length L (at most the file size),
/// then L bytes whose last is forced to NUL; the label ends at the first NUL. `None` when the
/// file is too short or L is 0.
pub fn parse_token_info(data: &[u8]) -> Option<String> {
    let [_, len, name @ ..] = data else {
        return None;
    };
    let len = usize::from(*len);
    if len == 0 || len > data.len() {
        return None;
    }
    let name = name.get(..len.min(name.len()))?;
    let name = name.get(..name.len().checked_sub(1)?)?;
    Some(nul_terminated(name))
}

/// SELECT the token-info file (P1=08) and read the label; `None` when it is absent, empty, or
/// the card refuses to read it (OpenSC then takes the first certificate's CN).
pub fn read_token_info(
    ch: &mut dyn Channel,
    profile: &Profile,
    fid: [u8; 2],
) -> Result<Option<String>, Error> {
    let Some(fci) = select_file(ch, profile, fid, SelectBy::Path)? else {
        return Ok(None);
    };
    if fci.size == 0 {
        return Ok(None);
    }
    match read_binary(ch, profile, fci.size) {
        Ok(data) => Ok(parse_token_info(&data)),
        Err(e) if is_card_failure(&e) => Err(e),
        Err(e) => {
            log::debug!("token info {}: {e}: no label from it", hex::encode(fid));
            Ok(None)
        }
    }
}

/// True for failures of the card or the reader (removed, reset, reader error, an answer
/// outside the protocol), as opposed to the card refusing or the data being damaged.
pub(crate) fn is_card_failure(e: &Error) -> bool {
    matches!(e, Error::Card(c) if !matches!(c, crate::card::CardError::Status(_)))
}

/// SELECT and read the container map 0204 (P1=08); `None` when the card has none or refuses
/// to read it (eTokens answer 6982, OpenSC issues #3478/#3590).
pub fn read_container_map(
    ch: &mut dyn Channel,
    profile: &Profile,
) -> Result<Option<Vec<ContainerRecord>>, Error> {
    optional_file(ch, profile, CONTAINER_MAP_FID).map(|d| d.map(|d| parse_container_map(&d)))
}

/// SELECT and read the 940's key-reference map 0005 (P1=08); `None` when absent or refused.
pub fn read_keyref_map(
    ch: &mut dyn Channel,
    profile: &Profile,
) -> Result<Option<Vec<KeyRefRecord>>, Error> {
    optional_file(ch, profile, KEYREF_MAP_FID).map(|d| d.map(|d| parse_keyref_map(&d)))
}

/// A file whose absence or refusal means "not known": only card I/O failures are errors.
fn optional_file(
    ch: &mut dyn Channel,
    profile: &Profile,
    fid: [u8; 2],
) -> Result<Option<Vec<u8>>, Error> {
    match read_file(ch, profile, fid, SelectBy::Path) {
        Ok(d) => Ok(d),
        Err(e) if is_card_failure(&e) => Err(e),
        Err(e) => {
            log::debug!("file {}: {e}: treated as absent", hex::encode(fid));
            Ok(None)
        }
    }
}

/// The minidriver cache file (`cardcf`, CARD_CACHE_FILE_FORMAT): counters a minidriver bumps
/// when PINs, containers or files change — what a host cache can key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheFreshness {
    /// bVersion.
    pub version: u8,
    /// bPinsFreshness.
    pub pins: u8,
    /// wContainersFreshness.
    pub containers: u16,
    /// wFilesFreshness.
    pub files: u16,
}

/// Parses `cardcf`: version, PIN freshness, then two little-endian counters (6 bytes; more is
/// allowed). `None` when shorter.
pub fn parse_cache_file(data: &[u8]) -> Option<CacheFreshness> {
    let [version, pins, c0, c1, f0, f1, ..] = data else {
        return None;
    };
    Some(CacheFreshness {
        version: *version,
        pins: *pins,
        containers: u16::from_le_bytes([*c0, *c1]),
        files: u16::from_le_bytes([*f0, *f1]),
    })
}

/// SELECT and read `cardcf` (0202, P1=08); `None` when absent, refused or too short.
pub fn read_cache_freshness(
    ch: &mut dyn Channel,
    profile: &Profile,
) -> Result<Option<CacheFreshness>, Error> {
    Ok(optional_file(ch, profile, CARD_CACHE_FID)?.and_then(|d| parse_cache_file(&d)))
}
