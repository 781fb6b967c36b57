//! The SHA-1/SHA-2 family as PKCS#11 names it (CKM_SHA256, CKG_MGF1_SHA256), the DigestInfo
//! prefixes of EMSA-PKCS1-v1_5, MGF1, and the incremental [`Digester`] behind C_Digest*.

use crate::token::{Error, Result};
use cryptoki_sys::*;
use sha2::digest::DynDigest;
use sha2::Digest;

/// A hash function Tessera's mechanisms use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1 (still used by old signing software; never for new keys).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// The hash of a digest mechanism (CKM_SHA_1 … CKM_SHA512).
    pub fn from_mechanism(ty: CK_MECHANISM_TYPE) -> Option<Self> {
        Some(match ty {
            CKM_SHA_1 => Self::Sha1,
            CKM_SHA224 => Self::Sha224,
            CKM_SHA256 => Self::Sha256,
            CKM_SHA384 => Self::Sha384,
            CKM_SHA512 => Self::Sha512,
            _ => return None,
        })
    }

    /// The hash of an MGF1 mask generation function (CKG_MGF1_SHA1 … CKG_MGF1_SHA512).
    pub fn from_mgf(mgf: CK_RSA_PKCS_MGF_TYPE) -> Option<Self> {
        Some(match mgf {
            CKG_MGF1_SHA1 => Self::Sha1,
            CKG_MGF1_SHA224 => Self::Sha224,
            CKG_MGF1_SHA256 => Self::Sha256,
            CKG_MGF1_SHA384 => Self::Sha384,
            CKG_MGF1_SHA512 => Self::Sha512,
            _ => return None,
        })
    }

    /// The digest mechanism of this hash.
    pub fn mechanism(self) -> CK_MECHANISM_TYPE {
        match self {
            Self::Sha1 => CKM_SHA_1,
            Self::Sha224 => CKM_SHA224,
            Self::Sha256 => CKM_SHA256,
            Self::Sha384 => CKM_SHA384,
            Self::Sha512 => CKM_SHA512,
        }
    }

    /// The MGF1 generator of this hash.
    pub fn mgf(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            Self::Sha1 => CKG_MGF1_SHA1,
            Self::Sha224 => CKG_MGF1_SHA224,
            Self::Sha256 => CKG_MGF1_SHA256,
            Self::Sha384 => CKG_MGF1_SHA384,
            Self::Sha512 => CKG_MGF1_SHA512,
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// A fresh hasher (boxed, because the rsa crate's padding schemes take one that way).
    pub(crate) fn hasher(self) -> Box<dyn DynDigest + Send + Sync> {
        match self {
            Self::Sha1 => Box::new(sha1::Sha1::new()),
            Self::Sha224 => Box::new(sha2::Sha224::new()),
            Self::Sha256 => Box::new(sha2::Sha256::new()),
            Self::Sha384 => Box::new(sha2::Sha384::new()),
            Self::Sha512 => Box::new(sha2::Sha512::new()),
        }
    }

    /// The hash of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finalize().into_vec()
    }

    /// The DER `DigestInfo` header that precedes the hash value in EMSA-PKCS1-v1_5
    /// (RFC 8017 section 9.2, note 1): SEQUENCE { AlgorithmIdentifier { OID, NULL }, OCTET STRING }.
    pub(crate) fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Self::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Self::Sha224 => &[
                0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x04, 0x05, 0x00, 0x04, 0x1c,
            ],
            Self::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Self::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Self::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// XORs the MGF1 mask of `seed` (RFC 8017 appendix B.2.1) into `out`; the mask is as long as
/// `out`.
pub(crate) fn mgf1_xor(hash: HashAlg, seed: &[u8], out: &mut [u8]) {
    let mut h = hash.hasher();
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(hash.output_len())) {
        h.update(seed);
        h.update(&counter.to_be_bytes());
        let block = h.finalize_reset();
        for (o, m) in chunk.iter_mut().zip(block.iter()) {
            *o ^= m;
        }
    }
}

/// An incremental digest (C_DigestInit / Update / Final).
#[derive(Clone)]
pub struct Digester {
    state: State,
}

