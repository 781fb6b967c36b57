//! Public keys as every layer sees them: a key's type and size ([`KeyInfo`]), the named curves
//! ([`Curve`], with their CKA_EC_PARAMS encoding), and public keys ([`PublicKey`]) in the forms
//! PKCS#11 attributes and certificates carry them. Drivers report the keys on a card with
//! these; the token layer's mechanisms use them (`token::mechanism` re-exports them).

/// Why a public key or curve was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Malformed encoding, or values that do not make a usable key.
    #[error("malformed public key")]
    Invalid,
    /// A curve other than P-256 and P-384.
    #[error("curve not supported")]
    UnsupportedCurve,
    /// A key that is neither RSA nor EC.
    #[error("key type not supported")]
    UnsupportedType,
}

impl KeyError {
    /// The PKCS#11 return value for this error where an attribute carried the key.
    pub fn rv(self) -> CK_RV {
        match self {
            Self::Invalid => CKR_ATTRIBUTE_VALUE_INVALID,
            Self::UnsupportedCurve => CKR_CURVE_NOT_SUPPORTED,
            Self::UnsupportedType => CKR_KEY_TYPE_INCONSISTENT,
        }
    }
}

type Result<T> = std::result::Result<T, KeyError>;
use cryptoki_sys::*;
use der::asn1::{ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;

/// id-ecPublicKey (RFC 5480).
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// prime256v1 / secp256r1.
const P256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1.
const P384_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A named curve the token supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1, prime256v1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl Curve {
    /// Length of a field element (and of r, s, X, Y) in bytes.
    pub const fn field_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    /// Key size in bits, as C_GetMechanismInfo counts it.
    pub const fn bits(self) -> usize {
        self.field_len() * 8
    }

    /// The curve's object identifier.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Self::P256 => P256_OID,
            Self::P384 => P384_OID,
        }
    }

    /// The curve with this object identifier.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        [Self::P256, Self::P384]
            .into_iter()
            .find(|c| c.oid() == *oid)
    }

    /// CKA_EC_PARAMS: the DER ECParameters in its namedCurve form (an OBJECT IDENTIFIER).
    pub fn ec_params_der(self) -> Vec<u8> {
        let body = self.oid();
        let body = body.as_bytes();
        // Both OIDs are far shorter than 128 bytes, so the length is one byte.
        let mut out = Vec::with_capacity(body.len() + 2);
        out.push(0x06);
        out.push(u8::try_from(body.len()).unwrap_or(0));
        out.extend_from_slice(body);
        out
    }

    /// The curve named by a CKA_EC_PARAMS value (namedCurve form), if it is one of ours.
    /// [`Curve::parse_ec_params`] says why not.
    pub fn from_ec_params(der: &[u8]) -> Option<Self> {
        Self::parse_ec_params(der).ok()
    }

    /// The curve named by a CKA_EC_PARAMS value. Only the namedCurve form is accepted:
    /// malformed DER → CKR_ATTRIBUTE_VALUE_INVALID; a well-formed OID of another curve, or
    /// explicit parameters / implicitCA → CKR_CURVE_NOT_SUPPORTED.
    pub fn parse_ec_params(der: &[u8]) -> Result<Self> {
        match der.first() {
            Some(0x06) => {
                let oid = ObjectIdentifier::from_der(der).map_err(|_| KeyError::Invalid)?;
                Self::from_oid(&oid).ok_or(KeyError::UnsupportedCurve)
            }
            // SEQUENCE (specifiedCurve) or NULL (implicitCA): valid, but not for us.
            Some(0x30) | Some(0x05) => Err(KeyError::UnsupportedCurve),
            _ => Err(KeyError::Invalid),
        }
    }

    /// Length of an uncompressed point 04‖X‖Y.
    pub const fn point_len(self) -> usize {
        1 + 2 * self.field_len()
    }
}

/// The type and size of a key, which is all the mechanisms need to shape data for the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyInfo {
    /// An RSA key.
    Rsa {
        /// Modulus length in bits.
        modulus_bits: usize,
    },
    /// An EC key.
    Ec {
        /// Its curve.
        curve: Curve,
    },
}

