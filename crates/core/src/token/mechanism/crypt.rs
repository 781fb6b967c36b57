//! RSA encryption with a public key on the host, the unpadding of what the card's raw private
//! operation returns, and the host's share of ECDH1_DERIVE (peer point, derived value).

use super::{check_params, fixed_width, oaep_params, pad, sign::raw_public};
use crate::applet::keys::{parse_ec_point, Curve, PublicKey};
use crate::token::{Error, MechParam, Mechanism, Result};
use cryptoki_sys::*;
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

/// C_Encrypt with a public key: CKM_RSA_PKCS (data ≤ k − 11), CKM_RSA_X_509 (data ≤ k, as a
/// number below the modulus; the result is k bytes), CKM_RSA_PKCS_OAEP (data ≤ k − 2·hLen − 2).
/// Too long → CKR_DATA_LEN_RANGE; an X.509 block not below the modulus → CKR_DATA_INVALID;
/// an EC key → CKR_KEY_TYPE_INCONSISTENT; a mechanism that does not encrypt →
/// CKR_MECHANISM_INVALID.
pub fn encrypt(mech: &Mechanism, public_key: &PublicKey, data: &[u8]) -> Result<Vec<u8>> {
    check_params(mech, &public_key.key_info())?;
    if !super::allows(mech.ty, CKF_ENCRYPT) {
        return Err(Error::new(CKR_MECHANISM_INVALID));
    }
    let PublicKey::Rsa(key) = public_key else {
        return Err(Error::new(CKR_KEY_TYPE_INCONSISTENT));
    };
    let k = key.size();
    let too_long = || Error::new(CKR_DATA_LEN_RANGE);
    let failed = |_| Error::new(CKR_FUNCTION_FAILED);
    let mut rng = rand::rngs::OsRng;
    match mech.ty {
        CKM_RSA_PKCS => {
            if data.len() > k.saturating_sub(11) {
                return Err(too_long());
            }
            key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, data)
                .map_err(failed)
        }
        CKM_RSA_X_509 => {
            let block = fixed_width(data, k).ok_or_else(too_long)?;
            if &rsa::BigUint::from_bytes_be(&block) >= key.n() {
                return Err(Error::new(CKR_DATA_INVALID));
            }
            // Raw RSA is its own inverse shape: m^e mod n, exactly what raw_public computes.
            raw_public(key, &block).ok_or(Error::new(CKR_DATA_INVALID))
        }
        CKM_RSA_PKCS_OAEP => {
            let p = oaep_params(&mech.param)?;
            let label = match &mech.param {
                MechParam::Oaep { label, .. } => label.as_slice(),
                _ => &[],
            };
            if data.len() > k.saturating_sub(2 * p.hash.output_len() + 2) {
                return Err(too_long());
            }
            match std::str::from_utf8(label) {
                Ok(text) => {
                    let oaep = rsa::Oaep {
                        digest: p.hash.hasher(),
                        mgf_digest: p.mgf.hasher(),
                        label: (!text.is_empty()).then(|| text.to_owned()),
                    };
                    key.encrypt(&mut rng, oaep, data).map_err(failed)
                }
                // The rsa crate (0.9) takes labels as text only; binary labels get our own
                // EME-OAEP encoding and the raw public operation.
                Err(_) => {
                    let em = pad::eme_oaep_encode(data, k, p.hash, p.mgf, label, &mut rng)
                        .ok_or_else(too_long)?;
                    raw_public(key, &em).ok_or(Error::new(CKR_FUNCTION_FAILED))
                }
            }
        }
        _ => Err(Error::new(CKR_MECHANISM_INVALID)),
    }
}

/// Checks a ciphertext before it goes to the card: `mech` must decrypt
/// (CKR_MECHANISM_INVALID otherwise) and RSA decryption takes exactly k bytes, anything else →
/// CKR_ENCRYPTED_DATA_LEN_RANGE.
pub fn check_ciphertext_len(mech: &Mechanism, k: usize, ciphertext_len: usize) -> Result<()> {
    if !super::allows(mech.ty, CKF_DECRYPT) {
        return Err(Error::new(CKR_MECHANISM_INVALID));
    }
    if ciphertext_len == k {
        Ok(())
    } else {
        Err(Error::new(CKR_ENCRYPTED_DATA_LEN_RANGE))
    }
}

/// The plaintext from the card's raw RSA result for a k-byte modulus: CKM_RSA_PKCS strips
/// EME-PKCS1-v1_5 type 2 padding, CKM_RSA_PKCS_OAEP decodes EME-OAEP with the parameter's
/// hash, MGF1 and label, CKM_RSA_X_509 returns the block. Bad padding →
/// CKR_ENCRYPTED_DATA_INVALID (one answer for every way it can be bad); a card answer longer
/// than k → CKR_DEVICE_ERROR.
pub fn decrypt_unpad(mech: &Mechanism, k: usize, card_output: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if !super::allows(mech.ty, CKF_DECRYPT) {
        return Err(Error::new(CKR_MECHANISM_INVALID));
    }
    let em = Zeroizing::new(fixed_width(card_output, k).ok_or(Error::new(CKR_DEVICE_ERROR))?);
    let invalid = Error::new(CKR_ENCRYPTED_DATA_INVALID);
    match mech.ty {
        CKM_RSA_X_509 => Ok(em),
        CKM_RSA_PKCS => pad::eme_pkcs1_v15_decode(&em).ok_or(invalid),
        CKM_RSA_PKCS_OAEP => {
            let p = oaep_params(&mech.param)?;
            let label = match &mech.param {
                MechParam::Oaep { label, .. } => label.as_slice(),
                _ => &[],
            };
            pad::eme_oaep_decode(&em, p.hash, p.mgf, label).ok_or(invalid)
        }
        _ => Err(Error::new(CKR_MECHANISM_INVALID)),
    }
}

/// The other party's public point for CKM_ECDH1_DERIVE, as the card takes it: uncompressed
/// 04‖X‖Y on `curve`. The parameter's public data may be raw (uncompressed or compressed) or a
/// DER OCTET STRING around it. KDF other than CKD_NULL, shared data with CKD_NULL, another
/// parameter shape, or a point not on the curve → CKR_MECHANISM_PARAM_INVALID.
pub fn ecdh_peer_point(params: &MechParam, curve: Curve) -> Result<Vec<u8>> {
    let invalid = || Error::new(CKR_MECHANISM_PARAM_INVALID);
    let MechParam::Ecdh {
        kdf,
        shared_data,
        public_data,
    } = params
    else {
        return Err(invalid());
    };
    if *kdf != CKD_NULL || !shared_data.is_empty() {
        return Err(invalid());
    }
    parse_ec_point(curve, public_data)
        .and_then(|k| k.ec_point())
        .ok_or_else(invalid)
}

/// CKA_VALUE of the key ECDH1_DERIVE makes with CKD_NULL: the shared X coordinate, or its
/// rightmost `value_len` bytes when the template asks for CKA_VALUE_LEN (as NSS and SoftHSM
/// truncate). A length of zero or beyond X → CKR_KEY_SIZE_RANGE.
pub fn derived_value(x: &[u8], value_len: Option<usize>) -> Result<Zeroizing<Vec<u8>>> {
    let len = value_len.unwrap_or(x.len());
    if len == 0 || len > x.len() {
        return Err(Error::new(CKR_KEY_SIZE_RANGE));
    }
    let tail = x.get(x.len() - len..).unwrap_or_default();
    Ok(Zeroizing::new(tail.to_vec()))
}