/// The running hash; concrete types so that a digest in progress can be cloned.
#[derive(Clone)]
enum State {
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Digester {
    /// A digest for CKM_SHA_1 … CKM_SHA512; anything else → CKR_MECHANISM_INVALID.
    pub fn new(mech: CK_MECHANISM_TYPE) -> Result<Self> {
        let alg = HashAlg::from_mechanism(mech).ok_or(Error::new(CKR_MECHANISM_INVALID))?;
        Ok(Self::of(alg))
    }

    /// A digest for `mech` that also checks its parameter: the digests take none
    /// (CKR_MECHANISM_PARAM_INVALID otherwise).
    pub fn for_mechanism(mech: &crate::token::Mechanism) -> Result<Self> {
        let digester = Self::new(mech.ty)?;
        super::no_param(&mech.param)?;
        Ok(digester)
    }

    /// A digest of `alg`.
    pub fn of(alg: HashAlg) -> Self {
        let state = match alg {
            HashAlg::Sha1 => State::Sha1(sha1::Sha1::new()),
            HashAlg::Sha224 => State::Sha224(sha2::Sha224::new()),
            HashAlg::Sha256 => State::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => State::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => State::Sha512(sha2::Sha512::new()),
        };
        Self { state }
    }

    /// The hash being computed.
    pub fn alg(&self) -> HashAlg {
        match self.state {
            State::Sha1(_) => HashAlg::Sha1,
            State::Sha224(_) => HashAlg::Sha224,
            State::Sha256(_) => HashAlg::Sha256,
            State::Sha384(_) => HashAlg::Sha384,
            State::Sha512(_) => HashAlg::Sha512,
        }
    }

    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Sha1(h) => Digest::update(h, data),
            State::Sha224(h) => Digest::update(h, data),
            State::Sha256(h) => Digest::update(h, data),
            State::Sha384(h) => Digest::update(h, data),
            State::Sha512(h) => Digest::update(h, data),
        }
    }

    /// The hash of everything fed so far; the digester starts over afterwards.
    pub fn finalize(&mut self) -> Vec<u8> {
        match &mut self.state {
            State::Sha1(h) => Digest::finalize_reset(h).to_vec(),
            State::Sha224(h) => Digest::finalize_reset(h).to_vec(),
            State::Sha256(h) => Digest::finalize_reset(h).to_vec(),
            State::Sha384(h) => Digest::finalize_reset(h).to_vec(),
            State::Sha512(h) => Digest::finalize_reset(h).to_vec(),
        }
    }

    /// Length of the hash in bytes (what C_DigestFinal answers to a length query).
    pub fn output_len(&self) -> usize {
        self.alg().output_len()
    }
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digester")
            .field("alg", &self.alg())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(
            hex::encode(HashAlg::Sha1.digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(HashAlg::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for alg in [
            HashAlg::Sha1,
            HashAlg::Sha224,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(alg.digest(b"").len(), alg.output_len());
            assert_eq!(HashAlg::from_mechanism(alg.mechanism()), Some(alg));
            assert_eq!(HashAlg::from_mgf(alg.mgf()), Some(alg));
            // The prefix ends with OCTET STRING of the hash length.
            let prefix = alg.digest_info_prefix();
            assert_eq!(prefix[prefix.len() - 1] as usize, alg.output_len());
            assert_eq!(prefix[1] as usize + 2, prefix.len() + alg.output_len());
        }
    }

    #[test]
    fn digester_multi_part_equals_single_part() {
        for mech in [CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512] {
            let mut d = Digester::new(mech).unwrap();
            d.update(b"hello ");
            let snapshot = d.clone();
            d.update(b"world");
            let alg = d.alg();
            assert_eq!(d.finalize(), alg.digest(b"hello world"));
            assert_eq!(d.finalize(), alg.digest(b""), "finalize starts over");
            let mut s = snapshot;
            assert_eq!(s.finalize(), alg.digest(b"hello "));
            assert_eq!(s.output_len(), alg.output_len());
        }
        assert_eq!(
            Digester::new(CKM_MD5).unwrap_err().rv(),
            CKR_MECHANISM_INVALID
        );
        let with_param = crate::token::Mechanism {
            ty: CKM_SHA256,
            param: crate::token::MechParam::Other(vec![1]),
        };
        assert_eq!(
            Digester::for_mechanism(&with_param).unwrap_err().rv(),
            CKR_MECHANISM_PARAM_INVALID
        );
    }

    #[test]
    fn mgf1_known_answer() {
        // MGF1-SHA1("foo", 3) = 1ac907 and ("bar", 5) = bc0c655e01 (well-known test vectors).
        let mut out = [0u8; 3];
        mgf1_xor(HashAlg::Sha1, b"foo", &mut out);
        assert_eq!(hex::encode(out), "1ac907");
        let mut out = [0u8; 5];
        mgf1_xor(HashAlg::Sha1, b"bar", &mut out);
        assert_eq!(hex::encode(out), "bc0c655e01");
        let mut long = vec![0u8; 50];
        mgf1_xor(HashAlg::Sha256, b"bar", &mut long);
        assert_eq!(
            hex::encode(&long),
            "382576a7841021cc28fc4c0948753fb8312090cea942ea4c4e735d10dc724b155f9f6069f289d61daca0cb814502ef04eae1"
        );
    }
}
