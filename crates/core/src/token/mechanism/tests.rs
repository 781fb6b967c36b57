//! Round trips of every mechanism against software keys standing in for the card: the card's
//! raw RSA operation is `rsa::hazmat::rsa_decrypt_and_check`, its ECDSA is p256/p384
//! `sign_prehash`, and what comes out is checked with the RustCrypto verifiers as well as ours.

use super::*;
use crate::token::{MechParam, Mechanism};
use der::Encode;
use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use ecdsa::signature::Verifier;
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPrivateKey};
use sha2::Digest;

mod crypt;
mod ecdsa_sign;
mod rsa_sign;

/// A 2048-bit key, generated once per test run.
pub(crate) fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: once_cell::sync::Lazy<RsaPrivateKey> =
        once_cell::sync::Lazy::new(|| RsaPrivateKey::new(&mut OsRng, 2048).expect("keygen"));
    &KEY
}

/// A key whose modulus has 8n+1 bits, where EMSA-PSS's emLen is one byte shorter than k.
fn odd_rsa_key() -> &'static RsaPrivateKey {
    static KEY: once_cell::sync::Lazy<RsaPrivateKey> =
        once_cell::sync::Lazy::new(|| RsaPrivateKey::new(&mut OsRng, 1025).expect("keygen"));
    &KEY
}

fn mech(ty: CK_MECHANISM_TYPE) -> Mechanism {
    Mechanism {
        ty,
        param: MechParam::None,
    }
}

fn pss(ty: CK_MECHANISM_TYPE, hash: HashAlg, mgf: HashAlg, salt_len: usize) -> Mechanism {
    Mechanism {
        ty,
        param: MechParam::Pss {
            hash: hash.mechanism(),
            mgf: mgf.mgf(),
            salt_len,
        },
    }
}

fn oaep(hash: HashAlg, mgf: HashAlg, label: &[u8]) -> Mechanism {
    Mechanism {
        ty: CKM_RSA_PKCS_OAEP,
        param: MechParam::Oaep {
            hash: hash.mechanism(),
            mgf: mgf.mgf(),
            label: label.to_vec(),
        },
    }
}

fn rsa_info(key: &RsaPrivateKey) -> KeyInfo {
    KeyInfo::Rsa {
        modulus_bits: key.n().bits(),
    }
}

/// The card: raw RSA private-key operation, answer k bytes long (as PIV cards give it).
fn card_rsa(key: &RsaPrivateKey, block: &[u8]) -> Vec<u8> {
    let m =
        rsa::hazmat::rsa_decrypt_and_check(key, None::<&mut OsRng>, &BigUint::from_bytes_be(block))
            .expect("raw private op");
    fixed_width(&m.to_bytes_be(), key.size()).unwrap()
}

/// Signs `data` (fed in `chunks`-sized parts) with the software "card".
fn rsa_sign(key: &RsaPrivateKey, m: &Mechanism, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut op = SignOp::new(m, rsa_info(key)).unwrap();
    for part in data.chunks(chunk.max(1)) {
        op.update(part).unwrap();
    }
    let block = op.card_input().unwrap();
    assert_eq!(block.len(), key.size());
    let sig = op.finish(&card_rsa(key, &block)).unwrap();
    assert_eq!(sig.len(), op.signature_len());
    sig
}

fn verify(m: &Mechanism, pk: &PublicKey, data: &[u8], sig: &[u8]) -> Result<()> {
    let mut op = VerifyOp::new(m, pk.key_info())?;
    op.update(data)?;
    op.verify(pk, sig)
}

fn rv<T: std::fmt::Debug>(r: Result<T>) -> CK_RV {
    r.unwrap_err().rv()
}

