//! Session management functions: open and close sessions, session info, login and logout.
//! Operation state save/restore is not offered (a card operation cannot be serialised).

use super::entry::{cryptoki_fixed, cryptoki_fn, in_session};
use super::raw;
use crate::token::library;
use cryptoki_sys::*;
use std::ffi::c_void;

cryptoki_fn! {
    /// C_OpenSession: CKF_SERIAL_SESSION is required (CKR_SESSION_PARALLEL_NOT_SUPPORTED
    /// otherwise, as the spec says "for legacy reasons"); the application's notify callback is
    /// never called (Tessera sends no notifications), so pApplication and Notify are ignored.
    export fn C_OpenSession(
        slotID: CK_SLOT_ID,
        flags: CK_FLAGS,
        pApplication: *mut c_void,
        Notify: CK_NOTIFY,
        phSession: *mut CK_SESSION_HANDLE,
    ) {
        let _ = (pApplication, Notify);
        library::with(|lib| {
            if phSession.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            if flags & CKF_SERIAL_SESSION == 0 {
                return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED.into());
            }
            let session = lib.open_session(slotID, flags)?;
            // SAFETY: not NULL; a writable CK_SESSION_HANDLE (PKCS#11 contract).
            unsafe { raw::write(phSession, session) }
        })
    }
}

cryptoki_fn! {
    /// C_CloseSession.
    export fn C_CloseSession(hSession: CK_SESSION_HANDLE) {
        library::with(|lib| lib.close_session(hSession))
    }
}

cryptoki_fn! {
    /// C_CloseAllSessions.
    export fn C_CloseAllSessions(slotID: CK_SLOT_ID) {
        library::with(|lib| lib.close_all_sessions(slotID))
    }
}

cryptoki_fn! {
    /// C_GetSessionInfo.
    export fn C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: *mut CK_SESSION_INFO) {
        in_session(hSession, |lib| {
            if pInfo.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let info = lib.session_info(hSession)?;
            // SAFETY: not NULL; a writable CK_SESSION_INFO (PKCS#11 contract).
            unsafe { raw::write(pInfo, info) }
        })
    }
}

cryptoki_fn! {
    /// C_Login: CKU_USER (PIN), CKU_SO (PUK), CKU_CONTEXT_SPECIFIC. There is no protected
    /// authentication path, so a NULL PIN is CKR_ARGUMENTS_BAD even with length 0.
    export fn C_Login(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG) {
        in_session(hSession, |lib| {
            if pPin.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            // SAFETY: not NULL; ulPinLen readable bytes (PKCS#11 contract).
            let pin = unsafe { raw::slice(pPin.cast_const(), ulPinLen) }?;
            log::debug!("C_Login: session {hSession}, user type {userType}");
            lib.login(hSession, userType, pin)
        })
    }
}

cryptoki_fn! {
    /// C_Logout.
    export fn C_Logout(hSession: CK_SESSION_HANDLE) {
        library::with(|lib| lib.logout(hSession))
    }
}

cryptoki_fixed! {
    export CKR_FUNCTION_NOT_SUPPORTED =>
    fn C_GetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: *mut CK_BYTE, pulOperationStateLen: *mut CK_ULONG);
    fn C_SetOperationState(
        hSession: CK_SESSION_HANDLE,
        pOperationState: *mut CK_BYTE,
        ulOperationStateLen: CK_ULONG,
        hEncryptionKey: CK_OBJECT_HANDLE,
        hAuthenticationKey: CK_OBJECT_HANDLE,
    );
}
