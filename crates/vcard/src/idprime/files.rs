//! The IDPrime file system as an issuer's personalisation leaves it: the Windows-minidriver
//! files (`cardid`, `cardcf`, `cardapps`, `mscp/cmapfile`, `mscp/kxcNN` certificates) under
//! two-byte file identifiers, the index file 0101 that lists them in 21-byte records, the
//! `p11/tinfo` token label, and on the 940 the key-reference map 0005. This module builds and
//! parses those byte layouts (and the minidriver certificate compression); it knows nothing
//! of APDUs, PINs or keys. Layouts: IDPRIME-NOTES.md §2.

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::{Read, Write};

/// The index file: a count byte, then one 21-byte record per file.
pub const FID_INDEX: u16 = 0x0101;
/// The 940's key-reference map.
pub const FID_KEY_REFERENCE_MAP: u16 = 0x0005;
/// `cardid`: 16 bytes identifying the card (OpenSC's serial number; it reads this FID
/// whatever the index says).
pub const FID_CARDID: u16 = 0x0201;
/// `cardcf`: the minidriver cache freshness counters.
pub const FID_CARDCF: u16 = 0x0202;
/// `cardapps`: the minidriver application list.
pub const FID_CARDAPPS: u16 = 0x0203;
/// `mscp/cmapfile`: the container map (OpenSC 0.24+ requires it).
pub const FID_CMAPFILE: u16 = 0x0204;
/// `p11/tinfo`: the PKCS#11 token label.
pub const FID_TINFO: u16 = 0x0205;
/// `mscp/kxc00`; container n's certificate is at `FID_FIRST_CERTIFICATE + n`.
pub const FID_FIRST_CERTIFICATE: u16 = 0x0206;

/// Length of one index record.
pub const INDEX_RECORD_LEN: usize = 21;
/// Length of one container-map record (minidriver CONTAINER_MAP_RECORD).
pub const CONTAINER_RECORD_LEN: usize = 86;
/// Length of one key-reference map record.
pub const KEY_REFERENCE_RECORD_LEN: usize = 8;
/// Length of `cardid`.
pub const CARDID_LEN: usize = 16;
/// CONTAINER_MAP_RECORD bFlags: the container holds a key.
pub const CONTAINER_VALID: u8 = 0x01;
/// CONTAINER_MAP_RECORD bFlags: the default container.
pub const CONTAINER_DEFAULT: u8 = 0x02;
/// Longest token label kept in `tinfo` (PKCS#11 labels are 32 bytes; one more for the NUL).
pub const TINFO_LABEL_MAX: usize = 32;
/// Largest certificate a file takes (an index record's size field is 16 bits).
pub const MAX_FILE: usize = 0xFFFF;

/// Why a file could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The content does not fit the file's layout (too long, too many records).
    #[error("{0}")]
    TooLarge(&'static str),
    /// Stored bytes do not have the layout they should.
    #[error("damaged file: {0}")]
    Damaged(&'static str),
}

/// One record of the index file 0101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Where the file lives.
    pub fid: u16,
    /// The file's size in bytes.
    pub size: u16,
    /// Its minidriver name (`kxc00`, `cmapfile`, …), at most 8 bytes.
    pub name: String,
    /// Its minidriver directory (`mscp`, `p11`, or empty for the root), at most 8 bytes: the
    /// ninth byte of the 9-byte field always stays NUL.
    pub directory: String,
}

/// Copies `text` into a NUL-padded field of `len` bytes, keeping at least one NUL.
fn padded_name(text: &str, len: usize) -> Result<Vec<u8>, FileError> {
    if text.len() >= len {
        return Err(FileError::TooLarge("index name too long"));
    }
    let mut out = text.as_bytes().to_vec();
    out.resize(len, 0);
    Ok(out)
}

/// The index file: count byte and 21-byte records (FID, size big-endian, 8-byte name,
/// 9-byte directory).
pub fn index(entries: &[IndexEntry]) -> Result<Vec<u8>, FileError> {
    let count = u8::try_from(entries.len()).map_err(|_| FileError::TooLarge("index entries"))?;
    let mut out = vec![count];
    for e in entries {
        out.extend_from_slice(&e.fid.to_be_bytes());
        out.extend_from_slice(&e.size.to_be_bytes());
        out.extend_from_slice(padded_name(&e.name, 9)?.get(..8).unwrap_or_default());
        out.extend_from_slice(&padded_name(&e.directory, 9)?);
    }
    Ok(out)
}

/// NUL-terminated ASCII of a fixed field.
fn field_text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
}

