//! Mechanisms: which ones the token offers (C_GetMechanismList/Info), whether a mechanism and
//! its parameter fit a key, and the host-side halves of every operation. A PIV card only does
//! raw RSA, ECDSA over a given hash and ECDH; hashing, padding, signature encoding, public-key
//! verification and encryption happen here.
//!
//! This module knows nothing about sessions, objects or APDUs: the session layer
//! (`token::library`) builds an operation from a [`Mechanism`] and a [`KeyInfo`], sends
//! [`SignOp::card_input`] (or a ciphertext) to the applet, and hands the card's answer back.

mod crypt;
mod hash;
mod pad;
mod sign;

#[cfg(test)]
pub(crate) mod tests;

pub use crate::applet::keys::{Curve, KeyError, KeyInfo, PublicKey};
pub use crypt::{check_ciphertext_len, decrypt_unpad, derived_value, ecdh_peer_point, encrypt};
pub use hash::{Digester, HashAlg};
pub use sign::{SignOp, VerifyOp};

use super::{Error, MechParam, Mechanism, Result};
use cryptoki_sys::*;

/// RSA key sizes the token offers, in bits (PIV: 2048, 3072, 4096).
const RSA_BITS: (CK_ULONG, CK_ULONG) = (2048, 4096);
/// EC key sizes the token offers, in bits (P-256 and P-384).
const EC_BITS: (CK_ULONG, CK_ULONG) = (256, 384);
/// Flags every EC mechanism carries: prime fields, curves named by OID, uncompressed points.
const EC_FLAGS: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;

/// What a mechanism works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// RSA keys.
    Rsa,
    /// EC keys.
    Ec,
    /// No key: a digest.
    Digest,
}

/// One mechanism the token offers: the one table the module (C_GetMechanismList/Info,
/// CKA_ALLOWED_MECHANISMS), the control manager (which mechanism signs with a key and a hash)
/// and the tests read.
#[derive(Clone, Copy, Debug)]
pub struct MechanismEntry {
    /// CKM_* value.
    pub ty: CK_MECHANISM_TYPE,
    /// What it works on.
    pub family: Family,
    /// CKF_* functions it offers.
    pub flags: CK_FLAGS,
    /// The hash the host computes first (hash-and-sign mechanisms), or the digest's own.
    pub hash: Option<HashAlg>,
    /// An RSA-PSS mechanism (takes CK_RSA_PKCS_PSS_PARAMS).
    pub pss: bool,
}

const SIGN: CK_FLAGS = CKF_HW | CKF_SIGN | CKF_VERIFY;
const CRYPT: CK_FLAGS = CKF_HW | CKF_ENCRYPT | CKF_DECRYPT;

const fn m(
    ty: CK_MECHANISM_TYPE,
    family: Family,
    flags: CK_FLAGS,
    hash: Option<HashAlg>,
    pss: bool,
) -> MechanismEntry {
    MechanismEntry {
        ty,
        family,
        flags,
        hash,
        pss,
    }
}

use Family::{Digest as D, Ec as E, Rsa as R};
use HashAlg::{Sha1 as S1, Sha224 as S224, Sha256 as S256, Sha384 as S384, Sha512 as S512};

/// Every mechanism the token offers.
pub static TABLE: [MechanismEntry; 28] = [
    m(
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        R,
        CKF_HW | CKF_GENERATE_KEY_PAIR,
        None,
        false,
    ),
    m(CKM_RSA_PKCS, R, SIGN | CRYPT, None, false),
    m(CKM_RSA_X_509, R, SIGN | CRYPT, None, false),
    m(CKM_RSA_PKCS_OAEP, R, CRYPT, None, false),
    m(CKM_RSA_PKCS_PSS, R, SIGN, None, true),
    m(CKM_SHA1_RSA_PKCS, R, SIGN, Some(S1), false),
    m(CKM_SHA224_RSA_PKCS, R, SIGN, Some(S224), false),
    m(CKM_SHA256_RSA_PKCS, R, SIGN, Some(S256), false),
    m(CKM_SHA384_RSA_PKCS, R, SIGN, Some(S384), false),
    m(CKM_SHA512_RSA_PKCS, R, SIGN, Some(S512), false),
    m(CKM_SHA1_RSA_PKCS_PSS, R, SIGN, Some(S1), true),
    m(CKM_SHA224_RSA_PKCS_PSS, R, SIGN, Some(S224), true),
    m(CKM_SHA256_RSA_PKCS_PSS, R, SIGN, Some(S256), true),
    m(CKM_SHA384_RSA_PKCS_PSS, R, SIGN, Some(S384), true),
    m(CKM_SHA512_RSA_PKCS_PSS, R, SIGN, Some(S512), true),
    m(
        CKM_EC_KEY_PAIR_GEN,
        E,
        CKF_HW | CKF_GENERATE_KEY_PAIR | EC_FLAGS,
        None,
        false,
    ),
    m(CKM_ECDSA, E, SIGN | EC_FLAGS, None, false),
    m(CKM_ECDSA_SHA1, E, SIGN | EC_FLAGS, Some(S1), false),
    m(CKM_ECDSA_SHA224, E, SIGN | EC_FLAGS, Some(S224), false),
    m(CKM_ECDSA_SHA256, E, SIGN | EC_FLAGS, Some(S256), false),
    m(CKM_ECDSA_SHA384, E, SIGN | EC_FLAGS, Some(S384), false),
    m(CKM_ECDSA_SHA512, E, SIGN | EC_FLAGS, Some(S512), false),
    m(
        CKM_ECDH1_DERIVE,
        E,
        CKF_HW | CKF_DERIVE | EC_FLAGS,
        None,
        false,
    ),
    m(CKM_SHA_1, D, CKF_DIGEST, Some(S1), false),
    m(CKM_SHA224, D, CKF_DIGEST, Some(S224), false),
    m(CKM_SHA256, D, CKF_DIGEST, Some(S256), false),
    m(CKM_SHA384, D, CKF_DIGEST, Some(S384), false),
    m(CKM_SHA512, D, CKF_DIGEST, Some(S512), false),
];