impl KeyInfo {
    /// CKA_KEY_TYPE.
    pub fn key_type(&self) -> CK_KEY_TYPE {
        match self {
            Self::Rsa { .. } => CKK_RSA,
            Self::Ec { .. } => CKK_EC,
        }
    }

    /// For RSA: the modulus length k in bytes (the length of every signature, ciphertext and
    /// card block).
    pub fn rsa_len(&self) -> Option<usize> {
        match self {
            Self::Rsa { modulus_bits } => Some(modulus_bits.div_ceil(8)),
            Self::Ec { .. } => None,
        }
    }
}

/// A public key, for verification and encryption on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA (up to 4096 bits, the rsa crate's limit and PIV's).
    Rsa(rsa::RsaPublicKey),
    /// EC on P-256.
    P256(p256::PublicKey),
    /// EC on P-384.
    P384(p384::PublicKey),
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo (a certificate's key, CKA_PUBLIC_KEY_INFO).
    ///
    /// Malformed → CKR_ATTRIBUTE_VALUE_INVALID; an algorithm other than RSA or EC →
    /// CKR_KEY_TYPE_INCONSISTENT; another curve → CKR_CURVE_NOT_SUPPORTED.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        fn invalid<E>(_: E) -> KeyError {
            KeyError::Invalid
        }
        let info = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(invalid)?;
        let alg = &info.algorithm;
        if alg.oid == RSA_ENCRYPTION {
            return rsa::RsaPublicKey::from_public_key_der(der)
                .map(Self::Rsa)
                .map_err(invalid);
        }
        if alg.oid != ID_EC_PUBLIC_KEY {
            return Err(KeyError::UnsupportedType);
        }
        let curve_oid = alg.parameters_oid().map_err(invalid)?;
        match Curve::from_oid(&curve_oid).ok_or(KeyError::UnsupportedCurve)? {
            Curve::P256 => p256::PublicKey::from_public_key_der(der)
                .map(Self::P256)
                .map_err(invalid),
            Curve::P384 => p384::PublicKey::from_public_key_der(der)
                .map(Self::P384)
                .map_err(invalid),
        }
    }

    /// An RSA key from CKA_MODULUS and CKA_PUBLIC_EXPONENT (big-endian);
    /// CKR_ATTRIBUTE_VALUE_INVALID when they do not make a usable key.
    pub fn from_rsa_components(modulus: &[u8], public_exponent: &[u8]) -> Result<Self> {
        rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(modulus),
            rsa::BigUint::from_bytes_be(public_exponent),
        )
        .map(Self::Rsa)
        .map_err(|_| KeyError::Invalid)
    }

    /// An EC key from CKA_EC_POINT: the SEC1 point raw (04‖X‖Y, or compressed 02/03‖X) or
    /// wrapped in a DER OCTET STRING, as most applications give it. The point must lie on
    /// `curve` (CKR_ATTRIBUTE_VALUE_INVALID otherwise).
    pub fn from_ec_point(curve: Curve, point: &[u8]) -> Result<Self> {
        parse_ec_point(curve, point).ok_or(KeyError::Invalid)
    }

    /// An EC key from CKA_EC_PARAMS and CKA_EC_POINT. Errors as [`Curve::parse_ec_params`]
    /// and [`PublicKey::from_ec_point`].
    pub fn from_ec_components(ec_params: &[u8], ec_point: &[u8]) -> Result<Self> {
        Self::from_ec_point(Curve::parse_ec_params(ec_params)?, ec_point)
    }

    /// The DER SubjectPublicKeyInfo (CKA_PUBLIC_KEY_INFO).
    pub fn to_spki_der(&self) -> Vec<u8> {
        let doc = match self {
            Self::Rsa(k) => k.to_public_key_der(),
            Self::P256(k) => k.to_public_key_der(),
            Self::P384(k) => k.to_public_key_der(),
        };
        // Encoding a key that already parsed cannot fail short of running out of memory.
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_else(|e| {
            log::error!("SubjectPublicKeyInfo encoding failed: {e}");
            Vec::new()
        })
    }

    /// CKA_EC_PARAMS of an EC key (its named curve's OID).
    pub fn ec_params_der(&self) -> Option<Vec<u8>> {
        self.curve().map(Curve::ec_params_der)
    }

    /// Type and size of the key.
    pub fn key_info(&self) -> KeyInfo {
        match self {
            Self::Rsa(k) => KeyInfo::Rsa {
                modulus_bits: k.n().bits(),
            },
            Self::P256(_) => KeyInfo::Ec { curve: Curve::P256 },
            Self::P384(_) => KeyInfo::Ec { curve: Curve::P384 },
        }
    }

    /// For EC keys: the curve.
    pub fn curve(&self) -> Option<Curve> {
        match self.key_info() {
            KeyInfo::Ec { curve } => Some(curve),
            KeyInfo::Rsa { .. } => None,
        }
    }

    /// CKA_MODULUS (big-endian, no leading zeros).
    pub fn modulus(&self) -> Option<Vec<u8>> {
        match self {
            Self::Rsa(k) => Some(k.n().to_bytes_be()),
            _ => None,
        }
    }

    /// CKA_PUBLIC_EXPONENT (big-endian, no leading zeros).
    pub fn public_exponent(&self) -> Option<Vec<u8>> {
        match self {
            Self::Rsa(k) => Some(k.e().to_bytes_be()),
            _ => None,
        }
    }

    /// The uncompressed point 04‖X‖Y.
    pub fn ec_point(&self) -> Option<Vec<u8>> {
        match self {
            Self::Rsa(_) => None,
            Self::P256(k) => Some(k.to_encoded_point(false).as_bytes().to_vec()),
            Self::P384(k) => Some(k.to_encoded_point(false).as_bytes().to_vec()),
        }
    }

    /// CKA_EC_POINT as PKCS#11 specifies it: the uncompressed point in a DER OCTET STRING.
    pub fn ec_point_der(&self) -> Option<Vec<u8>> {
        let point = self.ec_point()?;
        OctetStringRef::new(&point).ok()?.to_der().ok()
    }
}

