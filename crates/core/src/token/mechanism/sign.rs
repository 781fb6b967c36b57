//! Signing around the card and verification on the host. [`SignOp`] accumulates the caller's
//! data, produces the exact block the card signs ([`SignOp::card_input`]) and turns the card's
//! answer into the PKCS#11 signature format ([`SignOp::finish`]). [`VerifyOp`] accumulates the
//! same way and checks a signature with a [`PublicKey`].

use super::hash::{Digester, HashAlg};
use super::{check_params, fixed_width, pad, pss_params, signature_hash, PssParams};
use crate::applet::keys::{Curve, KeyInfo, PublicKey};
use crate::token::{Error, Mechanism, Result};
use cryptoki_sys::*;
use ecdsa::signature::hazmat::PrehashVerifier;
use rand::RngCore;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, Pss};
use zeroize::Zeroizing;

/// How the hash or data becomes a signature.
#[derive(Clone, Copy, Debug)]
enum Scheme {
    /// EMSA-PKCS1-v1_5; `None` for CKM_RSA_PKCS (the caller's data is the DigestInfo).
    Pkcs1(Option<HashAlg>),
    /// CKM_RSA_X_509: the data itself, left-padded to k.
    X509,
    /// EMSA-PSS.
    Pss(PssParams),
    /// ECDSA over the hash (or the caller's data for CKM_ECDSA).
    Ecdsa(Curve),
}

/// What has been fed so far.
#[derive(Clone, Debug)]
enum Input {
    /// The host hashes (SHAx_ mechanisms).
    Hashing(Digester),
    /// Raw mechanisms: the data, of which at most `keep` bytes are kept; more than `max`
    /// bytes → CKR_DATA_LEN_RANGE.
    Buffer {
        data: Zeroizing<Vec<u8>>,
        keep: usize,
        max: Option<usize>,
    },
    /// The message is final (after card_input); no more updates.
    Done(Zeroizing<Vec<u8>>),
}

/// The part SignOp and VerifyOp share: mechanism checks and data accumulation.
#[derive(Clone, Debug)]
struct Accumulator {
    scheme: Scheme,
    key: KeyInfo,
    input: Input,
}

impl Accumulator {
    fn new(mech: &Mechanism, key: KeyInfo, function: CK_FLAGS) -> Result<Self> {
        check_params(mech, &key)?;
        if !super::allows(mech.ty, function) {
            return Err(Error::new(CKR_MECHANISM_INVALID));
        }
        let hash = signature_hash(mech.ty);
        let scheme = match (mech.ty, key) {
            (CKM_RSA_X_509, _) => Scheme::X509,
            (_, KeyInfo::Ec { curve }) => Scheme::Ecdsa(curve),
            (CKM_RSA_PKCS, _) => Scheme::Pkcs1(None),
            (_, KeyInfo::Rsa { modulus_bits }) if super::is_pss(mech.ty) => {
                Scheme::Pss(pss_params(mech, modulus_bits)?)
            }
            (_, KeyInfo::Rsa { .. }) => Scheme::Pkcs1(hash),
        };
        let input = match hash {
            Some(h) => Input::Hashing(Digester::of(h)),
            None => {
                let k = key.rsa_len().unwrap_or(0);
                let (keep, max) = match scheme {
                    Scheme::Pkcs1(_) => (k, Some(k.saturating_sub(11))),
                    Scheme::X509 => (k, Some(k)),
                    Scheme::Pss(p) => (p.hash.output_len(), Some(p.hash.output_len())),
                    // Only the leftmost field-length bytes of an ECDSA input count.
                    Scheme::Ecdsa(curve) => (curve.field_len(), None),
                };
                Input::Buffer {
                    data: Zeroizing::new(Vec::new()),
                    keep,
                    max,
                }
            }
        };
        Ok(Self { scheme, key, input })
    }