static SUPPORTED: std::sync::LazyLock<Vec<CK_MECHANISM_TYPE>> =
    std::sync::LazyLock::new(|| TABLE.iter().map(|e| e.ty).collect());

/// Every mechanism the token offers, for C_GetMechanismList.
pub fn supported() -> &'static [CK_MECHANISM_TYPE] {
    &SUPPORTED
}

/// The mechanisms a key of this type can be used with (CKA_ALLOWED_MECHANISMS): every
/// sign, verify, encrypt, decrypt or derive mechanism of its family.
pub fn mechanisms_for_key(ec: bool) -> &'static [CK_MECHANISM_TYPE] {
    static FOR_KEY: std::sync::LazyLock<[Vec<CK_MECHANISM_TYPE>; 2]> =
        std::sync::LazyLock::new(|| {
            let of = |family| {
                TABLE
                    .iter()
                    .filter(|e| e.family == family && e.flags & CKF_GENERATE_KEY_PAIR == 0)
                    .map(|e| e.ty)
                    .collect()
            };
            [of(Family::Rsa), of(Family::Ec)]
        });
    let [rsa, ec_list] = &*FOR_KEY;
    if ec {
        ec_list
    } else {
        rsa
    }
}

/// The table's entry of a supported mechanism.
pub fn lookup(ty: CK_MECHANISM_TYPE) -> Option<&'static MechanismEntry> {
    TABLE.iter().find(|e| e.ty == ty)
}

/// The hash-and-sign mechanism for a key of `key`'s kind and `hash` (PKCS#1 v1.5 for RSA,
/// ECDSA for EC): what the control manager signs and checks CMS and requests with.
pub fn signing_mechanism(key: &KeyInfo, hash: HashAlg) -> CK_MECHANISM_TYPE {
    let family = match key {
        KeyInfo::Rsa { .. } => Family::Rsa,
        KeyInfo::Ec { .. } => Family::Ec,
    };
    TABLE
        .iter()
        .find(|e| e.family == family && e.hash == Some(hash) && !e.pss && e.flags & CKF_SIGN != 0)
        .map_or(CKM_VENDOR_DEFINED, |e| e.ty)
}

/// The key family and the flags of a supported mechanism.
fn entry(ty: CK_MECHANISM_TYPE) -> Option<(Family, CK_FLAGS)> {
    lookup(ty).map(|e| (e.family, e.flags))
}

/// C_GetMechanismInfo for a supported mechanism; `None` → CKR_MECHANISM_INVALID.
pub fn info(mech: CK_MECHANISM_TYPE) -> Option<CK_MECHANISM_INFO> {
    let (family, flags) = entry(mech)?;
    let (min, max) = match family {
        Family::Rsa => RSA_BITS,
        Family::Ec => EC_BITS,
        Family::Digest => (0, 0),
    };
    Some(CK_MECHANISM_INFO {
        ulMinKeySize: min,
        ulMaxKeySize: max,
        flags,
    })
}

/// Whether `mech` is supported and offers `function` (CKF_SIGN, CKF_DECRYPT, …).
pub fn allows(mech: CK_MECHANISM_TYPE, function: CK_FLAGS) -> bool {
    entry(mech).is_some_and(|(_, flags)| flags & function == function)
}

/// The hash the host computes before the card signs, for the SHAx_RSA_PKCS(_PSS) and
/// ECDSA_SHAx mechanisms.
pub fn signature_hash(mech: CK_MECHANISM_TYPE) -> Option<HashAlg> {
    lookup(mech).filter(|e| e.family != Family::Digest)?.hash
}

fn is_pss(mech: CK_MECHANISM_TYPE) -> bool {
    lookup(mech).is_some_and(|e| e.pss)
}

