//! The one place where caller pointers become Rust values: slices, templates, mechanisms, and
//! writes back into caller memory. Everything here checks NULL and lengths before it makes a
//! slice, and reads caller structs with `read_unaligned` from checked bytes. Nothing outside
//! this file dereferences a pointer the application gave us.

use crate::token::{Attr, Error, MechParam, Mechanism, OutBuf, Result};
use cryptoki_sys::*;
use std::mem::size_of;
use std::ptr;
use zeroize::Zeroizing;

/// A caller's CK_ULONG as a Rust length (CKR_ARGUMENTS_BAD when it does not fit).
pub fn to_usize(n: CK_ULONG) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::new(CKR_ARGUMENTS_BAD))
}

/// A Rust length as a CK_ULONG (CKR_GENERAL_ERROR when it does not fit: our bug, not theirs).
pub fn to_ulong(n: usize) -> Result<CK_ULONG> {
    CK_ULONG::try_from(n).map_err(|_| Error::new(CKR_GENERAL_ERROR))
}

/// The number of elements `len` as a length no slice may exceed (`isize::MAX` bytes).
fn checked_len<T>(len: CK_ULONG) -> Result<usize> {
    let len = to_usize(len)?;
    let bytes = len
        .checked_mul(size_of::<T>().max(1))
        .ok_or(Error::new(CKR_ARGUMENTS_BAD))?;
    if bytes > isize::MAX as usize {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    Ok(len)
}

/// The caller's array `(ptr, len)` as a slice: NULL with length 0 is the empty slice, NULL with
/// a length is CKR_ARGUMENTS_BAD.
///
/// # Safety
/// When `ptr` is not NULL it must point to `len` initialised, properly aligned `T`s that stay
/// valid and unmodified for `'a` (the PKCS#11 contract for an input array).
pub unsafe fn slice<'a, T>(ptr: *const T, len: CK_ULONG) -> Result<&'a [T]> {
    let len = checked_len::<T>(len)?;
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Error::new(CKR_ARGUMENTS_BAD))
        };
    }
    // SAFETY: `ptr` is not NULL, `len * size_of::<T>()` fits in isize (checked above), and the
    // caller guarantees `len` valid elements for `'a`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The caller's output array `(ptr, len)` as a mutable slice, with the rules of [`slice`].
///
/// # Safety
/// When `ptr` is not NULL it must point to `len` writable, properly aligned `T`s that nothing
/// else reads or writes for `'a`.
pub unsafe fn slice_mut<'a, T>(ptr: *mut T, len: CK_ULONG) -> Result<&'a mut [T]> {
    let len = checked_len::<T>(len)?;
    if ptr.is_null() {
        return if len == 0 {
            Ok(&mut [])
        } else {
            Err(Error::new(CKR_ARGUMENTS_BAD))
        };
    }
    // SAFETY: `ptr` is not NULL, the size fits in isize (checked above), and the caller
    // guarantees `len` writable elements, unaliased for `'a`.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A copy of the caller's bytes, zeroized when dropped. Used where input and output buffers
/// may legally be the same memory (C_Encrypt, C_Decrypt), so that no `&[u8]` aliases the
/// `&mut [u8]` we hand to the core.
///
/// # Safety
/// As for [`slice`].
pub unsafe fn bytes_owned(ptr: *const u8, len: CK_ULONG) -> Result<Zeroizing<Vec<u8>>> {
    // SAFETY: forwarded contract of this function.
    let data = unsafe { slice(ptr, len) }?;
    Ok(Zeroizing::new(data.to_vec()))
}

/// Reads one struct from a caller pointer (CKR_ARGUMENTS_BAD when NULL). The read is unaligned
/// so that a misaligned caller struct is not undefined behaviour.
///
/// # Safety
/// When not NULL, `ptr` must point to `size_of::<T>()` readable bytes holding a valid `T`.
pub unsafe fn read<T: Copy>(ptr: *const T) -> Result<T> {
    if ptr.is_null() {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: not NULL; the caller guarantees a readable, valid `T` there (any alignment).
    Ok(unsafe { ptr::read_unaligned(ptr) })
}

/// Writes one value through a caller's out-pointer (CKR_ARGUMENTS_BAD when NULL).
///
/// # Safety
/// When not NULL, `ptr` must point to `size_of::<T>()` writable bytes.
pub unsafe fn write<T>(ptr: *mut T, value: T) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: not NULL; the caller guarantees it is writable for a `T` (any alignment).
    unsafe { ptr::write_unaligned(ptr, value) };
    Ok(())
}

/// Fails with CKR_ARGUMENTS_BAD unless `ptr` is NULL (pReserved parameters).
pub fn require_null<T>(ptr: *const T) -> Result<()> {
    if ptr.is_null() {
        Ok(())
    } else {
        Err(Error::new(CKR_ARGUMENTS_BAD))
    }
}

/// A caller's NUL-terminated string, or `None` for NULL.
///
/// # Safety
/// When not NULL, `ptr` must point to a NUL-terminated string that stays valid for `'a`.
pub unsafe fn c_str<'a>(ptr: *const CK_UTF8CHAR) -> Option<&'a std::ffi::CStr> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: not NULL; the caller guarantees a NUL-terminated string valid for 'a.
    Some(unsafe { std::ffi::CStr::from_ptr(ptr.cast()) })
}

