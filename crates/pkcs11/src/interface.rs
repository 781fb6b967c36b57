//! How applications find our functions: the 2.40 function list (C_GetFunctionList), the 3.0
//! function list and the "PKCS 11" interfaces (C_GetInterfaceList, C_GetInterface). The lists
//! are immutable statics; the 3.0-only functions (C_LoginUser, C_SessionCancel, message-based
//! functions) are reachable only through the 3.0 list and answer CKR_FUNCTION_NOT_SUPPORTED.

use super::crypto::*;
use super::entry::{cryptoki_fixed, cryptoki_fn};
use super::general::*;
use super::object::*;
use super::raw;
use super::session::*;
use super::slot::*;
use crate::token::Error;
use cryptoki_sys::*;
use std::ffi::c_void;
use std::ptr;

/// The interface name both interfaces carry, NUL-terminated for C.
static INTERFACE_NAME: [u8; 8] = *b"PKCS 11\0";

/// Fills a function-list struct with the 2.40 entries plus `extra` ones; `$get_info` reports
/// the list's own version.
macro_rules! function_list {
    ($ty:ident, $version:expr, $get_info:ident, [$($extra:ident),* $(,)?]) => {
        $ty {
            version: $version,
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetInfo: Some($get_info),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some(C_EncryptInit),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some(C_DecryptInit),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some(C_DigestInit),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some(C_SignInit),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some(C_VerifyInit),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $($extra: Some($extra),)*
        }
    };
}

/// The Cryptoki 2.40 function list C_GetFunctionList hands out.
pub(crate) static FUNCTION_LIST: CK_FUNCTION_LIST =
    function_list!(CK_FUNCTION_LIST, CRYPTOKI_VERSION_2_40, C_GetInfo, []);

/// The Cryptoki 3.0 function list of the default "PKCS 11" interface.
pub(crate) static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 = function_list!(
    CK_FUNCTION_LIST_3_0,
    CRYPTOKI_VERSION_3_0,
    C_GetInfo_3_0,
    [
        C_GetInterfaceList,
        C_GetInterface,
        C_LoginUser,
        C_SessionCancel,
        C_MessageEncryptInit,
        C_EncryptMessage,
        C_EncryptMessageBegin,
        C_EncryptMessageNext,
        C_MessageEncryptFinal,
        C_MessageDecryptInit,
        C_DecryptMessage,
        C_DecryptMessageBegin,
        C_DecryptMessageNext,
        C_MessageDecryptFinal,
        C_MessageSignInit,
        C_SignMessage,
        C_SignMessageBegin,
        C_SignMessageNext,
        C_MessageSignFinal,
        C_MessageVerifyInit,
        C_VerifyMessage,
        C_VerifyMessageBegin,
        C_VerifyMessageNext,
        C_MessageVerifyFinal,
    ]
);

/// The interfaces, default (3.0) first. CK_INTERFACE holds raw pointers, hence the wrapper.
struct Interfaces([CK_INTERFACE; 2]);

// SAFETY: the pointers inside point to immutable statics (the name and the function lists);
// nothing ever writes through them, so sharing them between threads is sound.
unsafe impl Sync for Interfaces {}

static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut(),
        pFunctionList: ptr::addr_of!(FUNCTION_LIST_3_0).cast::<c_void>().cast_mut(),
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr().cast_mut(),
        pFunctionList: ptr::addr_of!(FUNCTION_LIST).cast::<c_void>().cast_mut(),
        flags: 0,
    },
]);

/// The version at the head of an interface's function list (both lists start with it).
fn interface_version(interface: &CK_INTERFACE) -> CK_VERSION {
    if ptr::eq(
        interface.pFunctionList.cast_const(),
        ptr::addr_of!(FUNCTION_LIST_3_0).cast(),
    ) {
        FUNCTION_LIST_3_0.version
    } else {
        FUNCTION_LIST.version
    }
}

/// The first interface matching the request: name (when given) "PKCS 11", version (when
/// given) exactly, and every requested flag.
fn find_interface(
    name: Option<&[u8]>,
    version: Option<CK_VERSION>,
    flags: CK_FLAGS,
) -> Option<&'static CK_INTERFACE> {
    let ours = INTERFACE_NAME
        .strip_suffix(b"\0")
        .unwrap_or(&INTERFACE_NAME);
    INTERFACES.0.iter().find(|i| {
        let v = interface_version(i);
        name.is_none_or(|n| n == ours)
            && version.is_none_or(|w| (w.major, w.minor) == (v.major, v.minor))
            && i.flags & flags == flags
    })
}

cryptoki_fn! {
    /// C_GetFunctionList: the 2.40 function list.
    export fn C_GetFunctionList(ppFunctionList: *mut *mut CK_FUNCTION_LIST) {
        let list = ptr::addr_of!(FUNCTION_LIST).cast_mut();
        // SAFETY: NULL checked by `write`; else a writable pointer slot (PKCS#11 contract).
        unsafe { raw::write(ppFunctionList, list) }
    }
}

cryptoki_fn! {
    /// C_GetInterfaceList: NULL list → count (2); a short list → CKR_BUFFER_TOO_SMALL.
    export fn C_GetInterfaceList(pInterfacesList: *mut CK_INTERFACE, pulCount: *mut CK_ULONG) {
        if pulCount.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        // SAFETY: pulCount is a writable CK_ULONG and a non-NULL pInterfacesList holds
        // *pulCount CK_INTERFACEs (PKCS#11 contract).
        unsafe { raw::out_list(pInterfacesList, pulCount, &INTERFACES.0) }
    }
}

