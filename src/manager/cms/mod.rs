//! CMS signatures (RFC 5652 SignedData) made with the card, and their verification.
//!
//! The card signs through the same core as the PKCS#11 module (C_SignInit / C_Login
//! CKU_CONTEXT_SPECIFIC / C_Sign): [`CardSigner`] plugs a card key into the RustCrypto builders
//! (`cms`, `x509-cert`), which shape the signed attributes and the requests. Verification is
//! host code only (the core's [`VerifyOp`]) and needs no card.

use super::{
    attr_bytes, attr_ulong, certs, fail, with, CardSession, ManagerError, Options, Result,
};
use crate::applet::piv::KeySlot;
use crate::token::mechanism::{Curve, HashAlg, KeyInfo, PublicKey, SignOp, VerifyOp};
use crate::token::{AttrAnswer, MechParam, Mechanism, OutBuf};
use cms::builder::{create_signing_time_attribute, SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo};
use const_oid::db::{rfc5280, rfc5911, rfc5912};
use const_oid::ObjectIdentifier;
use cryptoki_sys::*;
use der::asn1::BitString;
use der::{Any, Decode, Encode, Tag};
use ecdsa::signature::{self, Keypair};
use serde::Serialize;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// Prints a line on standard output; a closed pipe (`| head`, `| grep -q`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `tessera sign`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tessera sign contract.pdf                      detached signature contract.pdf.p7s (key 9c, else 9a)
  tessera sign --attached --slot 9a memo.txt     the file inside the signature
  openssl cms -verify -binary -inform DER -in contract.pdf.p7s -content contract.pdf -CAfile ca.pem")]
pub struct SignArgs {
    /// The file to sign.
    pub file: PathBuf,
    /// Key slot (default: 9c when it holds a certificate, else 9a).
    #[arg(long)]
    pub slot: Option<String>,
    /// Where to write the signature (default: FILE.p7s).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Put the file's content inside the signature (default: detached).
    #[arg(long)]
    pub attached: bool,
    /// Write PEM ("-----BEGIN CMS-----") instead of DER.
    #[arg(long)]
    pub pem: bool,
    /// Sign even when the certificate is expired or not yet valid.
    #[arg(long)]
    pub force: bool,
}

/// `tessera verify`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tessera verify contract.pdf.p7s contract.pdf   a detached signature and its file
  tessera verify memo.txt.p7s                    an attached signature
  tessera verify --ca ca.pem contract.pdf.p7s contract.pdf   trust your issuer's CA")]
pub struct VerifyArgs {
    /// The signature (.p7s, DER or PEM).
    pub signature: PathBuf,
    /// The signed file (needed for a detached signature; for an attached one it must match).
    pub file: Option<PathBuf>,
    /// Trust the CA certificates in FILE (PEM or DER): the signer must chain to one of them,
    /// through intermediates carried in the signature (default: the system's trust store).
    /// An intact signature whose signer does not chain to a trusted CA exits with status 7.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Write the signed content of an attached signature to FILE.
    #[arg(long, value_name = "FILE")]
    pub extract: Option<PathBuf>,
}

mod files;
mod sign;
mod signer;
mod verify;

pub use files::*;
pub use sign::*;
pub use signer::*;
pub use verify::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_pick_labels() {
        let text = b"junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n-----BEGIN CMS-----\nBAU=\n-----END CMS-----\n";
        assert_eq!(
            pem_blocks(text, &["CERTIFICATE"]).unwrap(),
            vec![vec![1, 2, 3]]
        );
        assert_eq!(pem_blocks(text, &["CMS"]).unwrap(), vec![vec![4, 5]]);
        assert_eq!(pem_blocks(text, &[]).unwrap().len(), 2);
        assert!(pem_blocks(&[0x30, 0x03, 1, 2, 3], &[]).is_none());
    }

    #[test]
    fn ecdsa_encodings_round_trip() {
        let mut raw = vec![0u8; 64];
        raw[31] = 7;
        raw[63] = 9;
        let der_sig = ecdsa_raw_to_der(Curve::P256, &raw).unwrap();
        assert_eq!(der_sig, vec![0x30, 0x06, 0x02, 0x01, 7, 0x02, 0x01, 9]);
        assert_eq!(ecdsa_der_to_raw(Curve::P256, &der_sig).unwrap(), raw);
        assert!(ecdsa_der_to_raw(Curve::P384, &[0x30, 0x00]).is_none());
    }

    #[test]
    fn digest_names() {
        assert_eq!(digest_of(&rfc5912::ID_SHA_256), Some(HashAlg::Sha256));
        assert_eq!(
            hash_of_signature(&rfc5912::ECDSA_WITH_SHA_384),
            Some(HashAlg::Sha384)
        );
        assert_eq!(hash_of_signature(&rfc5912::RSA_ENCRYPTION), None);
    }

    #[test]
    fn detached_signature_needs_its_file() {
        let err = verify_bytes(b"\x30\x03\x02\x01\x00", None, &[]).unwrap_err();
        assert!(err.message.contains("not a CMS signature"));
    }
}
