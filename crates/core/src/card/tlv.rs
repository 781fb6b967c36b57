//! BER-TLV as PIV uses it (SP 800-73-4 part 2, ISO 7816-4 annex D): one- to three-byte tags,
//! definite lengths up to four length bytes. Parsing returns the rest instead of indexing,
//! never panics on input, and building never needs a length computed by hand.

/// A tag as its raw bytes packed big-endian into a u32 (0x5FC105, 0x7F49, 0x53, …).
pub type Tag = u32;

/// Error from the TLV reader: what was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    /// The input ended inside a tag, a length or a value.
    #[error("TLV truncated")]
    Truncated,
    /// Indefinite length, a length over four bytes, or a tag over three bytes.
    #[error("TLV encoding not supported")]
    Unsupported,
    /// Bytes left after the last element where none were allowed.
    #[error("trailing bytes after TLV")]
    Trailing,
    /// A required tag was absent.
    #[error("TLV tag {0:X} missing")]
    Missing(Tag),
}

/// Reads one tag from the front of `data`; returns it and the rest.
pub fn take_tag(data: &[u8]) -> Result<(Tag, &[u8]), TlvError> {
    let (&first, mut rest) = data.split_first().ok_or(TlvError::Truncated)?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        let mut n = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or(TlvError::Truncated)?;
            rest = r;
            tag = (tag << 8) | u32::from(b);
            n += 1;
            if n > 2 {
                return Err(TlvError::Unsupported);
            }
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    Ok((tag, rest))
}

/// Reads one length from the front of `data`; returns it and the rest.
pub fn take_len(data: &[u8]) -> Result<(usize, &[u8]), TlvError> {
    let (&first, rest) = data.split_first().ok_or(TlvError::Truncated)?;
    if first < 0x80 {
        return Ok((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 4 {
        return Err(TlvError::Unsupported);
    }
    let bytes = rest.get(..n).ok_or(TlvError::Truncated)?;
    let len = bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Ok((len, rest.get(n..).unwrap_or_default()))
}

/// Reads one data object: `(tag, value, rest)`.
pub fn take_do(data: &[u8]) -> Result<(Tag, &[u8], &[u8]), TlvError> {
    let (tag, rest) = take_tag(data)?;
    let (len, rest) = take_len(rest)?;
    if rest.len() < len {
        return Err(TlvError::Truncated);
    }
    let (value, rest) = rest.split_at(len);
    Ok((tag, value, rest))
}

/// Reads exactly one data object with the given tag and nothing after it.
pub fn expect_only(data: &[u8], want: Tag) -> Result<&[u8], TlvError> {
    let (tag, value, rest) = take_do(data)?;
    if tag != want {
        return Err(TlvError::Missing(want));
    }
    if !rest.is_empty() {
        return Err(TlvError::Trailing);
    }
    Ok(value)
}

/// Iterator over consecutive data objects; stops (yielding the error once) on malformed input.
pub struct Objects<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Objects<'a> {
    type Item = Result<(Tag, &'a [u8]), TlvError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match take_do(self.rest) {
            Ok((tag, value, rest)) => {
                self.rest = rest;
                Some(Ok((tag, value)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Iterates over the data objects in `data`.
pub fn objects(data: &[u8]) -> Objects<'_> {
    Objects {
        rest: data,
        failed: false,
    }
}

/// Finds the first object with `tag` at this level (not recursive).
pub fn find(data: &[u8], tag: Tag) -> Result<Option<&[u8]>, TlvError> {
    for item in objects(data) {
        let (t, v) = item?;
        if t == tag {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Appends the encoding of `tag` to `out`.
pub fn push_tag(out: &mut Vec<u8>, tag: Tag) {
    let bytes = tag.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    out.extend_from_slice(bytes.get(skip..).unwrap_or(&[0]));
}

/// Appends the definite-length encoding of `len` to `out`.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.extend_from_slice(&[0x81, len as u8]);
    } else if len <= 0xFFFF {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    }
}

/// Appends one complete data object.
pub fn push_do(out: &mut Vec<u8>, tag: Tag, value: &[u8]) {
    push_tag(out, tag);
    push_len(out, value.len());
    out.extend_from_slice(value);
}

/// Encodes one data object into a new buffer.
pub fn encode(tag: Tag, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 8);
    push_do(&mut out, tag, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multibyte_tag_and_long_length() {
        let mut value = vec![0xAB; 300];
        let enc = encode(0x5FC105, &value);
        assert_eq!(&enc[..6], &[0x5F, 0xC1, 0x05, 0x82, 0x01, 0x2C]);
        let (tag, v, rest) = take_do(&enc).unwrap();
        assert_eq!(tag, 0x5FC105);
        assert_eq!(v, &value[..]);
        assert!(rest.is_empty());
        value.truncate(0);
        assert_eq!(encode(0x53, &value), vec![0x53, 0x00]);
        assert_eq!(encode(0x7F49, &[1]), vec![0x7F, 0x49, 0x01, 0x01]);
    }

    #[test]
    fn rejects_truncated_and_odd_encodings() {
        assert_eq!(take_do(&[]), Err(TlvError::Truncated));
        assert_eq!(take_do(&[0x53]), Err(TlvError::Truncated));
        assert_eq!(take_do(&[0x53, 0x82, 0x01]), Err(TlvError::Truncated));
        assert_eq!(take_do(&[0x53, 0x02, 0x01]), Err(TlvError::Truncated));
        assert_eq!(take_do(&[0x53, 0x80]), Err(TlvError::Unsupported));
        assert_eq!(
            take_do(&[0x5F, 0xFF, 0xFF, 0xFF]),
            Err(TlvError::Unsupported)
        );
        assert_eq!(
            expect_only(&[0x53, 0x00, 0x00], 0x53),
            Err(TlvError::Trailing)
        );
        assert_eq!(
            expect_only(&[0x54, 0x00], 0x53),
            Err(TlvError::Missing(0x53))
        );
    }

    #[test]
    fn iterates_and_finds() {
        let mut buf = Vec::new();
        push_do(&mut buf, 0x80, &[1, 2]);
        push_do(&mut buf, 0x81, &[3]);
        assert_eq!(find(&buf, 0x81).unwrap(), Some(&[3u8][..]));
        assert_eq!(find(&buf, 0x82).unwrap(), None);
        let all: Vec<_> = objects(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 2);
        buf.push(0x99);
        assert!(objects(&buf).any(|r| r.is_err()));
    }
}
