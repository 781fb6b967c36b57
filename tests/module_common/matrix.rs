//! The mechanism matrix shared by the in-process and the pcscd module tests: every RSA and
//! ECDSA signature mechanism and every RSA decryption, each result checked on the host with
//! RustCrypto as well as through the module.

#![allow(dead_code)]

use super::*;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki_sys::*;
use rsa::traits::PublicKeyParts;
use sha2::Digest;

/// What the matrix signs.
pub const MESSAGE: &[u8] = b"Tessera signs this message for the module tests";
// ---- host-side hashing and RSA checks ----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

pub const HASHES: [Hash; 5] = [
    Hash::Sha1,
    Hash::Sha224,
    Hash::Sha256,
    Hash::Sha384,
    Hash::Sha512,
];

impl Hash {
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    pub fn len(self) -> usize {
        self.digest(b"").len()
    }

    pub fn mechanism_type(self) -> MechanismType {
        match self {
            Self::Sha1 => MechanismType::SHA1,
            Self::Sha224 => MechanismType::SHA224,
            Self::Sha256 => MechanismType::SHA256,
            Self::Sha384 => MechanismType::SHA384,
            Self::Sha512 => MechanismType::SHA512,
        }
    }

    pub fn ck_mechanism(self) -> CK_MECHANISM_TYPE {
        match self {
            Self::Sha1 => CKM_SHA_1,
            Self::Sha224 => CKM_SHA224,
            Self::Sha256 => CKM_SHA256,
            Self::Sha384 => CKM_SHA384,
            Self::Sha512 => CKM_SHA512,
        }
    }

    pub fn mgf(self) -> PkcsMgfType {
        match self {
            Self::Sha1 => PkcsMgfType::MGF1_SHA1,
            Self::Sha224 => PkcsMgfType::MGF1_SHA224,
            Self::Sha256 => PkcsMgfType::MGF1_SHA256,
            Self::Sha384 => PkcsMgfType::MGF1_SHA384,
            Self::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }

    pub fn ck_mgf(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            Self::Sha1 => CKG_MGF1_SHA1,
            Self::Sha224 => CKG_MGF1_SHA224,
            Self::Sha256 => CKG_MGF1_SHA256,
            Self::Sha384 => CKG_MGF1_SHA384,
            Self::Sha512 => CKG_MGF1_SHA512,
        }
    }

