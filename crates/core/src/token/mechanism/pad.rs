//! RSA encodings (RFC 8017) done on the host around the card's raw private-key operation:
//! EMSA-PKCS1-v1_5 and EMSA-PSS for signatures, EME-PKCS1-v1_5 and EME-OAEP decoding for
//! decryption (and OAEP encoding for labels the rsa crate cannot take).
//!
//! The decoders of decrypted blocks handle secret data: they look at every byte and decide
//! once at the end, with mask arithmetic instead of branches, so their timing does not tell
//! a padding oracle where the block went wrong.

use super::hash::{mgf1_xor, HashAlg};
use zeroize::Zeroizing;

/// 0xFF when `a == b`, else 0x00, without a data-dependent branch.
fn ct_eq(a: u8, b: u8) -> u8 {
    let x = u32::from(std::hint::black_box(a ^ b));
    // x | −x has its top bit set exactly when x ≠ 0.
    let nonzero = (x | x.wrapping_neg()) >> 31;
    // nonzero is 0 or 1; 1 − nonzero is 1 or 0; its negation is all ones or zero.
    (1u8 ^ nonzero as u8).wrapping_neg()
}

/// A byte mask widened to usize (0xFF → all ones, 0x00 → zero).
fn widen(mask: u8) -> usize {
    usize::from(mask & 1).wrapping_neg()
}

/// `a` where `mask` is all ones, else `b`.
fn select(mask: usize, a: usize, b: usize) -> usize {
    (a & mask) | (b & !mask)
}

/// 0xFF when `a >= b` (both below 2^(bits−1)), else 0x00.
fn ct_ge(a: usize, b: usize) -> u8 {
    let borrow = a.wrapping_sub(b) >> (usize::BITS - 1);
    (1u8 ^ (borrow as u8 & 1)).wrapping_neg()
}

/// EMSA-PKCS1-v1_5 (RFC 8017 9.2 steps 3–6): 00 01 FF…FF 00 ‖ `t`, `k` bytes, at least eight
/// FF bytes. `t` is DigestInfo‖hash (or what the caller gave for CKM_RSA_PKCS). `None` when
/// `t` is longer than k − 11.
pub(crate) fn emsa_pkcs1_v15(t: &[u8], k: usize) -> Option<Vec<u8>> {
    let ps_len = k.checked_sub(t.len() + 3).filter(|&n| n >= 8)?;
    let mut em = Vec::with_capacity(k);
    em.extend_from_slice(&[0x00, 0x01]);
    em.resize(2 + ps_len, 0xFF);
    em.push(0x00);
    em.extend_from_slice(t);
    Some(em)
}

/// EMSA-PSS-ENCODE (RFC 8017 9.1.1) of the message hash `m_hash` with `salt`, for a modulus of
/// `em_bits + 1` bits. Returns EM of ⌈em_bits/8⌉ bytes; `None` if it does not fit.
pub(crate) fn emsa_pss_encode(
    m_hash: &[u8],
    em_bits: usize,
    hash: HashAlg,
    mgf: HashAlg,
    salt: &[u8],
) -> Option<Vec<u8>> {
    let h_len = hash.output_len();
    let em_len = em_bits.div_ceil(8);
    if m_hash.len() != h_len || em_len < h_len + salt.len() + 2 {
        return None;
    }
    let h = pss_hash(hash, m_hash, salt);
    let db_len = em_len - h_len - 1;
    // DB = PS (zeros) ‖ 01 ‖ salt.
    let mut db = vec![0u8; db_len - salt.len() - 1];
    db.push(0x01);
    db.extend_from_slice(salt);
    mgf1_xor(mgf, &h, &mut db);
    if let Some(first) = db.first_mut() {
        *first &= top_mask(em_len, em_bits);
    }
    let mut em = db;
    em.extend_from_slice(&h);
    em.push(0xBC);
    Some(em)
}