/// Parses an index file (the inverse of [`index`]).
pub fn parse_index(bytes: &[u8]) -> Result<Vec<IndexEntry>, FileError> {
    let (&count, records) = bytes
        .split_first()
        .ok_or(FileError::Damaged("empty index"))?;
    let mut out = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        let r = records
            .get(i * INDEX_RECORD_LEN..(i + 1) * INDEX_RECORD_LEN)
            .ok_or(FileError::Damaged("index shorter than its count"))?;
        let word = |at: usize| {
            r.get(at..at + 2)
                .and_then(|w| <[u8; 2]>::try_from(w).ok())
                .map_or(0, u16::from_be_bytes)
        };
        out.push(IndexEntry {
            fid: word(0),
            size: word(2),
            name: field_text(r.get(4..12).unwrap_or_default()),
            directory: field_text(r.get(12..21).unwrap_or_default()),
        });
    }
    Ok(out)
}

/// One container of the container map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container name (a GUID in braces, at most 39 characters).
    pub name: String,
    /// bFlags: [`CONTAINER_VALID`], [`CONTAINER_DEFAULT`].
    pub flags: u8,
    /// Size in bits of the signature key (AT_SIGNATURE), 0 when none.
    pub signature_key_bits: u16,
    /// Size in bits of the key-exchange key (AT_KEYEXCHANGE), 0 when none.
    pub key_exchange_key_bits: u16,
}

/// The container map: one 86-byte CONTAINER_MAP_RECORD per container (name as 40 UTF-16LE
/// units, NUL-padded; bFlags; bReserved; wSigKeySizeBits and wKeyExchangeKeySizeBits
/// little-endian). A card without containers keeps one empty record: OpenSC 0.24+ refuses a
/// container map of size 0.
pub fn container_map(containers: &[Container]) -> Result<Vec<u8>, FileError> {
    let mut out = Vec::with_capacity(CONTAINER_RECORD_LEN * containers.len().max(1));
    for c in containers {
        if c.name.is_empty() || c.name.chars().count() > 39 || !c.name.is_ascii() {
            return Err(FileError::TooLarge("container name"));
        }
        let mut name: Vec<u8> = c.name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        name.resize(80, 0);
        out.extend_from_slice(&name);
        out.push(c.flags);
        out.push(0);
        out.extend_from_slice(&c.signature_key_bits.to_le_bytes());
        out.extend_from_slice(&c.key_exchange_key_bits.to_le_bytes());
    }
    if containers.is_empty() {
        out.resize(CONTAINER_RECORD_LEN, 0);
    }
    Ok(out)
}

/// Parses a container map up to its first empty record, as OpenSC 0.24+ does.
pub fn parse_container_map(bytes: &[u8]) -> Vec<Container> {
    let mut out = Vec::new();
    for r in bytes.chunks_exact(CONTAINER_RECORD_LEN) {
        if r.first() == Some(&0) {
            break;
        }
        let units: Vec<u16> = r
            .get(..80)
            .unwrap_or_default()
            .chunks_exact(2)
            .filter_map(|u| <[u8; 2]>::try_from(u).ok())
            .map(u16::from_le_bytes)
            .take_while(|&u| u != 0)
            .collect();
        let word = |at: usize| {
            r.get(at..at + 2)
                .and_then(|w| <[u8; 2]>::try_from(w).ok())
                .map_or(0, u16::from_le_bytes)
        };
        out.push(Container {
            name: String::from_utf16_lossy(&units),
            flags: r.get(80).copied().unwrap_or(0),
            signature_key_bits: word(82),
            key_exchange_key_bits: word(84),
        });
    }
    out
}

/// One record of the 940's key-reference map 0005: which key reference holds the key of a
/// certificate index, and which PIN guards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReferenceRecord {
    /// PIN index: 1 = user PIN (0x11), 2 = Digital Signature PIN (0x83). Never 0 (an empty
    /// record).
    pub pin_index: u8,
    /// The key reference of MSE SET.
    pub key_reference: u8,
    /// The certificate (container) index n of `kxcNN`.
    pub certificate_index: u8,
}

/// The key-reference map: 8-byte records (byte 0 the PIN index, byte 1 the key reference,
/// byte 2 the certificate index, byte 7 the PIN index again, the rest zero).
pub fn key_reference_map(records: &[KeyReferenceRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_REFERENCE_RECORD_LEN * records.len().max(1));
    for r in records {
        out.extend_from_slice(&[
            r.pin_index,
            r.key_reference,
            r.certificate_index,
            0,
            0,
            0,
            0,
            r.pin_index,
        ]);
    }
    if records.is_empty() {
        out.resize(KEY_REFERENCE_RECORD_LEN, 0);
    }
    out
}