cryptoki_fn! {
    /// C_GetInterface: NULL name → the default (3.0) interface; a name must be "PKCS 11"; a
    /// version must match exactly. No match → CKR_ARGUMENTS_BAD.
    export fn C_GetInterface(
        pInterfaceName: *mut CK_UTF8CHAR,
        pVersion: *mut CK_VERSION,
        ppInterface: *mut *mut CK_INTERFACE,
        flags: CK_FLAGS,
    ) {
        if ppInterface.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        // SAFETY: a non-NULL pInterfaceName is a NUL-terminated string (PKCS#11 contract).
        let name = unsafe { raw::c_str(pInterfaceName.cast_const()) };
        let version = if pVersion.is_null() {
            None
        } else {
            // SAFETY: not NULL; a readable CK_VERSION (PKCS#11 contract).
            Some(unsafe { raw::read(pVersion.cast_const()) }?)
        };
        let found = find_interface(name.map(std::ffi::CStr::to_bytes), version, flags)
            .ok_or(Error::new(CKR_ARGUMENTS_BAD))?;
        // SAFETY: not NULL; a writable pointer slot (PKCS#11 contract).
        unsafe { raw::write(ppInterface, ptr::from_ref(found).cast_mut()) }
    }
}

cryptoki_fixed! {
    internal CKR_FUNCTION_NOT_SUPPORTED =>
    fn C_LoginUser(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG, pUsername: *mut CK_UTF8CHAR, ulUsernameLen: CK_ULONG);
    fn C_SessionCancel(hSession: CK_SESSION_HANDLE, flags: CK_FLAGS);
    fn C_MessageEncryptInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE);
    fn C_EncryptMessage(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pAssociatedData: *mut CK_BYTE, ulAssociatedDataLen: CK_ULONG, pPlaintext: *mut CK_BYTE, ulPlaintextLen: CK_ULONG, pCiphertext: *mut CK_BYTE, pulCiphertextLen: *mut CK_ULONG);
    fn C_EncryptMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pAssociatedData: *mut CK_BYTE, ulAssociatedDataLen: CK_ULONG);
    fn C_EncryptMessageNext(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pPlaintextPart: *mut CK_BYTE, ulPlaintextPartLen: CK_ULONG, pCiphertextPart: *mut CK_BYTE, pulCiphertextPartLen: *mut CK_ULONG, flags: CK_FLAGS);
    fn C_MessageEncryptFinal(hSession: CK_SESSION_HANDLE);
    fn C_MessageDecryptInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE);
    fn C_DecryptMessage(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pAssociatedData: *mut CK_BYTE, ulAssociatedDataLen: CK_ULONG, pCiphertext: *mut CK_BYTE, ulCiphertextLen: CK_ULONG, pPlaintext: *mut CK_BYTE, pulPlaintextLen: *mut CK_ULONG);
    fn C_DecryptMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pAssociatedData: *mut CK_BYTE, ulAssociatedDataLen: CK_ULONG);
    fn C_DecryptMessageNext(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pCiphertextPart: *mut CK_BYTE, ulCiphertextPartLen: CK_ULONG, pPlaintextPart: *mut CK_BYTE, pulPlaintextPartLen: *mut CK_ULONG, flags: CK_FLAGS);
    fn C_MessageDecryptFinal(hSession: CK_SESSION_HANDLE);
    fn C_MessageSignInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE);
    fn C_SignMessage(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG);
    fn C_SignMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG);
    fn C_SignMessageNext(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, pulSignatureLen: *mut CK_ULONG);
    fn C_MessageSignFinal(hSession: CK_SESSION_HANDLE);
    fn C_MessageVerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM, hKey: CK_OBJECT_HANDLE);
    fn C_VerifyMessage(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG);
    fn C_VerifyMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG);
    fn C_VerifyMessageNext(hSession: CK_SESSION_HANDLE, pParameter: *mut c_void, ulParameterLen: CK_ULONG, pData: *mut CK_BYTE, ulDataLen: CK_ULONG, pSignature: *mut CK_BYTE, ulSignatureLen: CK_ULONG);
    fn C_MessageVerifyFinal(hSession: CK_SESSION_HANDLE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_lookup() {
        let v30 = CK_VERSION { major: 3, minor: 0 };
        let v240 = CK_VERSION {
            major: 2,
            minor: 40,
        };
        let default = find_interface(None, None, 0).map(interface_version);
        assert_eq!(default.map(|v| (v.major, v.minor)), Some((3, 0)));
        let named = find_interface(Some(b"PKCS 11"), Some(v240), 0).map(interface_version);
        assert_eq!(named.map(|v| (v.major, v.minor)), Some((2, 40)));
        assert!(find_interface(Some(b"PKCS 11"), Some(v30), 0).is_some());
        assert!(find_interface(Some(b"Vendor"), None, 0).is_none());
        assert!(find_interface(
            None,
            Some(CK_VERSION {
                major: 2,
                minor: 20
            }),
            0
        )
        .is_none());
        assert!(find_interface(None, None, CKF_INTERFACE_FORK_SAFE).is_none());
    }
}