/// A point on `curve`, raw or in a DER OCTET STRING; `None` if neither parses to a valid point.
pub(crate) fn parse_ec_point(curve: Curve, bytes: &[u8]) -> Option<PublicKey> {
    let raw = |b: &[u8]| match curve {
        Curve::P256 => p256::PublicKey::from_sec1_bytes(b)
            .ok()
            .map(PublicKey::P256),
        Curve::P384 => p384::PublicKey::from_sec1_bytes(b)
            .ok()
            .map(PublicKey::P384),
    };
    // The raw lengths (1+2f, 1+f) never equal a wrapped point's (3+2f, 3+f), so trying raw
    // first cannot misread a wrapped value.
    let f = curve.field_len();
    let raw_len = matches!(
        (bytes.len(), bytes.first()),
        (n, Some(0x04)) if n == 1 + 2 * f
    ) || matches!((bytes.len(), bytes.first()), (n, Some(0x02 | 0x03)) if n == 1 + f);
    if raw_len {
        return raw(bytes);
    }
    let inner = OctetStringRef::from_der(bytes).ok()?;
    raw(inner.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_params_round_trip() {
        assert_eq!(
            hex::encode(Curve::P256.ec_params_der()),
            "06082a8648ce3d030107"
        );
        assert_eq!(hex::encode(Curve::P384.ec_params_der()), "06052b81040022");
        for c in [Curve::P256, Curve::P384] {
            assert_eq!(Curve::parse_ec_params(&c.ec_params_der()).unwrap(), c);
            assert_eq!(Curve::from_ec_params(&c.ec_params_der()), Some(c));
            assert_eq!(c.bits(), c.field_len() * 8);
        }
        // secp521r1: a real curve, not ours.
        assert_eq!(
            Curve::parse_ec_params(&hex::decode("06052b81040023").unwrap())
                .unwrap_err()
                .rv(),
            CKR_CURVE_NOT_SUPPORTED
        );
        assert_eq!(
            Curve::parse_ec_params(&[0x30, 0x00]).unwrap_err().rv(),
            CKR_CURVE_NOT_SUPPORTED
        );
        for bad in [&[][..], &[0x06], &[0x06, 0x05, 0x2b], &[0x13, 0x01, 0x41]] {
            assert_eq!(
                Curve::parse_ec_params(bad).unwrap_err().rv(),
                CKR_ATTRIBUTE_VALUE_INVALID
            );
        }
        // Trailing bytes after the OID are not a valid encoding.
        let mut trailing = Curve::P256.ec_params_der();
        trailing.push(0);
        assert!(Curve::parse_ec_params(&trailing).is_err());
        assert_eq!(Curve::from_ec_params(&trailing), None);
    }

    #[test]
    fn ec_public_key_forms() {
        let sk = p384::SecretKey::random(&mut rand::rngs::OsRng);
        let pk = PublicKey::P384(sk.public_key());
        let point = pk.ec_point().unwrap();
        assert_eq!(point.len(), Curve::P384.point_len());
        let wrapped = pk.ec_point_der().unwrap();
        assert_eq!(&wrapped[..2], &[0x04, 97]);
        assert_eq!(&wrapped[2..], point.as_slice());
        assert_eq!(PublicKey::from_ec_point(Curve::P384, &point).unwrap(), pk);
        assert_eq!(PublicKey::from_ec_point(Curve::P384, &wrapped).unwrap(), pk);
        let compressed = sk.public_key().to_encoded_point(true);
        assert_eq!(
            PublicKey::from_ec_point(Curve::P384, compressed.as_bytes()).unwrap(),
            pk
        );
        assert!(PublicKey::from_ec_point(Curve::P256, &point).is_err());
        let mut off_curve = point.clone();
        off_curve[96] ^= 1;
        assert!(PublicKey::from_ec_point(Curve::P384, &off_curve).is_err());

        let spki = pk.to_spki_der();
        assert_eq!(PublicKey::from_spki_der(&spki).unwrap(), pk);
        assert_eq!(pk.ec_params_der().unwrap(), Curve::P384.ec_params_der());
        assert_eq!(
            PublicKey::from_ec_components(&Curve::P384.ec_params_der(), &wrapped).unwrap(),
            pk
        );
        assert_eq!(
            PublicKey::from_ec_components(&Curve::P256.ec_params_der(), &wrapped)
                .unwrap_err()
                .rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(pk.key_info(), KeyInfo::Ec { curve: Curve::P384 });
        assert_eq!(pk.key_info().key_type(), CKK_EC);
        assert_eq!(pk.curve(), Some(Curve::P384));
        assert!(pk.modulus().is_none());
    }

    #[test]
    fn rsa_public_key_forms() {
        let key = crate::token::mechanism::tests::rsa_key();
        let pk = PublicKey::Rsa(key.to_public_key());
        assert_eq!(pk.key_info(), KeyInfo::Rsa { modulus_bits: 2048 });
        assert_eq!(pk.key_info().rsa_len(), Some(256));
        let n = pk.modulus().unwrap();
        let e = pk.public_exponent().unwrap();
        assert_eq!(n.len(), 256);
        assert_eq!(e, vec![1, 0, 1]);
        assert_eq!(PublicKey::from_rsa_components(&n, &e).unwrap(), pk);
        assert!(PublicKey::from_rsa_components(&n, &[2]).is_err());
        let spki = pk.to_spki_der();
        assert_eq!(PublicKey::from_spki_der(&spki).unwrap(), pk);
        assert!(pk.ec_point().is_none() && pk.ec_point_der().is_none());
        assert!(pk.ec_params_der().is_none() && pk.curve().is_none());
        assert_eq!(
            PublicKey::from_spki_der(&spki[..spki.len() - 1])
                .unwrap_err()
                .rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        // An Ed25519 SPKI (RFC 8410 example): well-formed, not a key type we handle.
        let ed = hex::decode(
            "302a300506032b657003210019bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1",
        )
        .unwrap();
        assert_eq!(
            PublicKey::from_spki_der(&ed).unwrap_err().rv(),
            CKR_KEY_TYPE_INCONSISTENT
        );
    }
}