/// Reads a caller's template into owned attributes; values are copied into zeroizing buffers
/// (they may be key material). A NULL template with count 0 is empty; an attribute with NULL
/// pValue and a non-zero length is CKR_ARGUMENTS_BAD.
///
/// # Safety
/// When not NULL, `template` must point to `count` CK_ATTRIBUTEs whose non-NULL `pValue`s point
/// to `ulValueLen` readable bytes.
pub unsafe fn read_template(template: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Vec<Attr>> {
    // SAFETY: forwarded contract: `count` attributes at `template` when not NULL.
    let attrs = unsafe { slice(template, count) }?;
    attrs
        .iter()
        .map(|a| {
            // SAFETY: forwarded contract: a non-NULL pValue points to ulValueLen bytes.
            let value = unsafe { slice(a.pValue.cast::<u8>().cast_const(), a.ulValueLen) }?;
            Ok(Attr {
                ty: a.type_,
                value: Zeroizing::new(value.to_vec()),
            })
        })
        .collect()
}

/// The attribute types of a caller's template, in order (C_GetAttributeValue).
///
/// # Safety
/// As for [`read_template`], without reading any value.
pub unsafe fn template_types(
    template: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<Vec<CK_ATTRIBUTE_TYPE>> {
    // SAFETY: forwarded contract.
    let attrs = unsafe { slice(template, count) }?;
    Ok(attrs.iter().map(|a| a.type_).collect())
}

/// Where one attribute of a C_GetAttributeValue template stands after answering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrWrite {
    /// Length written (value copied, or pValue was NULL: a length query).
    Done,
    /// pValue too small: length set to CK_UNAVAILABLE_INFORMATION.
    TooSmall,
}

/// Answers attribute `index` of a caller's template with `value`: a NULL pValue gets the
/// length only, a buffer that fits gets the value and its length, a short buffer gets
/// CK_UNAVAILABLE_INFORMATION. Written through raw pointers: no reference into the caller's
/// template is held while its value buffer is written.
///
/// # Safety
/// `template` must point to more than `index` CK_ATTRIBUTEs, writable; a non-NULL `pValue` of
/// that attribute must point to `ulValueLen` writable bytes.
pub unsafe fn answer_attribute(
    template: *mut CK_ATTRIBUTE,
    index: usize,
    value: &[u8],
) -> Result<AttrWrite> {
    let len = to_ulong(value.len())?;
    // SAFETY: the caller guarantees more than `index` attributes at `template`.
    let attr = unsafe { template.add(index) };
    // SAFETY: `attr` points to a readable CK_ATTRIBUTE (caller contract).
    let current = unsafe { read(attr) }?;
    // SAFETY: `attr` is valid; addr_of_mut! makes no reference to the (maybe unaligned) field.
    let len_field = unsafe { ptr::addr_of_mut!((*attr).ulValueLen) };
    if current.pValue.is_null() {
        // SAFETY: a field of a writable caller CK_ATTRIBUTE.
        unsafe { write(len_field, len) }?;
        return Ok(AttrWrite::Done);
    }
    if current.ulValueLen < len {
        // SAFETY: as above.
        unsafe { write(len_field, CK_UNAVAILABLE_INFORMATION) }?;
        return Ok(AttrWrite::TooSmall);
    }
    // SAFETY: pValue is not NULL and points to ulValueLen >= value.len() writable bytes (caller
    // contract); `value` is our own memory, so the regions do not overlap.
    unsafe {
        ptr::copy_nonoverlapping(value.as_ptr(), current.pValue.cast::<u8>(), value.len());
    }
    // SAFETY: as above.
    unsafe { write(len_field, len) }?;
    Ok(AttrWrite::Done)
}

/// Marks attribute `index` of a caller's template unavailable (length CK_UNAVAILABLE_INFORMATION).
///
/// # Safety
/// `template` must point to more than `index` writable CK_ATTRIBUTEs.
pub unsafe fn mark_unavailable(template: *mut CK_ATTRIBUTE, index: usize) -> Result<()> {
    // SAFETY: the caller guarantees more than `index` attributes at `template`.
    let attr = unsafe { template.add(index) };
    // SAFETY: `attr` is valid and writable; no reference is made to the field.
    unsafe {
        write(
            ptr::addr_of_mut!((*attr).ulValueLen),
            CK_UNAVAILABLE_INFORMATION,
        )
    }
}

/// Answers the (pBuf, pulLen) output convention: a NULL `buf` asks for the length only
/// ([`OutBuf::Query`]); otherwise the buffer holds `*len` bytes. The length the operation
/// reports is written back on success, and the needed length on CKR_BUFFER_TOO_SMALL.
///
/// # Safety
/// `len` must be NULL or point to a writable CK_ULONG; when `buf` is not NULL it must point to
/// `*len` writable bytes that no input of `op` aliases.
pub unsafe fn out_buf(
    buf: *mut u8,
    len: *mut CK_ULONG,
    op: impl FnOnce(OutBuf<'_>) -> Result<usize>,
) -> Result<()> {
    // SAFETY: NULL is checked by `read`; otherwise a readable CK_ULONG (caller contract).
    let capacity = unsafe { read(len.cast_const()) }?;
    let out = if buf.is_null() {
        OutBuf::Query
    } else {
        // SAFETY: not NULL, `capacity` writable bytes, unaliased (caller contract).
        OutBuf::Into(unsafe { slice_mut(buf, capacity) }?)
    };
    match op(out) {
        Ok(n) => {
            // SAFETY: `len` was readable above and is writable (caller contract).
            unsafe { write(len, to_ulong(n)?) }
        }
        Err(e) => {
            if let (CKR_BUFFER_TOO_SMALL, Some(needed)) = (e.rv(), e.needed()) {
                // SAFETY: as above.
                unsafe { write(len, to_ulong(needed)?) }?;
            }
            Err(e)
        }
    }
}

/// Answers the (pList, pulCount) convention for arrays (C_GetSlotList, C_GetMechanismList):
/// NULL list → count only; a list shorter than `items` → CKR_BUFFER_TOO_SMALL with the count
/// written; else the items and their count.
///
/// # Safety
/// `count` must be NULL or point to a writable CK_ULONG; when `list` is not NULL it must point
/// to `*count` writable `T`s.
pub unsafe fn out_list<T: Copy>(list: *mut T, count: *mut CK_ULONG, items: &[T]) -> Result<()> {
    // SAFETY: NULL checked by `read`; else readable (caller contract).
    let capacity = unsafe { read(count.cast_const()) }?;
    let n = to_ulong(items.len())?;
    if list.is_null() {
        // SAFETY: `count` is writable (caller contract).
        return unsafe { write(count, n) };
    }
    if capacity < n {
        // SAFETY: as above.
        unsafe { write(count, n) }?;
        return Err(Error::buffer_too_small(items.len()));
    }
    // SAFETY: not NULL, `capacity` writable `T`s (caller contract).
    let dst = unsafe { slice_mut(list, capacity) }?;
    for (d, s) in dst.iter_mut().zip(items) {
        *d = *s;
    }
    // SAFETY: as above.
    unsafe { write(count, n) }
}

/// Reads exactly one `T` from a mechanism parameter's bytes (CKR_MECHANISM_PARAM_INVALID when
/// the length is not `size_of::<T>()`).
fn param_struct<T: Copy>(bytes: &[u8]) -> Result<T> {
    if bytes.len() != size_of::<T>() {
        return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
    }
    // SAFETY: `bytes` holds exactly size_of::<T>() initialised bytes; read_unaligned needs no
    // alignment; T is one of the plain C parameter structs (integers and raw pointers), for
    // which every bit pattern is valid.
    Ok(unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A byte array inside a mechanism parameter, copied (CKR_MECHANISM_PARAM_INVALID when NULL
/// with a length).
///
/// # Safety
/// As for [`slice`].
unsafe fn param_bytes(ptr: *const u8, len: CK_ULONG) -> Result<Vec<u8>> {
    // SAFETY: forwarded contract.
    unsafe { slice(ptr, len) }
        .map(<[u8]>::to_vec)
        .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID))
}

fn is_pss(ty: CK_MECHANISM_TYPE) -> bool {
    matches!(
        ty,
        CKM_RSA_PKCS_PSS
            | CKM_SHA1_RSA_PKCS_PSS
            | CKM_SHA224_RSA_PKCS_PSS
            | CKM_SHA256_RSA_PKCS_PSS
            | CKM_SHA384_RSA_PKCS_PSS
            | CKM_SHA512_RSA_PKCS_PSS
            | CKM_SHA3_224_RSA_PKCS_PSS
            | CKM_SHA3_256_RSA_PKCS_PSS
            | CKM_SHA3_384_RSA_PKCS_PSS
            | CKM_SHA3_512_RSA_PKCS_PSS
    )
}

/// Decodes a caller's CK_MECHANISM, with the parameter structs Tessera's mechanisms take
/// (PSS, OAEP, ECDH1) checked for exact length. Mechanisms without a parameter get
/// [`MechParam::None`]; any other parameter is passed on as bytes for the core to judge.
///
/// # Safety
/// When not NULL, `mech` must point to a CK_MECHANISM whose non-NULL pParameter points to
/// ulParameterLen readable bytes, and whose nested pointers (OAEP source data, ECDH shared and
/// public data) point to as many bytes as their lengths say.
pub unsafe fn decode_mechanism(mech: *const CK_MECHANISM) -> Result<Mechanism> {
    // SAFETY: NULL checked by `read`; else a readable CK_MECHANISM (caller contract).
    let m = unsafe { read(mech) }?;
    // SAFETY: the caller guarantees ulParameterLen bytes at a non-NULL pParameter.
    let bytes = unsafe { slice(m.pParameter.cast::<u8>().cast_const(), m.ulParameterLen) }
        .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID))?;
    let param = match m.mechanism {
        ty if is_pss(ty) => {
            let p: CK_RSA_PKCS_PSS_PARAMS = param_struct(bytes)?;
            MechParam::Pss {
                hash: p.hashAlg,
                mgf: p.mgf,
                salt_len: usize::try_from(p.sLen)
                    .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID))?,
            }
        }
        CKM_RSA_PKCS_OAEP => {
            let p: CK_RSA_PKCS_OAEP_PARAMS = param_struct(bytes)?;
            // Some applications leave `source` zero when they pass no label.
            let label_ok =
                p.source == CKZ_DATA_SPECIFIED || (p.source == 0 && p.ulSourceDataLen == 0);
            if !label_ok {
                return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
            }
            MechParam::Oaep {
                hash: p.hashAlg,
                mgf: p.mgf,
                // SAFETY: the caller guarantees ulSourceDataLen bytes at pSourceData.
                label: unsafe {
                    param_bytes(p.pSourceData.cast::<u8>().cast_const(), p.ulSourceDataLen)
                }?,
            }
        }
        CKM_ECDH1_DERIVE | CKM_ECDH1_COFACTOR_DERIVE => {
            let p: CK_ECDH1_DERIVE_PARAMS = param_struct(bytes)?;
            MechParam::Ecdh {
                kdf: p.kdf,
                // SAFETY: the caller guarantees ulSharedDataLen bytes at pSharedData.
                shared_data: unsafe { param_bytes(p.pSharedData.cast_const(), p.ulSharedDataLen) }?,
                // SAFETY: the caller guarantees ulPublicDataLen bytes at pPublicData.
                public_data: unsafe { param_bytes(p.pPublicData.cast_const(), p.ulPublicDataLen) }?,
            }
        }
        _ if bytes.is_empty() => MechParam::None,
        _ => MechParam::Other(bytes.to_vec()),
    };
    Ok(Mechanism {
        ty: m.mechanism,
        param,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::ffi::c_void;

    fn rv<T>(r: Result<T>) -> CK_RV {
        r.err().map_or(CKR_OK, |e| e.rv())
    }

    #[test]
    fn null_slices() {
        // SAFETY: NULL pointers; nothing is read.
        unsafe {
            assert!(slice::<u8>(ptr::null(), 0).unwrap().is_empty());
            assert_eq!(rv(slice::<u8>(ptr::null(), 1)), CKR_ARGUMENTS_BAD);
            assert!(slice_mut::<u8>(ptr::null_mut(), 0).unwrap().is_empty());
            assert_eq!(rv(slice_mut::<u8>(ptr::null_mut(), 3)), CKR_ARGUMENTS_BAD);
            assert_eq!(
                rv(slice::<u8>(ptr::null(), CK_UNAVAILABLE_INFORMATION)),
                CKR_ARGUMENTS_BAD
            );
        }
        let data = [1u8, 2, 3];
        // SAFETY: a huge length is refused before any slice is made.
        let huge = unsafe { slice(data.as_ptr(), CK_UNAVAILABLE_INFORMATION) };
        assert_eq!(rv(huge), CKR_ARGUMENTS_BAD);
        // SAFETY: `data` holds 3 bytes.
        assert_eq!(unsafe { slice(data.as_ptr(), 3) }.unwrap(), &data);
    }

    #[test]
    fn templates() {
        let mut class = CKO_CERTIFICATE.to_ne_bytes();
        let t = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: class.as_mut_ptr().cast::<c_void>(),
                ulValueLen: class.len() as CK_ULONG,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: ptr::null_mut(),
                ulValueLen: 0,
            },
        ];
        // SAFETY: `t` and its values are live locals.
        let attrs = unsafe { read_template(t.as_ptr(), 2) }.unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].value.as_slice(), &class);
        assert!(attrs[1].value.is_empty());
        let bad = [CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: ptr::null_mut(),
            ulValueLen: 4,
        }];
        // SAFETY: NULL value with a length is refused before reading.
        let r = unsafe { read_template(bad.as_ptr(), 1) };
        assert_eq!(rv(r), CKR_ARGUMENTS_BAD);
        // SAFETY: NULL template.
        let r = unsafe { read_template(ptr::null(), 1) };
        assert_eq!(rv(r), CKR_ARGUMENTS_BAD);
        // SAFETY: NULL template, count 0.
        assert!(unsafe { read_template(ptr::null(), 0) }.unwrap().is_empty());
    }

    #[test]
    fn answers_attributes() {
        let mut small = [0u8; 2];
        let mut big = [0u8; 8];
        let mut t = [
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: ptr::null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: small.as_mut_ptr().cast(),
                ulValueLen: 2,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: big.as_mut_ptr().cast(),
                ulValueLen: 8,
            },
        ];
        let p = t.as_mut_ptr();
        // SAFETY: `t` has 3 attributes with live buffers of the stated sizes.
        unsafe {
            assert_eq!(answer_attribute(p, 0, b"abcd").unwrap(), AttrWrite::Done);
            assert_eq!(
                answer_attribute(p, 1, b"abcd").unwrap(),
                AttrWrite::TooSmall
            );
            assert_eq!(answer_attribute(p, 2, b"abcd").unwrap(), AttrWrite::Done);
        }
        assert_eq!(t[0].ulValueLen, 4);
        assert_eq!(t[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(t[2].ulValueLen, 4);
        assert_eq!(&big[..4], b"abcd");
    }

    #[test]
    fn output_buffers() {
        let mut len: CK_ULONG = 0;
        // SAFETY: `len` is a live local; buffer NULL.
        let r = unsafe {
            out_buf(ptr::null_mut(), &mut len, |o| {
                assert!(matches!(o, OutBuf::Query));
                Ok(64)
            })
        };
        r.unwrap();
        assert_eq!(len, 64);
        let mut buf = [0u8; 4];
        len = 4;
        // SAFETY: `buf` has `len` bytes.
        let r = unsafe {
            out_buf(buf.as_mut_ptr(), &mut len, |_| {
                Err(Error::buffer_too_small(64))
            })
        };
        assert_eq!(rv(r), CKR_BUFFER_TOO_SMALL);
        assert_eq!(len, 64);
        len = 4;
        // SAFETY: as above.
        let r = unsafe {
            out_buf(buf.as_mut_ptr(), &mut len, |o| match o {
                OutBuf::Into(b) => {
                    b[..2].copy_from_slice(b"ok");
                    Ok(2)
                }
                OutBuf::Query => Ok(0),
            })
        };
        r.unwrap();
        assert_eq!((len, &buf[..2]), (2, &b"ok"[..]));
        // SAFETY: NULL length pointer is refused.
        let r = unsafe { out_buf(buf.as_mut_ptr(), ptr::null_mut(), |_| Ok(0)) };
        assert_eq!(rv(r), CKR_ARGUMENTS_BAD);
    }

    #[test]
    fn lists() {
        let items = [7 as CK_SLOT_ID, 9];
        let mut n: CK_ULONG = 0;
        // SAFETY: live locals.
        unsafe { out_list(ptr::null_mut(), &mut n, &items) }.unwrap();
        assert_eq!(n, 2);
        let mut one = [0 as CK_SLOT_ID; 1];
        n = 1;
        // SAFETY: `one` has 1 element.
        let r = unsafe { out_list(one.as_mut_ptr(), &mut n, &items) };
        assert_eq!(rv(r), CKR_BUFFER_TOO_SMALL);
        assert_eq!(n, 2);
        let mut three = [0 as CK_SLOT_ID; 3];
        n = 3;
        // SAFETY: `three` has 3 elements.
        unsafe { out_list(three.as_mut_ptr(), &mut n, &items) }.unwrap();
        assert_eq!((n, three), (2, [7, 9, 0]));
    }

    #[test]
    fn mechanisms() {
        let mut pss = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            sLen: 32,
        };
        let mut m = CK_MECHANISM {
            mechanism: CKM_SHA256_RSA_PKCS_PSS,
            pParameter: ptr::addr_of_mut!(pss).cast(),
            ulParameterLen: size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG,
        };
        // SAFETY: `m` and `pss` are live locals.
        let d = unsafe { decode_mechanism(&m) }.unwrap();
        assert_eq!(
            d.param,
            MechParam::Pss {
                hash: CKM_SHA256,
                mgf: CKG_MGF1_SHA256,
                salt_len: 32
            }
        );
        m.ulParameterLen -= 1;
        // SAFETY: as above (shorter length).
        let r = unsafe { decode_mechanism(&m) };
        assert_eq!(rv(r), CKR_MECHANISM_PARAM_INVALID);
        m.pParameter = ptr::null_mut();
        m.ulParameterLen = 0;
        // SAFETY: no parameter.
        let r = unsafe { decode_mechanism(&m) };
        assert_eq!(rv(r), CKR_MECHANISM_PARAM_INVALID);

        let mut label = *b"lbl";
        let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA_1,
            mgf: CKG_MGF1_SHA1,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: label.as_mut_ptr().cast(),
            ulSourceDataLen: 3,
        };
        // Misaligned copy of the parameter: decoding must not care.
        let mut raw = vec![0u8; size_of::<CK_RSA_PKCS_OAEP_PARAMS>() + 1];
        // SAFETY: `raw` has room for the struct after one byte; unaligned write.
        unsafe { ptr::write_unaligned(raw.as_mut_ptr().add(1).cast(), oaep) };
        let m = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS_OAEP,
            pParameter: raw[1..].as_mut_ptr().cast(),
            ulParameterLen: size_of::<CK_RSA_PKCS_OAEP_PARAMS>() as CK_ULONG,
        };
        // SAFETY: live locals.
        let d = unsafe { decode_mechanism(&m) }.unwrap();
        assert_eq!(
            d.param,
            MechParam::Oaep {
                hash: CKM_SHA_1,
                mgf: CKG_MGF1_SHA1,
                label: b"lbl".to_vec()
            }
        );
        oaep.pSourceData = ptr::null_mut();
        let m = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS_OAEP,
            pParameter: ptr::addr_of_mut!(oaep).cast(),
            ulParameterLen: size_of::<CK_RSA_PKCS_OAEP_PARAMS>() as CK_ULONG,
        };
        // SAFETY: NULL label with a length is refused before reading.
        let r = unsafe { decode_mechanism(&m) };
        assert_eq!(rv(r), CKR_MECHANISM_PARAM_INVALID);

        let mut point = [4u8, 1, 2];
        let mut ecdh = CK_ECDH1_DERIVE_PARAMS {
            kdf: CKD_NULL,
            ulSharedDataLen: 0,
            pSharedData: ptr::null_mut(),
            ulPublicDataLen: 3,
            pPublicData: point.as_mut_ptr(),
        };
        let m = CK_MECHANISM {
            mechanism: CKM_ECDH1_DERIVE,
            pParameter: ptr::addr_of_mut!(ecdh).cast(),
            ulParameterLen: size_of::<CK_ECDH1_DERIVE_PARAMS>() as CK_ULONG,
        };
        // SAFETY: live locals.
        let d = unsafe { decode_mechanism(&m) }.unwrap();
        assert_eq!(
            d.param,
            MechParam::Ecdh {
                kdf: CKD_NULL,
                shared_data: vec![],
                public_data: point.to_vec()
            }
        );
        let m = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: no parameter.
        let d = unsafe { decode_mechanism(&m) };
        assert_eq!(d.unwrap().param, MechParam::None);
        // SAFETY: NULL mechanism.
        let r = unsafe { decode_mechanism(ptr::null()) };
        assert_eq!(rv(r), CKR_ARGUMENTS_BAD);
    }
}
