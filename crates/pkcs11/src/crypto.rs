//! Cryptographic functions: encrypt, decrypt, digest, sign, verify, key generation and
//! derivation, random numbers. Inputs are copied before the caller's output buffer is borrowed
//! (the spec lets some of them be the same memory); outputs follow the (pBuf, pulLen)
//! convention through `raw::out_buf`. Multi-part encryption and decryption, recovery, dual
//! functions, wrapping and secret-key generation are not offered.
//!
//! Every call checks its session before its pointers (§5.1.7); a call that continues or
//! finishes an operation ends it on any error but CKR_BUFFER_TOO_SMALL, bad pointers included
//! (§5.13); C_xxxInit with a NULL mechanism cancels the operation of its kind (PKCS#11 3.0).

use super::entry::{cryptoki_fixed, cryptoki_fn, in_operation, in_session};
use super::raw;
use crate::token::library::OperationKind;
use crate::token::Error;
use cryptoki_sys::*;

/// Defines C_xxxInit(hSession, pMechanism, hKey) for an operation that takes a key; a NULL
/// pMechanism cancels the active operation of that kind.
macro_rules! init_with_key {
    ($(#[$meta:meta])* $name:ident => $method:ident, $kind:ident) => {
        cryptoki_fn! {
            $(#[$meta])*
            export fn $name(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE) {
                in_session(hSession, |lib| {
                    if pMechanism.is_null() {
                        return lib.end_operation(hSession, OperationKind::$kind);
                    }
                    // SAFETY: a non-NULL pMechanism points to a CK_MECHANISM with its parameter
                    // (PKCS#11 contract).
                    let mech = unsafe { raw::decode_mechanism(pMechanism.cast_const()) }?;
                    log::debug!("{}: mechanism {:#x}, key {hKey}", stringify!($name), mech.ty);
                    lib.$method(hSession, &mech, hKey)
                })
            }
        }
    };
}

/// Defines a single-part C_xxx(hSession, pIn, ulInLen, pOut, pulOutLen).
macro_rules! single_part {
    ($(#[$meta:meta])* $name:ident => $method:ident, $kind:ident) => {
        cryptoki_fn! {
            $(#[$meta])*
            export fn $name(
                hSession: CK_SESSION_HANDLE,
                pIn: *mut CK_BYTE,
                ulInLen: CK_ULONG,
                pOut: *mut CK_BYTE,
                pulOutLen: *mut CK_ULONG,
            ) {
                in_operation(hSession, OperationKind::$kind, |lib| {
                    // SAFETY: a non-NULL pIn holds ulInLen bytes (PKCS#11 contract); they are
                    // copied before the output buffer is borrowed.
                    let input = unsafe { raw::bytes_owned(pIn.cast_const(), ulInLen) }?;
                    // SAFETY: pulOutLen is a writable CK_ULONG, a non-NULL pOut holds
                    // *pulOutLen writable bytes; the input is our own copy.
                    unsafe { raw::out_buf(pOut, pulOutLen, |out| lib.$method(hSession, &input, out)) }
                })
            }
        }
    };
}

/// Defines C_xxxUpdate(hSession, pPart, ulPartLen) for an operation without update output.
macro_rules! update {
    ($(#[$meta:meta])* $name:ident => $method:ident, $kind:ident) => {
        cryptoki_fn! {
            $(#[$meta])*
            export fn $name(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG) {
                in_operation(hSession, OperationKind::$kind, |lib| {
                    // SAFETY: a non-NULL pPart holds ulPartLen bytes (PKCS#11 contract).
                    let part = unsafe { raw::slice(pPart.cast_const(), ulPartLen) }?;
                    lib.$method(hSession, part)
                })
            }
        }
    };
}

/// Defines C_xxxFinal(hSession, pOut, pulOutLen).
macro_rules! finish {
    ($(#[$meta:meta])* $name:ident => $method:ident, $kind:ident) => {
        cryptoki_fn! {
            $(#[$meta])*
            export fn $name(hSession: CK_SESSION_HANDLE, pOut: *mut CK_BYTE, pulOutLen: *mut CK_ULONG) {
                in_operation(hSession, OperationKind::$kind, |lib| {
                    // SAFETY: pulOutLen is a writable CK_ULONG, a non-NULL pOut holds
                    // *pulOutLen writable bytes (PKCS#11 contract).
                    unsafe { raw::out_buf(pOut, pulOutLen, |out| lib.$method(hSession, out)) }
                })
            }
        }
    };
}

init_with_key!(
    /// C_EncryptInit (public-key encryption on the host); a NULL pMechanism cancels the active
    /// encryption.
    C_EncryptInit => encrypt_init, Encrypt
);
single_part!(
    /// C_Encrypt.
    C_Encrypt => encrypt, Encrypt
);
init_with_key!(
    /// C_DecryptInit (RSA PKCS#1 v1.5, OAEP, raw on the card); a NULL pMechanism cancels the
    /// active decryption.
    C_DecryptInit => decrypt_init, Decrypt
);
single_part!(
    /// C_Decrypt.
    C_Decrypt => decrypt, Decrypt
);

cryptoki_fn! {
    /// C_DigestInit; a NULL pMechanism cancels the active digest.
    export fn C_DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM) {
        in_session(hSession, |lib| {
            if pMechanism.is_null() {
                return lib.end_operation(hSession, OperationKind::Digest);
            }
            // SAFETY: a non-NULL pMechanism points to a CK_MECHANISM with its parameter (PKCS#11
            // contract).
            let mech = unsafe { raw::decode_mechanism(pMechanism.cast_const()) }?;
            lib.digest_init(hSession, &mech)
        })
    }
}
single_part!(
    /// C_Digest.
    C_Digest => digest, Digest
);
update!(
    /// C_DigestUpdate.
    C_DigestUpdate => digest_update, Digest
);
finish!(
    /// C_DigestFinal.
    C_DigestFinal => digest_final, Digest
);

init_with_key!(
    /// C_SignInit; a NULL pMechanism cancels the active signature.
    C_SignInit => sign_init, Sign
);
single_part!(
    /// C_Sign.
    C_Sign => sign, Sign
);
update!(
    /// C_SignUpdate.
    C_SignUpdate => sign_update, Sign
);
finish!(
    /// C_SignFinal.
    C_SignFinal => sign_final, Sign
);

init_with_key!(
    /// C_VerifyInit (on the host, with the public key); a NULL pMechanism cancels the active
    /// verification.
    C_VerifyInit => verify_init, Verify
);
cryptoki_fn! {
    /// C_Verify.
    export fn C_Verify(
        hSession: CK_SESSION_HANDLE,
        pData: *mut CK_BYTE,
        ulDataLen: CK_ULONG,
        pSignature: *mut CK_BYTE,
        ulSignatureLen: CK_ULONG,
    ) {
        in_operation(hSession, OperationKind::Verify, |lib| {
            // SAFETY: a non-NULL pData holds ulDataLen bytes (PKCS#11 contract).
            let data = unsafe { raw::slice(pData.cast_const(), ulDataLen) }?;
            // SAFETY: a non-NULL pSignature holds ulSignatureLen bytes (PKCS#11 contract).
            let signature = unsafe { raw::slice(pSignature.cast_const(), ulSignatureLen) }?;
            lib.verify(hSession, data, signature)
        })
    }
}
update!(
    /// C_VerifyUpdate.
    C_VerifyUpdate => verify_update, Verify
);
cryptoki_fn! {
    /// C_VerifyFinal.
    export fn C_VerifyFinal(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG) {
        in_operation(hSession, OperationKind::Verify, |lib| {
            // SAFETY: a non-NULL pSignature holds ulSignatureLen bytes (PKCS#11 contract).
            let signature = unsafe { raw::slice(pSignature.cast_const(), ulSignatureLen) }?;
            lib.verify_final(hSession, signature)
        })
    }
}

cryptoki_fn! {
    /// C_GenerateKeyPair: RSA and EC key pairs generated on the card.
    export fn C_GenerateKeyPair(
        hSession: CK_SESSION_HANDLE,
        pMechanism: *mut CK_MECHANISM,
        pPublicKeyTemplate: *mut CK_ATTRIBUTE,
        ulPublicKeyAttributeCount: CK_ULONG,
        pPrivateKeyTemplate: *mut CK_ATTRIBUTE,
        ulPrivateKeyAttributeCount: CK_ULONG,
        phPublicKey: *mut CK_OBJECT_HANDLE,
        phPrivateKey: *mut CK_OBJECT_HANDLE,
    ) {
        in_session(hSession, |lib| {
            if phPublicKey.is_null() || phPrivateKey.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            // SAFETY: a non-NULL pMechanism points to a CK_MECHANISM with its parameter (PKCS#11
            // contract).
            let mech = unsafe { raw::decode_mechanism(pMechanism.cast_const()) }?;
            // SAFETY: a non-NULL template holds its count of attributes with their values.
            let public = unsafe { raw::read_template(pPublicKeyTemplate.cast_const(), ulPublicKeyAttributeCount) }?;
            // SAFETY: as above.
            let private = unsafe { raw::read_template(pPrivateKeyTemplate.cast_const(), ulPrivateKeyAttributeCount) }?;
            log::debug!("C_GenerateKeyPair: mechanism {:#x}, public {public:?}, private {private:?}", mech.ty);
            let (pub_handle, priv_handle) = lib.generate_key_pair(hSession, &mech, &public, &private)?;
            // SAFETY: not NULL; writable CK_OBJECT_HANDLEs (PKCS#11 contract).
            unsafe { raw::write(phPublicKey, pub_handle) }?;
            // SAFETY: as above.
            unsafe { raw::write(phPrivateKey, priv_handle) }
        })
    }
}

cryptoki_fn! {
    /// C_DeriveKey: ECDH1 with a card private key.
    export fn C_DeriveKey(
        hSession: CK_SESSION_HANDLE,
        pMechanism: *mut CK_MECHANISM,
        hBaseKey: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulAttributeCount: CK_ULONG,
        phKey: *mut CK_OBJECT_HANDLE,
    ) {
        in_session(hSession, |lib| {
            if phKey.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            // SAFETY: a non-NULL pMechanism points to a CK_MECHANISM with its parameter (PKCS#11
            // contract).
            let mech = unsafe { raw::decode_mechanism(pMechanism.cast_const()) }?;
            // SAFETY: a non-NULL pTemplate holds ulAttributeCount attributes with their values.
            let template = unsafe { raw::read_template(pTemplate.cast_const(), ulAttributeCount) }?;
            log::debug!("C_DeriveKey: mechanism {:#x}, base {hBaseKey}, {template:?}", mech.ty);
            let key = lib.derive_key(hSession, &mech, hBaseKey, &template)?;
            // SAFETY: not NULL; a writable CK_OBJECT_HANDLE (PKCS#11 contract).
            unsafe { raw::write(phKey, key) }
        })
    }
}

cryptoki_fn! {
    /// C_GenerateRandom.
    export fn C_GenerateRandom(hSession: CK_SESSION_HANDLE, RandomData: *mut CK_BYTE, ulRandomLen: CK_ULONG) {
        in_session(hSession, |lib| {
            // SAFETY: a non-NULL RandomData holds ulRandomLen writable bytes (PKCS#11 contract).
            let out = unsafe { raw::slice_mut(RandomData, ulRandomLen) }?;
            lib.generate_random(hSession, out)
        })
    }
}

cryptoki_fixed! {
    export CKR_FUNCTION_NOT_SUPPORTED =>
    fn C_EncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG, pEncryptedPart: *mut CK_BYTE, pulEncryptedPartLen: *mut CK_ULONG);
    fn C_EncryptFinal(hSession: CK_SESSION_HANDLE, pLastEncryptedPart: *mut CK_BYTE, pulLastEncryptedPartLen: *mut CK_ULONG);
    fn C_DecryptUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: *mut CK_BYTE, ulEncryptedPartLen: CK_ULONG, pPart: *mut CK_BYTE, pulPartLen: *mut CK_ULONG);
    fn C_DecryptFinal(hSession: CK_SESSION_HANDLE, pLastPart: *mut CK_BYTE, pulLastPartLen: *mut CK_ULONG);
    fn C_DigestKey(hSession: CK_SESSION_HANDLE, hKey: CK_OBJECT_HANDLE);
    fn C_SignRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE);
    fn C_SignRecover(hSession: CK_SESSION_HANDLE, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG);
    fn C_VerifyRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE);
    fn C_VerifyRecover(hSession: CK_SESSION_HANDLE, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG, pData: *mut CK_BYTE, pulDataLen: *mut CK_ULONG);
    fn C_DigestEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG, pEncryptedPart: *mut CK_BYTE, pulEncryptedPartLen: *mut CK_ULONG);
    fn C_DecryptDigestUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: *mut CK_BYTE, ulEncryptedPartLen: CK_ULONG, pPart: *mut CK_BYTE, pulPartLen: *mut CK_ULONG);
    fn C_SignEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: *mut CK_BYTE, ulPartLen: CK_ULONG, pEncryptedPart: *mut CK_BYTE, pulEncryptedPartLen: *mut CK_ULONG);
    fn C_DecryptVerifyUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: *mut CK_BYTE, ulEncryptedPartLen: CK_ULONG, pPart: *mut CK_BYTE, pulPartLen: *mut CK_ULONG);
    fn C_GenerateKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE);
    fn C_WrapKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hWrappingKey: CK_OBJECT_HANDLE, hKey: CK_OBJECT_HANDLE, pWrappedKey: *mut CK_BYTE, pulWrappedKeyLen: *mut CK_ULONG);
    fn C_UnwrapKey(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hUnwrappingKey: CK_OBJECT_HANDLE, pWrappedKey: *mut CK_BYTE, ulWrappedKeyLen: CK_ULONG, pTemplate: *mut CK_ATTRIBUTE, ulAttributeCount: CK_ULONG, phKey: *mut CK_OBJECT_HANDLE);
}

cryptoki_fn! {
    /// C_SeedRandom: the operating system's generator takes no seed from an application, so a
    /// valid call answers CKR_RANDOM_SEED_NOT_SUPPORTED (after the session and the seed's
    /// pointer are checked, in that order).
    export fn C_SeedRandom(hSession: CK_SESSION_HANDLE, pSeed: *mut CK_BYTE, ulSeedLen: CK_ULONG) {
        in_session(hSession, |_| {
            // SAFETY: a non-NULL pSeed holds ulSeedLen bytes (PKCS#11 contract); only the
            // pointer and length are checked, the bytes are not used.
            unsafe { raw::slice(pSeed.cast_const(), ulSeedLen) }?;
            Err(Error::new(CKR_RANDOM_SEED_NOT_SUPPORTED))
        })
    }
}

cryptoki_fixed! {
    export CKR_FUNCTION_NOT_PARALLEL =>
    fn C_GetFunctionStatus(hSession: CK_SESSION_HANDLE);
    fn C_CancelFunction(hSession: CK_SESSION_HANDLE);
}