    fn update(&mut self, part: &[u8]) -> Result<()> {
        match &mut self.input {
            Input::Hashing(d) => d.update(part),
            Input::Buffer { data, keep, max } => {
                let total = data.len().saturating_add(part.len());
                if max.is_some_and(|m| total > m) {
                    return Err(Error::new(CKR_DATA_LEN_RANGE));
                }
                let room = keep.saturating_sub(data.len());
                data.extend_from_slice(part.get(..room.min(part.len())).unwrap_or_default());
            }
            // The operation already produced its card input: the session layer ends an
            // operation after that, so this is a misuse from inside the library.
            Input::Done(_) => return Err(Error::new(CKR_OPERATION_NOT_INITIALIZED)),
        }
        Ok(())
    }

    /// The final message: the hash for SHAx_ mechanisms, else the caller's data (ECDSA: fixed
    /// to the field length). Checks the lengths that only the whole input can tell.
    fn message(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        let msg = match &mut self.input {
            Input::Done(m) => return Ok(m.clone()),
            Input::Hashing(d) => Zeroizing::new(d.finalize()),
            Input::Buffer { data, .. } => {
                if let Scheme::Pss(p) = self.scheme {
                    if data.len() != p.hash.output_len() {
                        return Err(Error::new(CKR_DATA_LEN_RANGE));
                    }
                }
                std::mem::take(data)
            }
        };
        let msg = match self.scheme {
            Scheme::Ecdsa(curve) => Zeroizing::new(ecdsa_field_hash(&msg, curve)),
            _ => msg,
        };
        self.input = Input::Done(msg.clone());
        Ok(msg)
    }

    fn rsa_len(&self) -> usize {
        self.key.rsa_len().unwrap_or(0)
    }

    fn signature_len(&self) -> usize {
        match self.scheme {
            Scheme::Ecdsa(curve) => 2 * curve.field_len(),
            _ => self.rsa_len(),
        }
    }
}

/// The hash as ECDSA uses it for a field of this size (FIPS 186-5 6.4.1, bits2int): a longer
/// hash is cut to its leftmost bytes, a shorter one is the same integer left-padded with zeros.
/// Both curves have byte-aligned orders, so this is exact. Giving the card exactly one field
/// length spares it (and cards that insist on that length) any guesswork.
fn ecdsa_field_hash(hash: &[u8], curve: Curve) -> Vec<u8> {
    let f = curve.field_len();
    let head = hash.get(..f).unwrap_or(hash);
    let mut out = vec![0u8; f - head.len()];
    out.extend_from_slice(head);
    out
}

/// A signature in progress: the host's half of C_SignInit / Update / Final.
#[derive(Clone, Debug)]
pub struct SignOp {
    acc: Accumulator,
}

impl SignOp {
    /// Starts a signature with `mech` on a key described by `key`. Errors as
    /// [`check_params`](super::check_params); a mechanism that cannot sign →
    /// CKR_MECHANISM_INVALID.
    pub fn new(mech: &Mechanism, key: KeyInfo) -> Result<Self> {
        Ok(Self {
            acc: Accumulator::new(mech, key, CKF_SIGN)?,
        })
    }

