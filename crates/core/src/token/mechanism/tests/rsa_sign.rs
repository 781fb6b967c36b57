//! RSA signatures: every mechanism through the software card, both verifiers, the limits.

use super::*;

#[test]
fn rsa_pkcs1_hashing_mechanisms_round_trip() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let data = b"the data to be signed, long enough to span several update calls";
    for h in HASHES {
        let m = mech(pkcs1_mech(h));
        let sig = rsa_sign(key, &m, data, usize::MAX);
        assert_eq!(sig.len(), 256);
        // Multi-part gives the same (deterministic) signature.
        assert_eq!(rsa_sign(key, &m, data, 7), sig);
        assert_eq!(rsa_sign(key, &m, data, 1), sig);
        // The rsa crate's verifier, with a DigestInfo built independently of ours.
        let hash = h.digest(data);
        pk_rsa(&pk)
            .verify(Pkcs1v15Sign::new_unprefixed(), &digest_info(h, &hash), &sig)
            .unwrap();
        if h != HashAlg::Sha1 {
            let scheme = match h {
                HashAlg::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
                HashAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
                HashAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
                _ => Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            // Same as the rsa crate signing with the private key.
            assert_eq!(key.sign(scheme.clone(), &hash).unwrap(), sig);
            pk_rsa(&pk).verify(scheme, &hash, &sig).unwrap();
        }
        // Ours, single- and multi-part.
        verify(&m, &pk, data, &sig).unwrap();
        let mut op = VerifyOp::new(&m, pk.key_info()).unwrap();
        for part in data.chunks(5) {
            op.update(part).unwrap();
        }
        op.verify(&pk, &sig).unwrap();
        // Tampering.
        assert_eq!(
            rv(verify(&m, &pk, b"other data", &sig)),
            CKR_SIGNATURE_INVALID
        );
        let mut bad = sig.clone();
        bad[100] ^= 0x10;
        assert_eq!(rv(verify(&m, &pk, data, &bad)), CKR_SIGNATURE_INVALID);
        assert_eq!(
            rv(verify(&m, &pk, data, &sig[1..])),
            CKR_SIGNATURE_LEN_RANGE
        );
        let mut long = sig.clone();
        long.push(0);
        assert_eq!(rv(verify(&m, &pk, data, &long)), CKR_SIGNATURE_LEN_RANGE);
        // A signature with another hash's mechanism does not verify.
        let other = if h == HashAlg::Sha256 {
            HashAlg::Sha384
        } else {
            HashAlg::Sha256
        };
        assert_eq!(
            rv(verify(&mech(pkcs1_mech(other)), &pk, data, &sig)),
            CKR_SIGNATURE_INVALID
        );
    }
}

#[test]
fn rsa_pkcs_raw_signs_the_callers_digest_info() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let m = mech(CKM_RSA_PKCS);
    let hash = sha2::Sha256::digest(b"message");
    let info = digest_info(HashAlg::Sha256, &hash);
    let sig = rsa_sign(key, &m, &info, usize::MAX);
    // Identical to SHA256_RSA_PKCS over the message and to the rsa crate's signature.
    assert_eq!(
        sig,
        rsa_sign(key, &mech(CKM_SHA256_RSA_PKCS), b"message", 3)
    );
    assert_eq!(
        key.sign(Pkcs1v15Sign::new::<sha2::Sha256>(), &hash)
            .unwrap(),
        sig
    );
    verify(&m, &pk, &info, &sig).unwrap();
    assert_eq!(rv(verify(&m, &pk, &info[1..], &sig)), CKR_SIGNATURE_INVALID);
    // Signatures the rsa crate made verify with ours.
    let theirs = key
        .sign(Pkcs1v15Sign::new_unprefixed(), b"any raw data")
        .unwrap();
    verify(&m, &pk, b"any raw data", &theirs).unwrap();

    // Length limit: k − 11 bytes, also when reached over several parts.
    let k = key.size();
    rsa_sign(key, &m, &vec![0x33; k - 11], usize::MAX);
    let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
    assert_eq!(rv(op.update(&vec![0; k - 10])), CKR_DATA_LEN_RANGE);
    let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
    op.update(&vec![0; k - 11]).unwrap();
    assert_eq!(rv(op.update(&[0])), CKR_DATA_LEN_RANGE);
    let mut op = VerifyOp::new(&m, pk.key_info()).unwrap();
    assert_eq!(rv(op.update(&vec![0; k])), CKR_DATA_LEN_RANGE);
}