    /// The digest mechanism.
    pub fn digest_mechanism(self) -> Mechanism<'static> {
        match self {
            Self::Sha1 => Mechanism::Sha1,
            Self::Sha224 => Mechanism::Sha224,
            Self::Sha256 => Mechanism::Sha256,
            Self::Sha384 => Mechanism::Sha384,
            Self::Sha512 => Mechanism::Sha512,
        }
    }

    /// SHAx_RSA_PKCS.
    pub fn rsa_pkcs(self) -> Mechanism<'static> {
        match self {
            Self::Sha1 => Mechanism::Sha1RsaPkcs,
            Self::Sha224 => Mechanism::Sha224RsaPkcs,
            Self::Sha256 => Mechanism::Sha256RsaPkcs,
            Self::Sha384 => Mechanism::Sha384RsaPkcs,
            Self::Sha512 => Mechanism::Sha512RsaPkcs,
        }
    }

    /// SHAx_RSA_PKCS_PSS with salt = hash length (`None` for SHA-224: cryptoki 0.12 has no
    /// name for it, see [`Hash::ck_rsa_pss`]).
    pub fn rsa_pss(self) -> Option<Mechanism<'static>> {
        let p = self.pss_params();
        Some(match self {
            Self::Sha1 => Mechanism::Sha1RsaPkcsPss(p),
            Self::Sha224 => return None,
            Self::Sha256 => Mechanism::Sha256RsaPkcsPss(p),
            Self::Sha384 => Mechanism::Sha384RsaPkcsPss(p),
            Self::Sha512 => Mechanism::Sha512RsaPkcsPss(p),
        })
    }

    pub fn ck_rsa_pss(self) -> CK_MECHANISM_TYPE {
        match self {
            Self::Sha1 => CKM_SHA1_RSA_PKCS_PSS,
            Self::Sha224 => CKM_SHA224_RSA_PKCS_PSS,
            Self::Sha256 => CKM_SHA256_RSA_PKCS_PSS,
            Self::Sha384 => CKM_SHA384_RSA_PKCS_PSS,
            Self::Sha512 => CKM_SHA512_RSA_PKCS_PSS,
        }
    }

    pub fn pss_params(self) -> PkcsPssParams {
        PkcsPssParams {
            hash_alg: self.mechanism_type(),
            mgf: self.mgf(),
            s_len: (self.len() as u64).into(),
        }
    }

    /// ECDSA_SHAx.
    pub fn ecdsa(self) -> Mechanism<'static> {
        match self {
            Self::Sha1 => Mechanism::EcdsaSha1,
            Self::Sha224 => Mechanism::EcdsaSha224,
            Self::Sha256 => Mechanism::EcdsaSha256,
            Self::Sha384 => Mechanism::EcdsaSha384,
            Self::Sha512 => Mechanism::EcdsaSha512,
        }
    }

    /// The rsa crate's PKCS#1 v1.5 signature scheme for this hash.
    pub fn pkcs1v15(self) -> rsa::Pkcs1v15Sign {
        match self {
            // sha1's `oid` feature is not enabled: DigestInfo prefix of RFC 8017 §9.2 note 1.
            Self::Sha1 => rsa::Pkcs1v15Sign {
                hash_len: Some(20),
                prefix: Box::new([
                    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
                    0x04, 0x14,
                ]),
            },
            Self::Sha224 => rsa::Pkcs1v15Sign::new::<sha2::Sha224>(),
            Self::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            Self::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            Self::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }

    /// The rsa crate's PSS scheme (MGF1 with the same hash) that insists on `salt` bytes.
    pub fn pss(self, salt: usize) -> rsa::Pss {
        match self {
            Self::Sha1 => rsa::Pss::new_with_salt::<sha1::Sha1>(salt),
            Self::Sha224 => rsa::Pss::new_with_salt::<sha2::Sha224>(salt),
            Self::Sha256 => rsa::Pss::new_with_salt::<sha2::Sha256>(salt),
            Self::Sha384 => rsa::Pss::new_with_salt::<sha2::Sha384>(salt),
            Self::Sha512 => rsa::Pss::new_with_salt::<sha2::Sha512>(salt),
        }
    }

    pub fn oaep(self) -> rsa::Oaep {
        match self {
            Self::Sha1 => rsa::Oaep::new::<sha1::Sha1>(),
            Self::Sha224 => rsa::Oaep::new::<sha2::Sha224>(),
            Self::Sha256 => rsa::Oaep::new::<sha2::Sha256>(),
            Self::Sha384 => rsa::Oaep::new::<sha2::Sha384>(),
            Self::Sha512 => rsa::Oaep::new::<sha2::Sha512>(),
        }
    }
}

/// DER DigestInfo(SHA-256, hash) — what CKM_RSA_PKCS signs for a SHA-256 signature.
pub fn digest_info_sha256(hash: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    out.extend_from_slice(hash);
    out
}

#[track_caller]
pub fn rsa_verifies(
    key: &rsa::RsaPublicKey,
    scheme: impl rsa::traits::SignatureScheme,
    hashed: &[u8],
    sig: &[u8],
) {
    key.verify(scheme, hashed, sig)
        .unwrap_or_else(|e| panic!("host RSA verification failed: {e}"));
}

/// s^e mod n, left-padded to the modulus length (what CKM_RSA_X_509 signed).
pub fn rsa_raw_public(key: &rsa::RsaPublicKey, sig: &[u8]) -> Vec<u8> {
    let m = rsa::BigUint::from_bytes_be(sig).modpow(key.e(), key.n());
    let bytes = m.to_bytes_be();
    let mut out = vec![0u8; key.size() - bytes.len()];
    out.extend_from_slice(&bytes);
    out
}