/// EMSA-PSS-VERIFY (RFC 8017 9.1.2) with a known salt length. `em` is ⌈em_bits/8⌉ bytes.
/// Signature data is public, so this may exit early.
pub(crate) fn emsa_pss_verify(
    m_hash: &[u8],
    em: &[u8],
    em_bits: usize,
    hash: HashAlg,
    mgf: HashAlg,
    salt_len: usize,
) -> bool {
    let h_len = hash.output_len();
    let em_len = em_bits.div_ceil(8);
    if m_hash.len() != h_len || em.len() != em_len || em_len < h_len + salt_len + 2 {
        return false;
    }
    let Some((masked_db, rest)) = em.split_at_checked(em_len - h_len - 1) else {
        return false;
    };
    let Some((h, trailer)) = rest.split_at_checked(h_len) else {
        return false;
    };
    let mask = top_mask(em_len, em_bits);
    if trailer != [0xBC] || masked_db.first().is_some_and(|b| b & !mask != 0) {
        return false;
    }
    let mut db = masked_db.to_vec();
    mgf1_xor(mgf, h, &mut db);
    if let Some(first) = db.first_mut() {
        *first &= mask;
    }
    let Some((ps, rest)) = db.split_at_checked(db.len() - salt_len - 1) else {
        return false;
    };
    let Some((one, salt)) = rest.split_first() else {
        return false;
    };
    ps.iter().all(|&b| b == 0) && *one == 0x01 && pss_hash(hash, m_hash, salt) == h
}

/// H = Hash(00×8 ‖ mHash ‖ salt).
fn pss_hash(hash: HashAlg, m_hash: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + m_hash.len() + salt.len());
    m.extend_from_slice(&[0u8; 8]);
    m.extend_from_slice(m_hash);
    m.extend_from_slice(salt);
    hash.digest(&m)
}

/// The mask that clears the leftmost 8·emLen − emBits bits of EM.
fn top_mask(em_len: usize, em_bits: usize) -> u8 {
    let unused = (8 * em_len).saturating_sub(em_bits).min(7);
    0xFF >> unused
}

/// EME-PKCS1-v1_5 decoding (RFC 8017 7.2.2 step 3) of a decrypted block of k bytes:
/// 00 02 PS(≥ 8 nonzero) 00 M → M. Constant-time up to the final accept/reject.
pub(crate) fn eme_pkcs1_v15_decode(em: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut bytes = em.iter().copied();
    let first = bytes.next()?;
    let second = bytes.next()?;
    let mut good = ct_eq(first, 0x00) & ct_eq(second, 0x02);
    let mut looking = 0xFFu8;
    let mut zero_at = 0usize;
    for (i, b) in (2usize..).zip(bytes) {
        let is_zero = ct_eq(b, 0x00);
        zero_at = select(widen(looking & is_zero), i, zero_at);
        looking &= !is_zero;
    }
    // The separator must exist and follow at least eight padding bytes (index ≥ 10).
    good &= !looking & ct_ge(zero_at, 10);
    if std::hint::black_box(good) != 0xFF {
        return None;
    }
    Some(Zeroizing::new(em.get(zero_at + 1..)?.to_vec()))
}

/// EME-OAEP encoding (RFC 8017 7.1.1 step 2) of `msg` for a k-byte modulus, with a fresh
/// random seed. `None` when the message is longer than k − 2·hLen − 2.
pub(crate) fn eme_oaep_encode(
    msg: &[u8],
    k: usize,
    hash: HashAlg,
    mgf: HashAlg,
    label: &[u8],
    rng: &mut impl rand::RngCore,
) -> Option<Zeroizing<Vec<u8>>> {
    let h_len = hash.output_len();
    let ps_len = k.checked_sub(msg.len() + 2 * h_len + 2)?;
    // DB = lHash ‖ PS ‖ 01 ‖ M.
    let mut db = Zeroizing::new(hash.digest(label));
    db.resize(h_len + ps_len, 0);
    db.push(0x01);
    db.extend_from_slice(msg);
    let mut seed = Zeroizing::new(vec![0u8; h_len]);
    rng.fill_bytes(&mut seed);
    mgf1_xor(mgf, &seed, &mut db);
    mgf1_xor(mgf, &db, &mut seed);
    let mut em = Zeroizing::new(Vec::with_capacity(k));
    em.push(0x00);
    em.extend_from_slice(&seed);
    em.extend_from_slice(&db);
    Some(em)
}