#[test]
fn rsa_x509_round_trip_and_limits() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let m = mech(CKM_RSA_X_509);
    let k = key.size();
    for data in [&b"short"[..], &[0x00, 0x01, 0x02][..], &vec![0x5A; k][..]] {
        let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
        op.update(data).unwrap();
        let block = op.card_input().unwrap();
        assert_eq!(block.len(), k);
        assert_eq!(&block[k - data.len()..], data, "left-padded");
        assert!(block[..k - data.len()].iter().all(|&b| b == 0));
        let sig = op.finish(&card_rsa(key, &block)).unwrap();
        // The public operation gives the block back.
        let back = rsa::hazmat::rsa_encrypt(pk_rsa(&pk), &BigUint::from_bytes_be(&sig)).unwrap();
        assert_eq!(fixed_width(&back.to_bytes_be(), k).unwrap(), block.to_vec());
        verify(&m, &pk, data, &sig).unwrap();
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert_eq!(rv(verify(&m, &pk, data, &bad)), CKR_SIGNATURE_INVALID);
    }
    let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
    assert_eq!(rv(op.update(&vec![1; k + 1])), CKR_DATA_LEN_RANGE);
    // k bytes with more bits than the modulus cannot be below it (a block of the modulus'
    // length but above it is for the card to refuse: the operation does not know n).
    let odd = odd_rsa_key();
    let mut op = SignOp::new(&m, rsa_info(odd)).unwrap();
    op.update(&[0xFF; 129]).unwrap();
    assert_eq!(rv(op.card_input()), CKR_DATA_INVALID);
    let mut op = SignOp::new(&m, rsa_info(odd)).unwrap();
    op.update(&[0x01; 129]).unwrap();
    op.card_input().unwrap();
    // A signature equal to or above the modulus is invalid, not an error of another kind.
    let n = pk.modulus().unwrap();
    assert_eq!(rv(verify(&m, &pk, b"x", &n)), CKR_SIGNATURE_INVALID);
}

#[test]
fn rsa_pss_round_trips() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let data = b"PSS-signed data";
    for h in HASHES {
        for (mgf, salt_len) in [
            (h, h.output_len()),
            (h, 0),
            (HashAlg::Sha1, 17),
            (HashAlg::Sha512, h.output_len()),
        ] {
            let m = pss(pss_mech(h), h, mgf, salt_len);
            let sig = rsa_sign(key, &m, data, 4);
            verify(&m, &pk, data, &sig).unwrap();
            let hash = h.digest(data);
            // Raw CKM_RSA_PKCS_PSS over the hash: same verification.
            let raw = pss(CKM_RSA_PKCS_PSS, h, mgf, salt_len);
            verify(&raw, &pk, &hash, &sig).unwrap();
            let raw_sig = rsa_sign(key, &raw, &hash, usize::MAX);
            verify(&m, &pk, data, &raw_sig).unwrap();
            if mgf == h {
                // The rsa crate's verifier accepts ours, and ours accepts the rsa crate's.
                pk_rsa(&pk)
                    .verify(rsa_crate_pss(h, salt_len), &hash, &sig)
                    .unwrap();
                let theirs = key
                    .sign_with_rng(&mut OsRng, rsa_crate_pss(h, salt_len), &hash)
                    .unwrap();
                verify(&m, &pk, data, &theirs).unwrap();
            }
            // PSS is randomised (when there is a salt): two signatures differ, both verify.
            if salt_len > 0 {
                assert_ne!(rsa_sign(key, &m, data, usize::MAX), sig);
            }
            // Wrong salt length, wrong MGF, wrong data, tampered signature.
            let other_salt = pss(pss_mech(h), h, mgf, salt_len + 1);
            assert_eq!(
                rv(verify(&other_salt, &pk, data, &sig)),
                CKR_SIGNATURE_INVALID
            );
            let other_mgf = pss(
                pss_mech(h),
                h,
                if mgf == HashAlg::Sha224 {
                    HashAlg::Sha256
                } else {
                    HashAlg::Sha224
                },
                salt_len,
            );
            assert_eq!(
                rv(verify(&other_mgf, &pk, data, &sig)),
                CKR_SIGNATURE_INVALID
            );
            assert_eq!(
                rv(verify(&m, &pk, b"PSS-signed datA", &sig)),
                CKR_SIGNATURE_INVALID
            );
            let mut bad = sig.clone();
            bad[255] ^= 0x80;
            assert_eq!(rv(verify(&m, &pk, data, &bad)), CKR_SIGNATURE_INVALID);
            assert_eq!(
                rv(verify(&m, &pk, data, &sig[..255])),
                CKR_SIGNATURE_LEN_RANGE
            );
        }
    }
}