/// Parses a key-reference map, skipping empty records.
pub fn parse_key_reference_map(bytes: &[u8]) -> Vec<KeyReferenceRecord> {
    bytes
        .chunks_exact(KEY_REFERENCE_RECORD_LEN)
        .filter_map(|r| match *r {
            [pin_index, key_reference, certificate_index, ..] if pin_index != 0 => {
                Some(KeyReferenceRecord {
                    pin_index,
                    key_reference,
                    certificate_index,
                })
            }
            _ => None,
        })
        .collect()
}

/// A certificate in the minidriver's compressed form: `01 00`, the uncompressed length as two
/// bytes little-endian, then a zlib stream of the DER.
pub fn compress_certificate(der: &[u8]) -> Result<Vec<u8>, FileError> {
    let len = u16::try_from(der.len()).map_err(|_| FileError::TooLarge("certificate"))?;
    let mut out = vec![0x01, 0x00];
    out.extend_from_slice(&len.to_le_bytes());
    let mut z = ZlibEncoder::new(out, Compression::best());
    z.write_all(der)
        .map_err(|_| FileError::TooLarge("certificate"))?;
    let out = z.finish().map_err(|_| FileError::TooLarge("certificate"))?;
    if out.len() > MAX_FILE {
        return Err(FileError::TooLarge("compressed certificate"));
    }
    Ok(out)
}

/// Whether a certificate file is in the compressed form (starts `01 00`).
pub fn is_compressed(file: &[u8]) -> bool {
    file.starts_with(&[0x01, 0x00])
}

/// The DER certificate of a certificate file, compressed or plain. A compressed one must
/// inflate to exactly the length its header states.
pub fn certificate_der(file: &[u8]) -> Result<Vec<u8>, FileError> {
    if !is_compressed(file) {
        return Ok(file.to_vec());
    }
    let (header, stream) = file
        .split_first_chunk::<4>()
        .ok_or(FileError::Damaged("compressed certificate without header"))?;
    let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
    let mut der = Vec::with_capacity(len);
    ZlibDecoder::new(stream)
        .take(len as u64 + 1)
        .read_to_end(&mut der)
        .map_err(|_| FileError::Damaged("certificate does not inflate"))?;
    if der.len() != len {
        return Err(FileError::Damaged(
            "certificate length differs from its header",
        ));
    }
    Ok(der)
}

/// `cardcf`: bVersion, bPinsFreshness, wContainersFreshness, wFilesFreshness (all zero on a
/// freshly personalised card).
pub fn cardcf() -> Vec<u8> {
    vec![0; 6]
}

/// `cardapps`: the application names, 8 bytes each; the card has the one minidriver
/// application `mscp`.
pub fn cardapps() -> Vec<u8> {
    b"mscp\0\0\0\0".to_vec()
}

/// `p11/tinfo`: `01`, a length L, then L bytes of label ending in NUL (OpenSC forces the last
/// byte to NUL). The label is cut to [`TINFO_LABEL_MAX`] bytes at a character boundary.
pub fn tinfo(label: &str) -> Vec<u8> {
    let mut end = label.len().min(TINFO_LABEL_MAX);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    let text = label.get(..end).unwrap_or_default().as_bytes();
    let mut out = vec![0x01, (text.len() + 1) as u8];
    out.extend_from_slice(text);
    out.push(0);
    out
}

/// The label in a `tinfo` file.
pub fn parse_tinfo(bytes: &[u8]) -> Option<String> {
    let len = usize::from(*bytes.get(1)?);
    Some(field_text(bytes.get(2..2 + len)?))
}

/// The minidriver file name of container n's key-exchange certificate (`kxc00` …).
pub fn certificate_name(n: u8) -> String {
    format!("kxc{n:02}")
}

/// The FCI a SELECT with P2=00 answers: `62 L { 80 02 size, 82 01 01 (transparent EF),
/// 83 02 fid }`; a DF (`82 01 38`) for the master file and the applet.
pub fn fci(fid: u16, size: usize, is_df: bool) -> Vec<u8> {
    let size = u16::try_from(size).unwrap_or(u16::MAX).to_be_bytes();
    let fid = fid.to_be_bytes();
    let descriptor = if is_df { 0x38 } else { 0x01 };
    vec![
        0x62, 0x0B, 0x80, 0x02, size[0], size[1], 0x82, 0x01, descriptor, 0x83, 0x02, fid[0],
        fid[1],
    ]
}
