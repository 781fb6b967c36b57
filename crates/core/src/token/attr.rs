//! Attribute values in their C byte representation, and reading them back from templates.

use super::{Attr, Error, Result};
use cryptoki_sys::*;

/// A CK_ULONG value's bytes.
pub fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// A CK_BBOOL value's bytes.
pub fn bool(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

/// Reads a CK_ULONG from a template value (CKR_ATTRIBUTE_VALUE_INVALID when the length is off).
pub fn read_ulong(value: &[u8]) -> Result<CK_ULONG> {
    let bytes: [u8; std::mem::size_of::<CK_ULONG>()] = value
        .try_into()
        .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
    Ok(CK_ULONG::from_ne_bytes(bytes))
}

/// Reads a CK_BBOOL from a template value.
pub fn read_bool(value: &[u8]) -> Result<bool> {
    match value {
        [b] => Ok(*b != CK_FALSE),
        _ => Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
    }
}

/// The value of `ty` in `template`, if present.
pub fn find(template: &[Attr], ty: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    template
        .iter()
        .find(|a| a.ty == ty)
        .map(|a| a.value.as_slice())
}

/// The CK_ULONG value of `ty` in `template`, if present.
pub fn find_ulong(template: &[Attr], ty: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
    find(template, ty).map(read_ulong).transpose()
}

/// The CK_BBOOL value of `ty` in `template`, if present.
pub fn find_bool(template: &[Attr], ty: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
    find(template, ty).map(read_bool).transpose()
}

/// Fills a fixed-width, blank-padded PKCS#11 text field.
pub fn padded<const N: usize>(text: &str) -> [CK_UTF8CHAR; N] {
    let mut out = [b' '; N];
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let (Some(dst), Some(src)) = (out.get_mut(..end), text.as_bytes().get(..end)) {
        dst.copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        assert_eq!(read_ulong(&ulong(42)).unwrap(), 42);
        assert!(read_ulong(&[1, 2]).is_err());
        assert!(read_bool(&bool(true)).unwrap());
        assert!(read_bool(&[]).is_err());
        assert_eq!(&padded::<8>("PIV"), b"PIV     ");
        assert_eq!(&padded::<4>("Tessera"), b"Tess");
        assert_eq!(&padded::<2>("aé"), b"a ");
    }
}
