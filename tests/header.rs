//! The C header `include/tessera_pkcs11.h` (written by build.rs with cbindgen) against the
//! crate: every constant it defines has the value the code uses, and it declares exactly the
//! functions the module exports (the Cryptoki 2.40 functions and the two 3.0 interface
//! functions; the other 3.0 functions are reachable only through the 3.0 function list).
//!
//! That the checked-in header equals a fresh build's is checked by the package step of the
//! test command (`pkg/scripts/check-deb.sh`: `git status` of include/ after the build).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use tessera_pkcs11::applet::piv::slots::KeySlot;

const HEADER: &str = include_str!("../include/tessera_pkcs11.h");

/// The value of `#define NAME value`.
fn define(name: &str) -> String {
    let prefix = format!("#define {name} ");
    HEADER
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the header does not define {name}"))
        .trim()
        .to_owned()
}

/// A string `#define`, unquoted.
fn define_str(name: &str) -> String {
    let v = define(name);
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{name} is not a string literal: {v}"))
        .to_owned()
}

fn define_u8(name: &str) -> u8 {
    let v = define(name);
    match v.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16).unwrap(),
        None => v.parse().unwrap(),
    }
}

#[test]
fn constants_match_the_code() {
    assert_eq!(
        define_str("TESSERA_PKCS11_VERSION"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        define_u8("TESSERA_PKCS11_VERSION_MAJOR").to_string(),
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert_eq!(
        define_u8("TESSERA_PKCS11_VERSION_MINOR").to_string(),
        env!("CARGO_PKG_VERSION_MINOR")
    );
    assert_eq!(
        define_str("TESSERA_PKCS11_MODULE_FILE"),
        tessera_pkcs11::manager::register::MODULE_FILE
    );
    assert_eq!(
        define_str("TESSERA_PKCS11_MODULE_NAME"),
        tessera_pkcs11::manager::register::MODULE_NAME
    );
    assert_eq!(
        define_str("TESSERA_PKCS11_MANUFACTURER"),
        tessera_pkcs11::token::MANUFACTURER
    );
    assert_eq!(
        define_str("TESSERA_PKCS11_LIBRARY_DESCRIPTION"),
        tessera_pkcs11::token::LIBRARY_DESCRIPTION
    );
    assert_eq!(
        define_str("TESSERA_PKCS11_ENV_LOG"),
        tessera_pkcs11::pkcs11::logging::ENV_LOG
    );
    assert_eq!(
        define_str("TESSERA_PKCS11_ENV_LOG_FILE"),
        tessera_pkcs11::pkcs11::logging::ENV_LOG_FILE
    );
    assert_eq!(
        define_str("TESSERA_PKCS11_ENV_VCARD"),
        tessera_pkcs11::vcard::ENV_VCARD
    );
    for (name, slot) in [
        (
            "TESSERA_PKCS11_CKA_ID_PIV_AUTHENTICATION",
            KeySlot::AUTHENTICATION,
        ),
        (
            "TESSERA_PKCS11_CKA_ID_DIGITAL_SIGNATURE",
            KeySlot::SIGNATURE,
        ),
        (
            "TESSERA_PKCS11_CKA_ID_KEY_MANAGEMENT",
            KeySlot::KEY_MANAGEMENT,
        ),
        (
            "TESSERA_PKCS11_CKA_ID_CARD_AUTHENTICATION",
            KeySlot::CARD_AUTHENTICATION,
        ),
    ] {
        assert_eq!(define_u8(name), slot.cka_id(), "{name}");
    }
}

/// The Cryptoki 2.40 functions, in the order of CK_FUNCTION_LIST.
const CRYPTOKI_2_40: [&str; 68] = [
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
];

#[test]
fn declares_exactly_the_exported_functions() {
    let declared: BTreeSet<&str> = HEADER
        .lines()
        .filter_map(|l| l.strip_prefix("CK_RV "))
        .filter_map(|l| l.split('(').next())
        .collect();
    let mut expected: BTreeSet<&str> = CRYPTOKI_2_40.into_iter().collect();
    expected.extend(["C_GetInterfaceList", "C_GetInterface"]);
    assert_eq!(declared, expected);
}

#[test]
fn is_self_describing() {
    assert!(HEADER.contains("#ifndef TESSERA_PKCS11_H"));
    assert!(HEADER.contains("#include <p11-kit/pkcs11.h>"));
    assert!(HEADER.contains("Generated by build.rs"));
    assert!(HEADER.contains("extern \"C\""));
}
