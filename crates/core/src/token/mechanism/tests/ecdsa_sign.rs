//! ECDSA: hashing and raw mechanisms on both curves, the card's DER answer.

use super::*;

enum EcKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl EcKey {
    fn new(curve: Curve) -> Self {
        match curve {
            Curve::P256 => Self::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            Curve::P384 => Self::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    fn public(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(k.verifying_key().into()),
            Self::P384(k) => PublicKey::P384(k.verifying_key().into()),
        }
    }

    /// The card: ECDSA over the given hash, answering DER.
    fn card_sign(&self, hash: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(hash).unwrap();
                s.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign_prehash(hash).unwrap();
                s.to_der().as_bytes().to_vec()
            }
        }
    }

    /// RustCrypto's verification of r‖s over a prehash of exactly the field length.
    fn library_verify_prehash(&self, hash: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::P256(k) => p256::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| k.verifying_key().verify_prehash(hash, &s).is_ok()),
            Self::P384(k) => p384::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| k.verifying_key().verify_prehash(hash, &s).is_ok()),
        }
    }

    /// RustCrypto's verification over the message with the curve's default hash.
    fn library_verify_message(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::P256(k) => p256::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| k.verifying_key().verify(msg, &s).is_ok()),
            Self::P384(k) => p384::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| k.verifying_key().verify(msg, &s).is_ok()),
        }
    }
}

fn ec_sign(key: &EcKey, m: &Mechanism, data: &[u8], chunk: usize) -> (Vec<u8>, Vec<u8>) {
    let mut op = SignOp::new(m, key.public().key_info()).unwrap();
    for part in data.chunks(chunk.max(1)) {
        op.update(part).unwrap();
    }
    let input = op.card_input().unwrap();
    let sig = op.finish(&key.card_sign(&input)).unwrap();
    assert_eq!(sig.len(), op.signature_len());
    (input.to_vec(), sig)
}

#[test]
fn ecdsa_hashing_mechanisms_round_trip() {
    let data = b"ECDSA over some data that is hashed on the host";
    for curve in [Curve::P256, Curve::P384] {
        let key = EcKey::new(curve);
        let pk = key.public();
        let f = curve.field_len();
        for h in HASHES {
            let m = mech(ecdsa_mech(h));
            let (input, sig) = ec_sign(&key, &m, data, 5);
            assert_eq!(sig.len(), 2 * f);
            assert_eq!(input.len(), f);
            // The card gets the hash cut or left-padded to the field length.
            let hash = h.digest(data);
            if hash.len() >= f {
                assert_eq!(input, hash[..f]);
            } else {
                assert_eq!(input[f - hash.len()..], hash);
                assert!(input[..f - hash.len()].iter().all(|&b| b == 0));
            }
            assert!(key.library_verify_prehash(&input, &sig));
            let native = matches!(
                (curve, h),
                (Curve::P256, HashAlg::Sha256) | (Curve::P384, HashAlg::Sha384)
            );
            if native {
                assert!(key.library_verify_message(data, &sig));
            }
            verify(&m, &pk, data, &sig).unwrap();
            let mut op = VerifyOp::new(&m, pk.key_info()).unwrap();
            for part in data.chunks(3) {
                op.update(part).unwrap();
            }
            op.verify(&pk, &sig).unwrap();
            assert_eq!(
                rv(verify(&m, &pk, b"different", &sig)),
                CKR_SIGNATURE_INVALID
            );
            let mut bad = sig.clone();
            bad[f + 3] ^= 4;
            assert_eq!(rv(verify(&m, &pk, data, &bad)), CKR_SIGNATURE_INVALID);
            assert_eq!(
                rv(verify(&m, &pk, data, &sig[1..])),
                CKR_SIGNATURE_LEN_RANGE
            );
            assert_eq!(
                rv(verify(&m, &pk, data, &vec![0; 2 * f])),
                CKR_SIGNATURE_INVALID
            );
            assert_eq!(
                rv(verify(&m, &pk, data, &vec![0xFF; 2 * f])),
                CKR_SIGNATURE_INVALID
            );
            // The raw mechanism over the same hash verifies the same signature.
            verify(&mech(CKM_ECDSA), &pk, &hash, &sig).unwrap();
        }
        // Another key's signature does not verify.
        let other = EcKey::new(curve);
        let (_, sig) = ec_sign(&other, &mech(CKM_ECDSA_SHA256), data, 100);
        assert_eq!(
            rv(verify(&mech(CKM_ECDSA_SHA256), &pk, data, &sig)),
            CKR_SIGNATURE_INVALID
        );
    }
}

#[test]
fn ecdsa_raw_takes_any_length() {
    for curve in [Curve::P256, Curve::P384] {
        let key = EcKey::new(curve);
        let pk = key.public();
        let f = curve.field_len();
        let m = mech(CKM_ECDSA);
        for len in [0, 1, 20, f - 1, f, f + 1, 64, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let (input, sig) = ec_sign(&key, &m, &data, 9);
            assert_eq!(input.len(), f);
            verify(&m, &pk, &data, &sig).unwrap();
            if len >= f {
                assert_eq!(input, data[..f], "leftmost bytes");
                assert!(
                    key.library_verify_prehash(&data, &sig),
                    "same as the library's truncation"
                );
            }
            if len >= f / 2 {
                // RustCrypto takes short prehashes as integers too.
                assert!(key.library_verify_prehash(&data, &sig));
            }
        }
    }
}

#[test]
fn ecdsa_finish_parses_der_and_rejects_garbage() {
    let op = SignOp::new(&mech(CKM_ECDSA), KeyInfo::Ec { curve: Curve::P256 }).unwrap();
    assert_eq!(op.signature_len(), 64);
    // r = 1, s = 2: small integers are left-padded to the field length.
    let sig = op
        .finish(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02])
        .unwrap();
    let mut expected = vec![0u8; 64];
    expected[31] = 1;
    expected[63] = 2;
    assert_eq!(sig, expected);
    // A high r with its sign byte.
    let mut der = vec![0x30, 0x26, 0x02, 0x21, 0x00];
    der.extend([0x80; 32]);
    der.extend([0x02, 0x01, 0x05]);
    let sig = op.finish(&der).unwrap();
    assert_eq!(&sig[..32], &[0x80; 32]);
    for bad in [
        &[][..],
        &[0x30, 0x00][..],
        &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x02][..], // r = 0
        &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01][..],       // truncated
        &[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02][..], // not a SEQUENCE
        &[0x01; 64][..],                                       // raw r‖s is not DER
    ] {
        assert_eq!(rv(op.finish(bad)), CKR_DEVICE_ERROR, "{bad:02x?}");
    }
    // r as large as a P-384 field does not fit P-256.
    let key384 = EcKey::new(Curve::P384);
    let der384 = key384.card_sign(&[0x11; 48]);
    assert_eq!(rv(op.finish(&der384)), CKR_DEVICE_ERROR);
}
