//! RSA encryption and decryption around the card, and ECDH parameters.

use super::*;

#[test]
fn rsa_pkcs_encrypt_decrypt_round_trip() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let m = mech(CKM_RSA_PKCS);
    let k = key.size();
    for msg in [&b""[..], b"secret", &vec![0xAB; k - 11]] {
        // Encrypted by the rsa crate, decrypted by "card" + ours.
        let ct = pk_rsa(&pk)
            .encrypt(&mut OsRng, Pkcs1v15Encrypt, msg)
            .unwrap();
        check_ciphertext_len(&m, k, ct.len()).unwrap();
        let plain = decrypt_unpad(&m, k, &card_rsa(key, &ct)).unwrap();
        assert_eq!(plain.as_slice(), msg);
        // Encrypted by ours, decrypted by the rsa crate.
        let ct = encrypt(&m, &pk, msg).unwrap();
        assert_eq!(ct.len(), k);
        assert_eq!(key.decrypt(Pkcs1v15Encrypt, &ct).unwrap(), msg);
    }
    assert_eq!(rv(encrypt(&m, &pk, &vec![0; k - 10])), CKR_DATA_LEN_RANGE);
    // A tampered ciphertext decrypts to garbage padding.
    let mut ct = encrypt(&m, &pk, b"secret").unwrap();
    ct[10] ^= 1;
    assert_eq!(
        rv(decrypt_unpad(&m, k, &card_rsa(key, &ct))),
        CKR_ENCRYPTED_DATA_INVALID
    );
    // A block with signature (type 1) padding is not an encryption block.
    let type1 = pad::emsa_pkcs1_v15(b"secret", k).unwrap();
    assert_eq!(rv(decrypt_unpad(&m, k, &type1)), CKR_ENCRYPTED_DATA_INVALID);
}

#[test]
fn rsa_oaep_encrypt_decrypt_round_trip() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let k = key.size();
    for h in HASHES {
        for mgf in [h, HashAlg::Sha1, HashAlg::Sha512] {
            for label in [&b""[..], b"a text label", &[0xFF, 0xFE, 0x00][..]] {
                let m = oaep(h, mgf, label);
                let max = k - 2 * h.output_len() - 2;
                for msg in [&b""[..], b"secret", &vec![0x42; max][..]] {
                    // Ours encrypts, the card + ours decrypt.
                    let ct = encrypt(&m, &pk, msg).unwrap();
                    assert_eq!(ct.len(), k);
                    let plain = decrypt_unpad(&m, k, &card_rsa(key, &ct)).unwrap();
                    assert_eq!(plain.as_slice(), msg);
                    // The rsa crate decrypts ours (it takes text labels only).
                    if let Ok(text) = std::str::from_utf8(label) {
                        let scheme = rsa::Oaep {
                            digest: h.hasher(),
                            mgf_digest: mgf.hasher(),
                            label: (!text.is_empty()).then(|| text.to_owned()),
                        };
                        assert_eq!(key.decrypt(scheme, &ct).unwrap(), msg);
                        // And ours decrypts the rsa crate's.
                        let scheme = rsa::Oaep {
                            digest: h.hasher(),
                            mgf_digest: mgf.hasher(),
                            label: (!text.is_empty()).then(|| text.to_owned()),
                        };
                        let theirs = pk_rsa(&pk).encrypt(&mut OsRng, scheme, msg).unwrap();
                        let plain = decrypt_unpad(&m, k, &card_rsa(key, &theirs)).unwrap();
                        assert_eq!(plain.as_slice(), msg);
                    }
                }
                assert_eq!(rv(encrypt(&m, &pk, &vec![0; max + 1])), CKR_DATA_LEN_RANGE);
                // Wrong label, wrong hash, tampered ciphertext.
                let ct = encrypt(&m, &pk, b"secret").unwrap();
                let raw = card_rsa(key, &ct);
                assert_eq!(
                    rv(decrypt_unpad(&oaep(h, mgf, b"wrong"), k, &raw)),
                    CKR_ENCRYPTED_DATA_INVALID
                );
                let other = if h == HashAlg::Sha256 {
                    HashAlg::Sha384
                } else {
                    HashAlg::Sha256
                };
                assert_eq!(
                    rv(decrypt_unpad(&oaep(other, mgf, label), k, &raw)),
                    CKR_ENCRYPTED_DATA_INVALID
                );
                let mut bad = ct.clone();
                bad[k / 2] ^= 0x20;
                assert_eq!(
                    rv(decrypt_unpad(&m, k, &card_rsa(key, &bad))),
                    CKR_ENCRYPTED_DATA_INVALID
                );
            }
        }
    }
    // A PKCS#1 v1.5 block is not an OAEP block.
    let ct = encrypt(&mech(CKM_RSA_PKCS), &pk, b"secret").unwrap();
    let m = oaep(HashAlg::Sha1, HashAlg::Sha1, b"");
    assert_eq!(
        rv(decrypt_unpad(&m, k, &card_rsa(key, &ct))),
        CKR_ENCRYPTED_DATA_INVALID
    );
    assert_eq!(
        rv(decrypt_unpad(
            &mech(CKM_RSA_PKCS_OAEP),
            k,
            &card_rsa(key, &ct)
        )),
        CKR_MECHANISM_PARAM_INVALID
    );
}