/// EME-OAEP decoding (RFC 8017 7.1.2 step 3) of a decrypted block of k bytes. Constant-time
/// up to the final accept/reject, which does not say which check failed.
pub(crate) fn eme_oaep_decode(
    em: &[u8],
    hash: HashAlg,
    mgf: HashAlg,
    label: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let h_len = hash.output_len();
    // The length is public: a modulus too short for this hash fails before any secret is used.
    if em.len() < 2 * h_len + 2 {
        return None;
    }
    let (&y, rest) = em.split_first()?;
    let (masked_seed, masked_db) = rest.split_at_checked(h_len)?;
    let mut seed = Zeroizing::new(masked_seed.to_vec());
    mgf1_xor(mgf, masked_db, &mut seed);
    let mut db = Zeroizing::new(masked_db.to_vec());
    mgf1_xor(mgf, &seed, &mut db);

    let l_hash = hash.digest(label);
    let (l_hash_got, after) = db.split_at_checked(h_len)?;
    let mut good = ct_eq(y, 0x00);
    for (a, b) in l_hash_got.iter().zip(l_hash.iter()) {
        good &= ct_eq(*a, *b);
    }
    // PS is zeros, then 01, then the message.
    let mut looking = 0xFFu8;
    let mut one_at = 0usize;
    for (i, &b) in after.iter().enumerate() {
        let is_one = ct_eq(b, 0x01);
        let is_zero = ct_eq(b, 0x00);
        one_at = select(widen(looking & is_one), i, one_at);
        good &= !(looking & !is_one & !is_zero);
        looking &= !is_one;
    }
    good &= !looking;
    if std::hint::black_box(good) != 0xFF {
        return None;
    }
    Some(Zeroizing::new(after.get(one_at + 1..)?.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_helpers() {
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 0x7F, 0x80, 0xFF, a] {
                assert_eq!(ct_eq(a, b), if a == b { 0xFF } else { 0 });
            }
        }
        assert_eq!(select(widen(0xFF), 3, 4), 3);
        assert_eq!(select(widen(0x00), 3, 4), 4);
        assert_eq!(ct_ge(10, 10), 0xFF);
        assert_eq!(ct_ge(11, 10), 0xFF);
        assert_eq!(ct_ge(9, 10), 0x00);
        assert_eq!(ct_ge(0, 10), 0x00);
    }

    #[test]
    fn pkcs1_v15_block() {
        let em = emsa_pkcs1_v15(b"abc", 16).unwrap();
        assert_eq!(hex::encode(&em), "0001ffffffffffffffffffff00616263");
        assert!(emsa_pkcs1_v15(&[0; 5], 16).is_some());
        assert!(
            emsa_pkcs1_v15(&[0; 6], 16).is_none(),
            "needs eight FF bytes"
        );
    }

    fn type2(k: usize, ps_len: usize, msg: &[u8]) -> Vec<u8> {
        let mut em = vec![0x00, 0x02];
        em.extend(std::iter::repeat_n(0x5A, ps_len));
        em.push(0);
        em.extend_from_slice(msg);
        assert_eq!(em.len(), k);
        em
    }

    #[test]
    fn pkcs1_v15_decode_cases() {
        let em = type2(32, 18, b"hello world");
        assert_eq!(
            eme_pkcs1_v15_decode(&em).unwrap().as_slice(),
            b"hello world"
        );
        // Empty message: separator is the last byte.
        let em = type2(32, 29, b"");
        assert_eq!(eme_pkcs1_v15_decode(&em).unwrap().as_slice(), b"");
        // Exactly eight padding bytes is the minimum.
        let em = type2(32, 8, &[7; 21]);
        assert_eq!(eme_pkcs1_v15_decode(&em).unwrap().as_slice(), &[7; 21]);
        let em = type2(32, 7, &[7; 22]);
        assert!(eme_pkcs1_v15_decode(&em).is_none());
        // A zero inside the message is message data, not a second separator.
        let em = type2(
            32,
            10,
            &[1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        );
        assert_eq!(eme_pkcs1_v15_decode(&em).unwrap()[..3], [1, 0, 2]);
        let mut bad = type2(32, 18, b"hello world");
        bad[0] = 1;
        assert!(eme_pkcs1_v15_decode(&bad).is_none());
        let mut bad = type2(32, 18, b"hello world");
        bad[1] = 1;
        assert!(eme_pkcs1_v15_decode(&bad).is_none());
        // No separator at all.
        let mut bad = vec![0x00, 0x02];
        bad.extend([0x11; 30]);
        assert!(eme_pkcs1_v15_decode(&bad).is_none());
        assert!(eme_pkcs1_v15_decode(&[0]).is_none());
        assert!(eme_pkcs1_v15_decode(&[]).is_none());
    }

    #[test]
    fn pss_encode_verify_round_trip_and_tamper() {
        for (em_bits, hash, mgf, salt_len) in [
            (2047, HashAlg::Sha256, HashAlg::Sha256, 32),
            (2048, HashAlg::Sha384, HashAlg::Sha1, 0),
            (1024, HashAlg::Sha512, HashAlg::Sha256, 62),
            (1029, HashAlg::Sha1, HashAlg::Sha512, 20),
        ] {
            let m_hash = hash.digest(b"message");
            let salt = vec![0xA5; salt_len];
            let em = emsa_pss_encode(&m_hash, em_bits, hash, mgf, &salt).unwrap();
            assert_eq!(em.len(), em_bits.div_ceil(8));
            assert!(emsa_pss_verify(&m_hash, &em, em_bits, hash, mgf, salt_len));
            assert!(!emsa_pss_verify(
                &m_hash,
                &em,
                em_bits,
                hash,
                mgf,
                salt_len + 1
            ));
            assert!(!emsa_pss_verify(
                &m_hash,
                &em,
                em_bits,
                hash,
                HashAlg::Sha224,
                salt_len
            ));
            let other = hash.digest(b"other");
            assert!(!emsa_pss_verify(&other, &em, em_bits, hash, mgf, salt_len));
            for i in [0, em.len() / 2, em.len() - 2, em.len() - 1] {
                let mut t = em.clone();
                t[i] ^= 0x01;
                assert!(!emsa_pss_verify(&m_hash, &t, em_bits, hash, mgf, salt_len));
            }
        }
        // Salt too long for the modulus.
        let m_hash = HashAlg::Sha512.digest(b"x");
        assert!(
            emsa_pss_encode(&m_hash, 1024, HashAlg::Sha512, HashAlg::Sha512, &[0; 63]).is_none()
        );
        assert!(
            emsa_pss_encode(&m_hash[1..], 2047, HashAlg::Sha512, HashAlg::Sha512, &[]).is_none()
        );
    }

    #[test]
    fn oaep_encode_decode_round_trip_and_tamper() {
        let mut rng = rand::rngs::OsRng;
        for (k, hash, mgf, label) in [
            (256, HashAlg::Sha1, HashAlg::Sha1, &b""[..]),
            (256, HashAlg::Sha256, HashAlg::Sha1, &b"label"[..]),
            (
                384,
                HashAlg::Sha512,
                HashAlg::Sha384,
                &[0xFF, 0x00, 0x80][..],
            ),
        ] {
            let max = k - 2 * hash.output_len() - 2;
            for msg in [&b""[..], b"secret", &vec![0x42; max]] {
                let em = eme_oaep_encode(msg, k, hash, mgf, label, &mut rng).unwrap();
                assert_eq!(em.len(), k);
                assert_eq!(
                    eme_oaep_decode(&em, hash, mgf, label).unwrap().as_slice(),
                    msg
                );
                assert!(eme_oaep_decode(&em, hash, mgf, b"other").is_none());
                assert!(eme_oaep_decode(&em, HashAlg::Sha224, mgf, label).is_none());
                for i in [0, 1, hash.output_len() + 1, k - 1] {
                    let mut t = em.clone();
                    t[i] ^= 0x80;
                    assert!(eme_oaep_decode(&t, hash, mgf, label).is_none(), "byte {i}");
                }
            }
            assert!(eme_oaep_encode(&vec![0; max + 1], k, hash, mgf, label, &mut rng).is_none());
        }
        assert!(eme_oaep_decode(&[0; 41], HashAlg::Sha1, HashAlg::Sha1, b"").is_none());
    }
}