    /// Feeds data (C_SignUpdate, or all of it for C_Sign). Raw RSA mechanisms refuse input
    /// longer than they can sign with CKR_DATA_LEN_RANGE: CKM_RSA_PKCS k − 11 bytes,
    /// CKM_RSA_X_509 k bytes, CKM_RSA_PKCS_PSS the PSS hash length.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        self.acc.update(data)
    }

    /// The block the card signs with its raw operation: for RSA k bytes (EMSA-PKCS1-v1_5 or
    /// EMSA-PSS with a fresh random salt, or the CKM_RSA_X_509 data left-padded); for ECDSA the
    /// hash (the CKM_ECDSA data) cut or padded to the field length. CKM_RSA_PKCS_PSS with data
    /// that is not exactly one hash → CKR_DATA_LEN_RANGE.
    pub fn card_input(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        let msg = self.acc.message()?;
        let k = self.acc.rsa_len();
        let block = match self.acc.scheme {
            Scheme::Ecdsa(_) => return Ok(msg),
            Scheme::Pkcs1(None) => pad::emsa_pkcs1_v15(&msg, k),
            Scheme::Pkcs1(Some(hash)) => {
                let mut t = Zeroizing::new(hash.digest_info_prefix().to_vec());
                t.extend_from_slice(&msg);
                pad::emsa_pkcs1_v15(&t, k)
            }
            Scheme::X509 => {
                let block = fixed_width(&msg, k);
                // The block must stay below the modulus; with more bits than the modulus it
                // surely does not (the card checks the rest).
                if let (Some(b), KeyInfo::Rsa { modulus_bits }) = (&block, self.acc.key) {
                    if bit_len(b) > modulus_bits {
                        return Err(Error::new(CKR_DATA_INVALID));
                    }
                }
                block
            }
            Scheme::Pss(p) => {
                let mut salt = vec![0u8; p.salt_len];
                rand::rngs::OsRng.fill_bytes(&mut salt);
                let em_bits = self.modulus_bits().saturating_sub(1);
                pad::emsa_pss_encode(&msg, em_bits, p.hash, p.mgf, &salt)
                    .and_then(|em| fixed_width(&em, k))
            }
        };
        block
            .map(Zeroizing::new)
            .ok_or(Error::new(CKR_DATA_LEN_RANGE))
    }

    fn modulus_bits(&self) -> usize {
        match self.acc.key {
            KeyInfo::Rsa { modulus_bits } => modulus_bits,
            KeyInfo::Ec { curve } => curve.bits(),
        }
    }

    /// Length of the finished signature: k for RSA, r‖s (twice the field length) for ECDSA.
    pub fn signature_len(&self) -> usize {
        self.acc.signature_len()
    }

    /// The PKCS#11 signature from the card's answer: RSA as is (fixed to k bytes); ECDSA's DER
    /// ECDSA-Sig-Value as r‖s, each left-padded to the field length. An answer that is not a
    /// signature of that shape → CKR_DEVICE_ERROR.
    pub fn finish(&self, card_output: &[u8]) -> Result<Vec<u8>> {
        let device = || Error::new(CKR_DEVICE_ERROR);
        match self.acc.scheme {
            Scheme::Ecdsa(Curve::P256) => p256::ecdsa::Signature::from_der(card_output)
                .map(|s| s.to_bytes().to_vec())
                .map_err(|_| device()),
            Scheme::Ecdsa(Curve::P384) => p384::ecdsa::Signature::from_der(card_output)
                .map(|s| s.to_bytes().to_vec())
                .map_err(|_| device()),
            _ => fixed_width(card_output, self.acc.rsa_len()).ok_or_else(device),
        }
    }
}

/// Number of significant bits in a big-endian number.
fn bit_len(bytes: &[u8]) -> usize {
    let mut iter = bytes.iter().skip_while(|&&b| b == 0);
    match iter.next() {
        None => 0,
        Some(&top) => (8 - top.leading_zeros() as usize) + 8 * iter.count(),
    }
}

/// A verification in progress on the host: C_VerifyInit / Update / Final.
#[derive(Clone, Debug)]
pub struct VerifyOp {
    acc: Accumulator,
}

impl VerifyOp {
    /// Starts a verification with `mech` for a key described by `key` (normally
    /// `public_key.key_info()`). Errors as for [`SignOp::new`].
    pub fn new(mech: &Mechanism, key: KeyInfo) -> Result<Self> {
        Ok(Self {
            acc: Accumulator::new(mech, key, CKF_VERIFY)?,
        })
    }