#[test]
fn rsa_x509_encrypt_decrypt_round_trip() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let m = mech(CKM_RSA_X_509);
    let k = key.size();
    let ct = encrypt(&m, &pk, b"raw").unwrap();
    assert_eq!(ct.len(), k);
    let plain = decrypt_unpad(&m, k, &card_rsa(key, &ct)).unwrap();
    assert_eq!(plain.len(), k);
    assert_eq!(&plain[k - 3..], b"raw");
    assert!(plain[..k - 3].iter().all(|&b| b == 0));
    assert_eq!(rv(encrypt(&m, &pk, &vec![1; k + 1])), CKR_DATA_LEN_RANGE);
    assert_eq!(
        rv(encrypt(&m, &pk, &pk.modulus().unwrap())),
        CKR_DATA_INVALID
    );
    assert_eq!(rv(encrypt(&m, &pk, &vec![0xFF; k])), CKR_DATA_INVALID);
}

#[test]
fn encryption_and_decryption_refuse_what_does_not_fit() {
    let key = rsa_key();
    let pk = PublicKey::Rsa(key.to_public_key());
    let k = key.size();
    let ec_pk = PublicKey::P256(p256::SecretKey::random(&mut OsRng).public_key());
    assert_eq!(
        rv(encrypt(&mech(CKM_RSA_PKCS), &ec_pk, b"x")),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(encrypt(&mech(CKM_SHA256_RSA_PKCS), &pk, b"x")),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(encrypt(&mech(CKM_ECDSA), &pk, b"x")),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        rv(encrypt(&mech(CKM_AES_ECB), &pk, b"x")),
        CKR_MECHANISM_INVALID
    );

    let m = mech(CKM_RSA_PKCS);
    check_ciphertext_len(&m, k, k).unwrap();
    assert_eq!(
        rv(check_ciphertext_len(&m, k, k - 1)),
        CKR_ENCRYPTED_DATA_LEN_RANGE
    );
    assert_eq!(
        rv(check_ciphertext_len(&m, k, k + 1)),
        CKR_ENCRYPTED_DATA_LEN_RANGE
    );
    assert_eq!(
        rv(check_ciphertext_len(&m, k, 0)),
        CKR_ENCRYPTED_DATA_LEN_RANGE
    );
    assert_eq!(
        rv(check_ciphertext_len(&mech(CKM_SHA256_RSA_PKCS), k, k)),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        rv(decrypt_unpad(&mech(CKM_ECDSA), k, &[0; 256])),
        CKR_MECHANISM_INVALID
    );

    // The card's answer: shorter is left-padded, longer only with leading zeros.
    let ct = encrypt(&m, &pk, b"secret").unwrap();
    let raw = card_rsa(key, &ct);
    assert_eq!(raw[0], 0);
    assert_eq!(
        decrypt_unpad(&m, k, &raw[1..]).unwrap().as_slice(),
        b"secret"
    );
    let mut longer = vec![0u8];
    longer.extend_from_slice(&raw);
    assert_eq!(decrypt_unpad(&m, k, &longer).unwrap().as_slice(), b"secret");
    longer[0] = 1;
    assert_eq!(rv(decrypt_unpad(&m, k, &longer)), CKR_DEVICE_ERROR);
}