/// Signs with every RSA mechanism and checks each signature on the host and with C_Verify.
pub fn rsa_signatures(s: &Session, public: ObjectHandle, private: ObjectHandle) {
    let key = rsa_public(s, public);
    assert_eq!(
        rsa_public(s, private),
        key,
        "private key object's public half"
    );
    let k = key.size();
    let hash = Hash::Sha256.digest(MESSAGE);

    // CKM_RSA_PKCS over a DigestInfo.
    let di = digest_info_sha256(&hash);
    let sig = s.sign(&Mechanism::RsaPkcs, private, &di).unwrap();
    assert_eq!(sig.len(), k);
    rsa_verifies(&key, Hash::Sha256.pkcs1v15(), &hash, &sig);
    s.verify(&Mechanism::RsaPkcs, public, &di, &sig).unwrap();

    // CKM_RSA_X_509: a raw k-byte block.
    let mut block = vec![0u8; k];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut block[1..]);
    block[1] &= 0x7F;
    let sig = s.sign(&Mechanism::RsaX509, private, &block).unwrap();
    assert_eq!(
        rsa_raw_public(&key, &sig),
        block,
        "RSA_X_509 is the raw operation"
    );
    s.verify(&Mechanism::RsaX509, public, &block, &sig).unwrap();

    // CKM_RSA_PKCS_PSS over a hash, with parameters.
    for h in [Hash::Sha256, Hash::Sha384, Hash::Sha1] {
        let hashed = h.digest(MESSAGE);
        let params = h.pss_params();
        let sig = s
            .sign(&Mechanism::RsaPkcsPss(params), private, &hashed)
            .unwrap();
        rsa_verifies(&key, h.pss(h.len()), &hashed, &sig);
        s.verify(&Mechanism::RsaPkcsPss(params), public, &hashed, &sig)
            .unwrap();
    }
    // Salt length 0 as well.
    let params = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 0u64.into(),
    };
    let sig = s
        .sign(&Mechanism::RsaPkcsPss(params), private, &hash)
        .unwrap();
    rsa_verifies(&key, Hash::Sha256.pss(0), &hash, &sig);

    for h in HASHES {
        // SHAx_RSA_PKCS: deterministic, so multi-part equals single-part.
        let hashed = h.digest(MESSAGE);
        let sig = s.sign(&h.rsa_pkcs(), private, MESSAGE).unwrap();
        rsa_verifies(&key, h.pkcs1v15(), &hashed, &sig);
        s.verify(&h.rsa_pkcs(), public, MESSAGE, &sig).unwrap();
        s.sign_init(&h.rsa_pkcs(), private).unwrap();
        s.sign_update(&MESSAGE[..10]).unwrap();
        s.sign_update(&MESSAGE[10..]).unwrap();
        assert_eq!(
            s.sign_final().unwrap(),
            sig,
            "{h:?} multi-part = single-part"
        );
        s.verify_init(&h.rsa_pkcs(), public).unwrap();
        s.verify_update(&MESSAGE[..7]).unwrap();
        s.verify_update(&MESSAGE[7..]).unwrap();
        s.verify_final(&sig).unwrap();

        // SHAx_RSA_PKCS_PSS.
        let sig = match h.rsa_pss() {
            Some(m) => {
                let sig = s.sign(&m, private, MESSAGE).unwrap();
                s.verify(&m, public, MESSAGE, &sig).unwrap();
                s.sign_init(&m, private).unwrap();
                s.sign_update(&MESSAGE[..3]).unwrap();
                s.sign_update(&MESSAGE[3..]).unwrap();
                let multi = s.sign_final().unwrap();
                rsa_verifies(&key, h.pss(h.len()), &hashed, &multi);
                sig
            }
            None => {
                let params = CK_RSA_PKCS_PSS_PARAMS {
                    hashAlg: h.ck_mechanism(),
                    mgf: h.ck_mgf(),
                    sLen: h.len() as CK_ULONG,
                };
                let rv = raw_sign_init(s.handle(), h.ck_rsa_pss(), &params, private);
                assert_eq!(rv, CKR_OK, "C_SignInit {h:?} PSS");
                let (rv, sig) = raw_sign(s.handle(), MESSAGE);
                assert_eq!(rv, CKR_OK, "C_Sign {h:?} PSS");
                let rv = raw_verify(s.handle(), h.ck_rsa_pss(), &params, public, MESSAGE, &sig);
                assert_eq!(rv, CKR_OK, "C_Verify {h:?} PSS");
                sig
            }
        };
        rsa_verifies(&key, h.pss(h.len()), &hashed, &sig);
    }

    // C_Verify says no to a damaged signature.
    let mut sig = s.sign(&Mechanism::Sha256RsaPkcs, private, MESSAGE).unwrap();
    sig[10] ^= 1;
    assert_rv(
        s.verify(&Mechanism::Sha256RsaPkcs, public, MESSAGE, &sig),
        RvError::SignatureInvalid,
    );
}