/// Checked PSS parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PssParams {
    pub hash: HashAlg,
    pub mgf: HashAlg,
    pub salt_len: usize,
}

/// Checked OAEP parameters (the label stays in the [`MechParam`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OaepParams {
    pub hash: HashAlg,
    pub mgf: HashAlg,
}

fn param_invalid() -> Error {
    Error::new(CKR_MECHANISM_PARAM_INVALID)
}

/// Validates a PSS parameter for `mech` and a key of `modulus_bits`.
///
/// The MGF1 hash may differ from the message hash (PKCS#11 and RFC 8017 allow it, OpenSSL can
/// ask for it); it only has to be one of SHA-1..SHA-512.
pub(crate) fn pss_params(mech: &Mechanism, modulus_bits: usize) -> Result<PssParams> {
    let MechParam::Pss {
        hash,
        mgf,
        salt_len,
    } = mech.param
    else {
        return Err(param_invalid());
    };
    let hash = HashAlg::from_mechanism(hash).ok_or_else(param_invalid)?;
    let mgf = HashAlg::from_mgf(mgf).ok_or_else(param_invalid)?;
    if signature_hash(mech.ty).is_some_and(|h| h != hash) {
        return Err(param_invalid());
    }
    // RFC 8017 9.1.1 step 3: emLen ≥ hLen + sLen + 2, emLen = ⌈(modBits − 1)/8⌉.
    let em_len = modulus_bits.saturating_sub(1).div_ceil(8);
    let room = em_len.saturating_sub(hash.output_len() + 2);
    if em_len < hash.output_len() + 2 || salt_len > room {
        return Err(param_invalid());
    }
    Ok(PssParams {
        hash,
        mgf,
        salt_len,
    })
}

/// Validates an OAEP parameter (hash and MGF1 among SHA-1..SHA-512).
pub(crate) fn oaep_params(param: &MechParam) -> Result<OaepParams> {
    let MechParam::Oaep { hash, mgf, .. } = param else {
        return Err(param_invalid());
    };
    Ok(OaepParams {
        hash: HashAlg::from_mechanism(*hash).ok_or_else(param_invalid)?,
        mgf: HashAlg::from_mgf(*mgf).ok_or_else(param_invalid)?,
    })
}

/// Whether a mechanism that takes no parameter got none (an empty byte string counts as none).
fn no_param(param: &MechParam) -> Result<()> {
    match param {
        MechParam::None => Ok(()),
        MechParam::Other(bytes) if bytes.is_empty() => Ok(()),
        _ => Err(param_invalid()),
    }
}

/// Checks that `mech` is supported, fits the key type, and carries a valid parameter.
///
/// Unknown mechanism (or a digest used with a key) → CKR_MECHANISM_INVALID; RSA mechanism with
/// an EC key or the reverse → CKR_KEY_TYPE_INCONSISTENT; a parameter of the wrong shape or with
/// unsupported values (PSS hash not the mechanism's, salt too long for the modulus, unknown
/// hash or MGF, ECDH KDF other than CKD_NULL or with shared data, a peer point not on the
/// key's curve) → CKR_MECHANISM_PARAM_INVALID.
pub fn check_params(mech: &Mechanism, key: &KeyInfo) -> Result<()> {
    let (family, _) = entry(mech.ty).ok_or(Error::new(CKR_MECHANISM_INVALID))?;
    match (family, key) {
        (Family::Digest, _) => Err(Error::new(CKR_MECHANISM_INVALID)),
        (Family::Rsa, KeyInfo::Rsa { modulus_bits }) => {
            if is_pss(mech.ty) {
                pss_params(mech, *modulus_bits).map(|_| ())
            } else if mech.ty == CKM_RSA_PKCS_OAEP {
                let p = oaep_params(&mech.param)?;
                // RFC 8017 7.1.1: k ≥ 2·hLen + 2, else no message fits at all.
                let k = modulus_bits.div_ceil(8);
                if k < 2 * p.hash.output_len() + 2 {
                    return Err(param_invalid());
                }
                Ok(())
            } else {
                no_param(&mech.param)
            }
        }
        (Family::Ec, KeyInfo::Ec { curve }) => {
            if mech.ty == CKM_ECDH1_DERIVE {
                ecdh_peer_point(&mech.param, *curve).map(|_| ())
            } else {
                no_param(&mech.param)
            }
        }
        (Family::Rsa | Family::Ec, _) => Err(Error::new(CKR_KEY_TYPE_INCONSISTENT)),
    }
}

/// `bytes` as a big-endian number of exactly `len` bytes: shorter input is left-padded with
/// zeros, longer input may only carry extra leading zeros. `None` when it does not fit.
pub(crate) fn fixed_width(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    let excess = bytes.len().saturating_sub(len);
    let (head, tail) = bytes.split_at_checked(excess)?;
    if head.iter().any(|&b| b != 0) {
        return None;
    }
    let mut out = vec![0u8; len - tail.len()];
    out.extend_from_slice(tail);
    Some(out)
}