// ---------------------------------------------------------------------------------------------
// ECDH

#[test]
fn ecdh_peer_point_forms_and_derived_value() {
    let ecdh = |public: &[u8]| MechParam::Ecdh {
        kdf: CKD_NULL,
        shared_data: vec![],
        public_data: public.to_vec(),
    };
    // P-256: the "card" key and a peer.
    let card = p256::SecretKey::random(&mut OsRng);
    let peer = p256::SecretKey::random(&mut OsRng);
    let peer_pk = PublicKey::P256(peer.public_key());
    let uncompressed = peer_pk.ec_point().unwrap();
    let wrapped = peer_pk.ec_point_der().unwrap();
    let compressed =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&peer.public_key(), true)
            .as_bytes()
            .to_vec();
    for form in [&uncompressed, &wrapped, &compressed] {
        assert_eq!(
            ecdh_peer_point(&ecdh(form), Curve::P256).unwrap(),
            uncompressed
        );
    }
    let mut wrapped_compressed = vec![0x04, compressed.len() as u8];
    wrapped_compressed.extend_from_slice(&compressed);
    assert_eq!(
        ecdh_peer_point(&ecdh(&wrapped_compressed), Curve::P256).unwrap(),
        uncompressed
    );

    // Both sides agree on X, and it is what the card would return.
    let point = ecdh_peer_point(&ecdh(&wrapped), Curve::P256).unwrap();
    let peer_from_card = p256::PublicKey::from_sec1_bytes(&point).unwrap();
    let ours = p256::ecdh::diffie_hellman(card.to_nonzero_scalar(), peer_from_card.as_affine());
    let theirs =
        p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), card.public_key().as_affine());
    let x = ours.raw_secret_bytes().to_vec();
    assert_eq!(x, theirs.raw_secret_bytes().to_vec());
    assert_eq!(derived_value(&x, None).unwrap().as_slice(), x.as_slice());
    assert_eq!(
        derived_value(&x, Some(32)).unwrap().as_slice(),
        x.as_slice()
    );
    assert_eq!(derived_value(&x, Some(16)).unwrap().as_slice(), &x[16..]);
    assert_eq!(derived_value(&x, Some(1)).unwrap().as_slice(), &x[31..]);
    assert_eq!(rv(derived_value(&x, Some(0))), CKR_KEY_SIZE_RANGE);
    assert_eq!(rv(derived_value(&x, Some(33))), CKR_KEY_SIZE_RANGE);

    // Bad parameters.
    let invalid = CKR_MECHANISM_PARAM_INVALID;
    let mut off_curve = uncompressed.clone();
    off_curve[64] ^= 1;
    for bad in [
        ecdh(&off_curve),
        ecdh(&uncompressed[..64]),
        ecdh(&[]),
        ecdh(&[0x00]),
        MechParam::Ecdh {
            kdf: CKD_SHA1_KDF,
            shared_data: vec![],
            public_data: uncompressed.clone(),
        },
        MechParam::Ecdh {
            kdf: CKD_NULL,
            shared_data: vec![1],
            public_data: uncompressed.clone(),
        },
        MechParam::None,
        MechParam::Other(uncompressed.clone()),
    ] {
        assert_eq!(rv(ecdh_peer_point(&bad, Curve::P256)), invalid, "{bad:?}");
    }
    assert_eq!(
        rv(ecdh_peer_point(&ecdh(&uncompressed), Curve::P384)),
        invalid
    );

    // P-384 works the same way.
    let peer = p384::SecretKey::random(&mut OsRng);
    let pk = PublicKey::P384(peer.public_key());
    let point = ecdh_peer_point(&ecdh(&pk.ec_point_der().unwrap()), Curve::P384).unwrap();
    assert_eq!(point, pk.ec_point().unwrap());
    assert_eq!(point.len(), 97);
}