    /// Feeds data; the same length limits as [`SignOp::update`].
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        self.acc.update(data)
    }

    /// Length a valid signature has.
    pub fn signature_len(&self) -> usize {
        self.acc.signature_len()
    }

    /// Checks `signature` over the data fed so far. Wrong length → CKR_SIGNATURE_LEN_RANGE,
    /// not a valid signature → CKR_SIGNATURE_INVALID, a key other than the one the operation
    /// was set up for → CKR_KEY_TYPE_INCONSISTENT, a CKM_RSA_PKCS_PSS input that is not one
    /// hash → CKR_DATA_LEN_RANGE.
    pub fn verify(mut self, public_key: &PublicKey, signature: &[u8]) -> Result<()> {
        if public_key.key_info() != self.acc.key {
            return Err(Error::new(CKR_KEY_TYPE_INCONSISTENT));
        }
        let msg = self.acc.message()?;
        if signature.len() != self.acc.signature_len() {
            return Err(Error::new(CKR_SIGNATURE_LEN_RANGE));
        }
        let ok = match (public_key, self.acc.scheme) {
            (PublicKey::Rsa(key), scheme) => verify_rsa(key, scheme, &msg, signature),
            (PublicKey::P256(key), _) => p256::ecdsa::Signature::from_slice(signature)
                .ok()
                .is_some_and(|sig| {
                    p256::ecdsa::VerifyingKey::from(key)
                        .verify_prehash(&msg, &sig)
                        .is_ok()
                }),
            (PublicKey::P384(key), _) => p384::ecdsa::Signature::from_slice(signature)
                .ok()
                .is_some_and(|sig| {
                    p384::ecdsa::VerifyingKey::from(key)
                        .verify_prehash(&msg, &sig)
                        .is_ok()
                }),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::new(CKR_SIGNATURE_INVALID))
        }
    }
}

/// The rsa crate's PKCS#1 v1.5 verifier for a hash.
fn pkcs1v15_for(hash: HashAlg) -> Pkcs1v15Sign {
    match hash {
        // sha1 is built without its `oid` feature, so the rsa crate cannot derive the prefix.
        HashAlg::Sha1 => Pkcs1v15Sign {
            hash_len: Some(hash.output_len()),
            prefix: hash.digest_info_prefix().into(),
        },
        HashAlg::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
        HashAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        HashAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        HashAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
    }
}

fn verify_rsa(key: &rsa::RsaPublicKey, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
    match scheme {
        Scheme::Pkcs1(None) => key.verify(Pkcs1v15Sign::new_unprefixed(), msg, sig).is_ok(),
        Scheme::Pkcs1(Some(hash)) => key.verify(pkcs1v15_for(hash), msg, sig).is_ok(),
        Scheme::Pss(p) if p.mgf == p.hash => {
            let pss = Pss {
                blinded: false,
                digest: p.hash.hasher(),
                salt_len: p.salt_len,
            };
            key.verify(pss, msg, sig).is_ok()
        }
        // The rsa crate's PSS ties MGF1 to the message hash; other pairs go through our own
        // EMSA-PSS-VERIFY on the raw public-key result.
        Scheme::Pss(p) => {
            let bits = key.n().bits();
            let em_bits = bits.saturating_sub(1);
            raw_public(key, sig).is_some_and(|m| {
                // emLen may be one byte shorter than k; that byte must then be zero.
                fixed_width(&m, em_bits.div_ceil(8)).is_some_and(|em| {
                    pad::emsa_pss_verify(msg, &em, em_bits, p.hash, p.mgf, p.salt_len)
                })
            })
        }
        Scheme::X509 => {
            let k = key.size();
            match (raw_public(key, sig), fixed_width(msg, k)) {
                (Some(m), Some(expected)) => m == expected,
                _ => false,
            }
        }
        Scheme::Ecdsa(_) => false,
    }
}

/// s^e mod n as k bytes; `None` when s is not below n.
pub(crate) fn raw_public(key: &rsa::RsaPublicKey, sig: &[u8]) -> Option<Vec<u8>> {
    let s = rsa::BigUint::from_bytes_be(sig);
    if &s >= key.n() {
        return None;
    }
    let m = rsa::hazmat::rsa_encrypt(key, &s).ok()?;
    fixed_width(&m.to_bytes_be(), key.size())
}