/// Signs with every ECDSA mechanism and checks each signature on the host and with C_Verify.
pub fn ec_signatures(s: &Session, curve: Curve, public: ObjectHandle, private: ObjectHandle) {
    let point = ec_point(s, public);
    assert_eq!(
        attr_bytes(s, public, AttributeType::EcParams),
        curve.params()
    );
    assert_eq!(point.len(), 1 + 2 * curve.field_len());

    // CKM_ECDSA over hashes of every length (shorter and longer than the field).
    for h in HASHES {
        let hashed = h.digest(MESSAGE);
        let sig = s.sign(&Mechanism::Ecdsa, private, &hashed).unwrap();
        assert_eq!(sig.len(), 2 * curve.field_len(), "r || s");
        verify_ecdsa(curve, &point, &hashed, &sig);
        s.verify(&Mechanism::Ecdsa, public, &hashed, &sig).unwrap();
    }
    for h in HASHES {
        let hashed = h.digest(MESSAGE);
        let sig = s.sign(&h.ecdsa(), private, MESSAGE).unwrap();
        verify_ecdsa(curve, &point, &hashed, &sig);
        s.verify(&h.ecdsa(), public, MESSAGE, &sig).unwrap();
        s.sign_init(&h.ecdsa(), private).unwrap();
        s.sign_update(&MESSAGE[..5]).unwrap();
        s.sign_update(&MESSAGE[5..]).unwrap();
        let multi = s.sign_final().unwrap();
        verify_ecdsa(curve, &point, &hashed, &multi);
        s.verify_init(&h.ecdsa(), public).unwrap();
        s.verify_update(&MESSAGE[..20]).unwrap();
        s.verify_update(&MESSAGE[20..]).unwrap();
        s.verify_final(&multi).unwrap();
    }
    let mut sig = s.sign(&Mechanism::EcdsaSha256, private, MESSAGE).unwrap();
    sig[5] ^= 0x40;
    assert_rv(
        s.verify(&Mechanism::EcdsaSha256, public, MESSAGE, &sig),
        RvError::SignatureInvalid,
    );
}

/// RSA decryption through the card: PKCS#1 v1.5, OAEP with every hash and with a label,
/// C_Encrypt then C_Decrypt, and RSA_X_509, each against host encryption.
pub fn rsa_decryptions(s: &Session, public: ObjectHandle, private: ObjectHandle) {
    let key = rsa_public(s, public);
    let secret = b"a session key of 32 bytes.......";
    let mut rng = rand::rngs::OsRng;

    let ct = key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, secret).unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap(),
        secret
    );

    for h in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
        let ct = key.encrypt(&mut rng, h.oaep(), secret).unwrap();
        let params = PkcsOaepParams::new(h.mechanism_type(), h.mgf(), PkcsOaepSource::empty());
        assert_eq!(
            s.decrypt(&Mechanism::RsaPkcsOaep(params), private, &ct)
                .unwrap(),
            secret,
            "OAEP {h:?}"
        );
    }
    // OAEP with a label.
    let ct = key
        .encrypt(
            &mut rng,
            rsa::Oaep::new_with_label::<sha2::Sha256, _>("tessera"),
            secret,
        )
        .unwrap();
    let params = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::data_specified(b"tessera"),
    );
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcsOaep(params), private, &ct)
            .unwrap(),
        secret
    );
    // A damaged ciphertext does not decrypt to the secret.
    let mut bad = key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, secret).unwrap();
    bad[7] ^= 0x10;
    assert!(s.decrypt(&Mechanism::RsaPkcs, private, &bad).is_err());

    // C_Encrypt through the module, C_Decrypt through the card.
    let ct = s.encrypt(&Mechanism::RsaPkcs, public, secret).unwrap();
    assert_eq!(ct.len(), 256);
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap(),
        secret
    );
    let params = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    );
    let ct = s
        .encrypt(&Mechanism::RsaPkcsOaep(params), public, secret)
        .unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcsOaep(params), private, &ct)
            .unwrap(),
        secret
    );
    // RSA_X_509 decrypt is the raw private operation.
    let block = rsa_raw_public(&key, &{
        let mut m = vec![0u8; 256];
        m[200..].copy_from_slice(&[0x5A; 56]);
        m
    });
    let plain = s.decrypt(&Mechanism::RsaX509, private, &block).unwrap();
    assert_eq!(&plain[plain.len() - 56..], &[0x5A; 56][..]);
}
