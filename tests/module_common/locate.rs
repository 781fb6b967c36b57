//! Where the built module is, and what it must export: shared by every test crate that loads
//! `libtessera_pkcs11.so` (pkcs11_raw, header, module_inprocess, module_pcscd).

#![allow(dead_code)]

use std::path::PathBuf;

/// File name of the built module.
pub const MODULE_FILE: &str = "libtessera_pkcs11.so";

/// Every PKCS#11 2.40 function plus the two 3.0 interface functions, as exported symbols.
pub const EXPORTS: [&str; 70] = [
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
    "C_GetInterfaceList",
    "C_GetInterface",
];

/// The built module: `TESSERA_MODULE`, else the newest of target/<profile>/ and
/// target/<profile>/deps/ next to this test executable.
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TESSERA_MODULE") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "TESSERA_MODULE={} does not exist: build the module first: cargo build",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    let profile = deps.parent().expect("profile directory");
    let newest = [profile.join(MODULE_FILE), deps.join(MODULE_FILE)]
        .into_iter()
        .filter_map(|p| {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((modified, p))
        })
        .max_by_key(|(modified, _)| *modified);
    match newest {
        Some((_, p)) => p,
        None => panic!(
            "{MODULE_FILE} not found in {}: build the module first: cargo build \
             (or set TESSERA_MODULE to its path)",
            profile.display()
        ),
    }
}