#[test]
fn rsa_pss_raw_input_must_be_one_hash() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let m = pss(CKM_RSA_PKCS_PSS, HashAlg::Sha256, HashAlg::Sha256, 32);
    let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
    op.update(&[0; 31]).unwrap();
    assert_eq!(rv(op.card_input()), CKR_DATA_LEN_RANGE);
    let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
    assert_eq!(rv(op.update(&[0; 33])), CKR_DATA_LEN_RANGE);
    // In parts is fine as long as the total is one hash.
    let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
    op.update(&[1; 16]).unwrap();
    op.update(&[1; 16]).unwrap();
    let block = op.card_input().unwrap();
    let sig = op.finish(&card_rsa(key, &block)).unwrap();
    verify(&m, &pk, &[1; 32], &sig).unwrap();
    assert_eq!(rv(verify(&m, &pk, &[1; 20], &sig)), CKR_DATA_LEN_RANGE);
}

#[test]
fn rsa_pss_with_modulus_of_8n_plus_1_bits() {
    let key = odd_rsa_key();
    assert_eq!(key.n().bits(), 1025);
    assert_eq!(key.size(), 129);
    let pk = PublicKey::Rsa(key.to_public_key());
    for (h, mgf, salt_len) in [
        (HashAlg::Sha256, HashAlg::Sha256, 32),
        (HashAlg::Sha512, HashAlg::Sha512, 62),
        (HashAlg::Sha384, HashAlg::Sha1, 20),
    ] {
        let m = pss(pss_mech(h), h, mgf, salt_len);
        let mut op = SignOp::new(&m, rsa_info(key)).unwrap();
        op.update(b"odd").unwrap();
        let block = op.card_input().unwrap();
        assert_eq!(block.len(), 129);
        assert_eq!(block[0], 0, "emLen = k − 1");
        let sig = op.finish(&card_rsa(key, &block)).unwrap();
        verify(&m, &pk, b"odd", &sig).unwrap();
        if mgf == h {
            pk_rsa(&pk)
                .verify(rsa_crate_pss(h, salt_len), &h.digest(b"odd"), &sig)
                .unwrap();
        }
    }
    // PKCS#1 v1.5 on the same key, for completeness.
    let sig = rsa_sign(key, &mech(CKM_SHA256_RSA_PKCS), b"odd", 1);
    verify(&mech(CKM_SHA256_RSA_PKCS), &pk, b"odd", &sig).unwrap();
}

#[test]
fn rsa_finish_fixes_the_card_answer_width() {
    let op = SignOp::new(
        &mech(CKM_SHA256_RSA_PKCS),
        KeyInfo::Rsa { modulus_bits: 2048 },
    )
    .unwrap();
    assert_eq!(op.signature_len(), 256);
    let short = vec![7u8; 255];
    let fixed = op.finish(&short).unwrap();
    assert_eq!(fixed.len(), 256);
    assert_eq!(fixed[0], 0);
    let mut long = vec![0u8];
    long.extend(vec![9u8; 256]);
    assert_eq!(op.finish(&long).unwrap(), vec![9u8; 256]);
    long[0] = 1;
    assert_eq!(rv(op.finish(&long)), CKR_DEVICE_ERROR);
}

#[test]
fn operations_check_their_function_and_state() {
    let rsa = KeyInfo::Rsa { modulus_bits: 2048 };
    let m = oaep(HashAlg::Sha256, HashAlg::Sha256, b"");
    assert_eq!(rv(SignOp::new(&m, rsa)), CKR_MECHANISM_INVALID);
    assert_eq!(rv(VerifyOp::new(&m, rsa)), CKR_MECHANISM_INVALID);
    assert_eq!(
        rv(SignOp::new(&mech(CKM_SHA256), rsa)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(SignOp::new(&mech(CKM_RSA_PKCS_KEY_PAIR_GEN), rsa)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(SignOp::new(&mech(CKM_ECDSA), rsa)),
        CKR_KEY_TYPE_INCONSISTENT
    );

    let mut op = SignOp::new(&mech(CKM_SHA256_RSA_PKCS), rsa).unwrap();
    op.update(b"abc").unwrap();
    let first = op.card_input().unwrap();
    assert_eq!(
        op.card_input().unwrap(),
        first,
        "card_input can be asked again"
    );
    assert!(op.update(b"more").is_err(), "no data after the card input");

    // A verify op set up for one key type refuses another key.
    let ec_pk = PublicKey::P256(p256::SecretKey::random(&mut OsRng).public_key());
    let op = VerifyOp::new(&mech(CKM_SHA256_RSA_PKCS), rsa).unwrap();
    assert_eq!(rv(op.verify(&ec_pk, &[0; 256])), CKR_KEY_TYPE_INCONSISTENT);
    let op = VerifyOp::new(&mech(CKM_ECDSA), KeyInfo::Ec { curve: Curve::P384 }).unwrap();
    assert_eq!(op.signature_len(), 96);
    assert_eq!(rv(op.verify(&ec_pk, &[0; 64])), CKR_KEY_TYPE_INCONSISTENT);
}