/// DigestInfo built with the der crate, independent of the hand-written prefixes.
fn digest_info(hash: HashAlg, value: &[u8]) -> Vec<u8> {
    let oid = match hash {
        HashAlg::Sha1 => "1.3.14.3.2.26",
        HashAlg::Sha224 => "2.16.840.1.101.3.4.2.4",
        HashAlg::Sha256 => "2.16.840.1.101.3.4.2.1",
        HashAlg::Sha384 => "2.16.840.1.101.3.4.2.2",
        HashAlg::Sha512 => "2.16.840.1.101.3.4.2.3",
    };
    let alg = spki::AlgorithmIdentifierOwned {
        oid: der::asn1::ObjectIdentifier::new_unwrap(oid),
        parameters: Some(der::asn1::Null.into()),
    };
    let mut body = alg.to_der().unwrap();
    body.extend(
        der::asn1::OctetString::new(value)
            .unwrap()
            .to_der()
            .unwrap(),
    );
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

const HASHES: [HashAlg; 5] = [
    HashAlg::Sha1,
    HashAlg::Sha224,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

fn pkcs1_mech(h: HashAlg) -> CK_MECHANISM_TYPE {
    match h {
        HashAlg::Sha1 => CKM_SHA1_RSA_PKCS,
        HashAlg::Sha224 => CKM_SHA224_RSA_PKCS,
        HashAlg::Sha256 => CKM_SHA256_RSA_PKCS,
        HashAlg::Sha384 => CKM_SHA384_RSA_PKCS,
        HashAlg::Sha512 => CKM_SHA512_RSA_PKCS,
    }
}

fn pss_mech(h: HashAlg) -> CK_MECHANISM_TYPE {
    match h {
        HashAlg::Sha1 => CKM_SHA1_RSA_PKCS_PSS,
        HashAlg::Sha224 => CKM_SHA224_RSA_PKCS_PSS,
        HashAlg::Sha256 => CKM_SHA256_RSA_PKCS_PSS,
        HashAlg::Sha384 => CKM_SHA384_RSA_PKCS_PSS,
        HashAlg::Sha512 => CKM_SHA512_RSA_PKCS_PSS,
    }
}

fn ecdsa_mech(h: HashAlg) -> CK_MECHANISM_TYPE {
    match h {
        HashAlg::Sha1 => CKM_ECDSA_SHA1,
        HashAlg::Sha224 => CKM_ECDSA_SHA224,
        HashAlg::Sha256 => CKM_ECDSA_SHA256,
        HashAlg::Sha384 => CKM_ECDSA_SHA384,
        HashAlg::Sha512 => CKM_ECDSA_SHA512,
    }
}

/// The RSA key inside a [`PublicKey`].
fn pk_rsa(pk: &PublicKey) -> &rsa::RsaPublicKey {
    match pk {
        PublicKey::Rsa(k) => k,
        _ => panic!("not RSA"),
    }
}

/// The rsa crate's own PSS verifier (MGF1 hash = message hash).
fn rsa_crate_pss(hash: HashAlg, salt_len: usize) -> Pss {
    match hash {
        HashAlg::Sha1 => Pss::new_with_salt::<sha1::Sha1>(salt_len),
        HashAlg::Sha224 => Pss::new_with_salt::<sha2::Sha224>(salt_len),
        HashAlg::Sha256 => Pss::new_with_salt::<sha2::Sha256>(salt_len),
        HashAlg::Sha384 => Pss::new_with_salt::<sha2::Sha384>(salt_len),
        HashAlg::Sha512 => Pss::new_with_salt::<sha2::Sha512>(salt_len),
    }
}

// ---------------------------------------------------------------------------------------------
// Catalogue and parameters

#[test]
fn catalogue_is_complete_and_consistent() {
    let all = supported();
    assert_eq!(all.len(), 28);
    let mut sorted = all.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "no duplicates");
    for &m in all {
        let i = info(m).unwrap_or_else(|| panic!("info for {m:#x}"));
        assert!(i.ulMinKeySize <= i.ulMaxKeySize);
        assert_ne!(i.flags, 0);
    }
    assert!(info(CKM_MD5).is_none());
    assert!(info(CKM_AES_CBC).is_none());

    let rsa_pkcs = info(CKM_RSA_PKCS).unwrap();
    assert_eq!((rsa_pkcs.ulMinKeySize, rsa_pkcs.ulMaxKeySize), (2048, 4096));
    assert_eq!(
        rsa_pkcs.flags,
        CKF_HW | CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT
    );
    assert_eq!(info(CKM_RSA_X_509).unwrap().flags, rsa_pkcs.flags);
    assert_eq!(
        info(CKM_RSA_PKCS_OAEP).unwrap().flags,
        CKF_HW | CKF_ENCRYPT | CKF_DECRYPT
    );
    for h in HASHES {
        assert_eq!(
            info(pkcs1_mech(h)).unwrap().flags,
            CKF_HW | CKF_SIGN | CKF_VERIFY
        );
        assert_eq!(
            info(pss_mech(h)).unwrap().flags,
            CKF_HW | CKF_SIGN | CKF_VERIFY
        );
        let e = info(ecdsa_mech(h)).unwrap();
        assert_eq!((e.ulMinKeySize, e.ulMaxKeySize), (256, 384));
        assert_eq!(
            e.flags,
            CKF_HW | CKF_SIGN | CKF_VERIFY | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS
        );
        let d = info(h.mechanism()).unwrap();
        assert_eq!(
            (d.ulMinKeySize, d.ulMaxKeySize, d.flags),
            (0, 0, CKF_DIGEST)
        );
        assert_eq!(signature_hash(pkcs1_mech(h)), Some(h));
        assert_eq!(signature_hash(pss_mech(h)), Some(h));
        assert_eq!(signature_hash(ecdsa_mech(h)), Some(h));
    }
    let derive = info(CKM_ECDH1_DERIVE).unwrap();
    assert_eq!(derive.flags & (CKF_HW | CKF_DERIVE), CKF_HW | CKF_DERIVE);
    assert_ne!(derive.flags & CKF_EC_NAMEDCURVE, 0);
    assert_eq!(
        info(CKM_RSA_PKCS_KEY_PAIR_GEN).unwrap().flags,
        CKF_HW | CKF_GENERATE_KEY_PAIR
    );
    let ec_gen = info(CKM_EC_KEY_PAIR_GEN).unwrap();
    assert_eq!(
        ec_gen.flags,
        CKF_HW | CKF_GENERATE_KEY_PAIR | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS
    );
    assert!(allows(CKM_RSA_PKCS, CKF_DECRYPT));
    assert!(!allows(CKM_SHA256_RSA_PKCS, CKF_DECRYPT));
    assert!(!allows(CKM_MD5, CKF_DIGEST));

    for (ec, key) in [
        (false, KeyInfo::Rsa { modulus_bits: 2048 }),
        (true, KeyInfo::Ec { curve: Curve::P256 }),
    ] {
        for &m in mechanisms_for_key(ec) {
            assert!(all.contains(&m));
            let param = match m {
                CKM_RSA_PKCS_OAEP => oaep(HashAlg::Sha256, HashAlg::Sha256, b"").param,
                _ if is_pss(m) => {
                    let h = signature_hash(m).unwrap_or(HashAlg::Sha256);
                    pss(m, h, h, 0).param
                }
                CKM_ECDH1_DERIVE => MechParam::Ecdh {
                    kdf: CKD_NULL,
                    shared_data: vec![],
                    public_data: p256::SecretKey::random(&mut OsRng)
                        .public_key()
                        .to_sec1_bytes()
                        .to_vec(),
                },
                _ => MechParam::None,
            };
            check_params(&Mechanism { ty: m, param }, &key).unwrap();
        }
    }
}

#[test]
fn check_params_rejects_mismatches() {
    let rsa = KeyInfo::Rsa { modulus_bits: 2048 };
    let ec = KeyInfo::Ec { curve: Curve::P256 };
    assert_eq!(
        rv(check_params(&mech(CKM_MD5_RSA_PKCS), &rsa)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(check_params(&mech(CKM_SHA256), &rsa)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(check_params(&mech(CKM_RSA_PKCS), &ec)),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(check_params(&mech(CKM_ECDSA), &rsa)),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(check_params(&mech(CKM_RSA_PKCS_KEY_PAIR_GEN), &ec)),
        CKR_KEY_TYPE_INCONSISTENT
    );
    check_params(&mech(CKM_RSA_PKCS_KEY_PAIR_GEN), &rsa).unwrap();
    check_params(&mech(CKM_EC_KEY_PAIR_GEN), &ec).unwrap();
    check_params(&mech(CKM_ECDSA_SHA256), &ec).unwrap();

    // Parameters where none belongs.
    let with = |ty, bytes: Vec<u8>| Mechanism {
        ty,
        param: MechParam::Other(bytes),
    };
    check_params(&with(CKM_RSA_PKCS, vec![]), &rsa).unwrap();
    assert_eq!(
        rv(check_params(&with(CKM_RSA_PKCS, vec![0]), &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        rv(check_params(&with(CKM_ECDSA, vec![0]), &ec)),
        CKR_MECHANISM_PARAM_INVALID
    );
    let pss_on_pkcs = Mechanism {
        ty: CKM_SHA256_RSA_PKCS,
        ..pss(CKM_RSA_PKCS_PSS, HashAlg::Sha256, HashAlg::Sha256, 32)
    };
    assert_eq!(
        rv(check_params(&pss_on_pkcs, &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );

    // PSS.
    let p = |ty, h: HashAlg, m: HashAlg, s| check_params(&pss(ty, h, m, s), &rsa);
    p(CKM_RSA_PKCS_PSS, HashAlg::Sha256, HashAlg::Sha256, 32).unwrap();
    p(CKM_SHA256_RSA_PKCS_PSS, HashAlg::Sha256, HashAlg::Sha1, 0).unwrap();
    assert_eq!(
        rv(p(CKM_SHA256_RSA_PKCS_PSS, HashAlg::Sha1, HashAlg::Sha1, 20)),
        CKR_MECHANISM_PARAM_INVALID,
        "PSS hash must be the mechanism's"
    );
    // emLen = 256 for 2048 bits: the salt may take 256 − 64 − 2 = 190 bytes with SHA-512.
    p(
        CKM_SHA512_RSA_PKCS_PSS,
        HashAlg::Sha512,
        HashAlg::Sha512,
        190,
    )
    .unwrap();
    assert_eq!(
        rv(p(
            CKM_SHA512_RSA_PKCS_PSS,
            HashAlg::Sha512,
            HashAlg::Sha512,
            191
        )),
        CKR_MECHANISM_PARAM_INVALID
    );
    // 1025 bits: emLen = 128.
    let small = KeyInfo::Rsa { modulus_bits: 1025 };
    check_params(
        &pss(CKM_RSA_PKCS_PSS, HashAlg::Sha512, HashAlg::Sha512, 62),
        &small,
    )
    .unwrap();
    assert!(check_params(
        &pss(CKM_RSA_PKCS_PSS, HashAlg::Sha512, HashAlg::Sha512, 63),
        &small
    )
    .is_err());
    let bad_hash = Mechanism {
        ty: CKM_RSA_PKCS_PSS,
        param: MechParam::Pss {
            hash: CKM_MD5,
            mgf: CKG_MGF1_SHA256,
            salt_len: 0,
        },
    };
    assert_eq!(
        rv(check_params(&bad_hash, &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );
    let bad_mgf = Mechanism {
        ty: CKM_RSA_PKCS_PSS,
        param: MechParam::Pss {
            hash: CKM_SHA256,
            mgf: CKG_MGF1_SHA3_256,
            salt_len: 0,
        },
    };
    assert_eq!(
        rv(check_params(&bad_mgf, &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        rv(check_params(&mech(CKM_SHA256_RSA_PKCS_PSS), &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        rv(check_params(
            &pss(CKM_SHA256_RSA_PKCS_PSS, HashAlg::Sha256, HashAlg::Sha256, 0),
            &ec
        )),
        CKR_KEY_TYPE_INCONSISTENT
    );

    // OAEP.
    for h in HASHES {
        for m in HASHES {
            check_params(&oaep(h, m, b"x"), &rsa).unwrap();
        }
    }
    assert_eq!(
        rv(check_params(&mech(CKM_RSA_PKCS_OAEP), &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );
    let oaep_md5 = Mechanism {
        ty: CKM_RSA_PKCS_OAEP,
        param: MechParam::Oaep {
            hash: CKM_MD5,
            mgf: CKG_MGF1_SHA1,
            label: vec![],
        },
    };
    assert_eq!(
        rv(check_params(&oaep_md5, &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );
    let oaep_bad_mgf = Mechanism {
        ty: CKM_RSA_PKCS_OAEP,
        param: MechParam::Oaep {
            hash: CKM_SHA256,
            mgf: 0x99,
            label: vec![],
        },
    };
    assert_eq!(
        rv(check_params(&oaep_bad_mgf, &rsa)),
        CKR_MECHANISM_PARAM_INVALID
    );

    // ECDH.
    let point = p256::SecretKey::random(&mut OsRng)
        .public_key()
        .to_sec1_bytes()
        .to_vec();
    let ecdh = |kdf, shared: &[u8], public: &[u8]| Mechanism {
        ty: CKM_ECDH1_DERIVE,
        param: MechParam::Ecdh {
            kdf,
            shared_data: shared.to_vec(),
            public_data: public.to_vec(),
        },
    };
    check_params(&ecdh(CKD_NULL, b"", &point), &ec).unwrap();
    for bad in [
        ecdh(CKD_SHA256_KDF, b"", &point),
        ecdh(CKD_NULL, b"shared", &point),
        ecdh(CKD_NULL, b"", &point[..64]),
        mech(CKM_ECDH1_DERIVE),
    ] {
        assert_eq!(rv(check_params(&bad, &ec)), CKR_MECHANISM_PARAM_INVALID);
    }
    let p384 = KeyInfo::Ec { curve: Curve::P384 };
    assert_eq!(
        rv(check_params(&ecdh(CKD_NULL, b"", &point), &p384)),
        CKR_MECHANISM_PARAM_INVALID,
        "a P-256 point for a P-384 key"
    );
}

#[test]
fn digest_info_prefixes_match_der() {
    for h in HASHES {
        let value = h.digest(b"x");
        let mut ours = h.digest_info_prefix().to_vec();
        ours.extend_from_slice(&value);
        assert_eq!(ours, digest_info(h, &value), "{h:?}");
    }
}
