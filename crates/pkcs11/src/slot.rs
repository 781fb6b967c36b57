//! Slot and token management functions: slot and token info, mechanisms, slot events, PIN
//! initialisation and change. Only argument shapes are handled here; PIN rules are the core's.

use super::entry::{cryptoki_fixed, cryptoki_fn, in_session};
use super::raw;
use crate::token::library;
use cryptoki_sys::*;
use std::ffi::c_void;

cryptoki_fn! {
    /// C_GetSlotList: NULL list → count; a short list → CKR_BUFFER_TOO_SMALL with the count.
    export fn C_GetSlotList(tokenPresent: CK_BBOOL, pSlotList: *mut CK_SLOT_ID, pulCount: *mut CK_ULONG) {
        library::with(|lib| {
            if pulCount.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let slots = lib.slot_list(tokenPresent != CK_FALSE)?;
            // SAFETY: pulCount is a writable CK_ULONG and a non-NULL pSlotList holds *pulCount
            // slot IDs (PKCS#11 contract).
            unsafe { raw::out_list(pSlotList, pulCount, &slots) }
        })
    }
}

cryptoki_fn! {
    /// C_GetSlotInfo.
    export fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_SLOT_INFO) {
        library::with(|lib| {
            if pInfo.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let info = lib.slot_info(slotID)?;
            // SAFETY: not NULL; a writable CK_SLOT_INFO (PKCS#11 contract).
            unsafe { raw::write(pInfo, info) }
        })
    }
}

cryptoki_fn! {
    /// C_GetTokenInfo.
    export fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_TOKEN_INFO) {
        library::with(|lib| {
            if pInfo.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let info = lib.token_info(slotID)?;
            // SAFETY: not NULL; a writable CK_TOKEN_INFO (PKCS#11 contract).
            unsafe { raw::write(pInfo, info) }
        })
    }
}

cryptoki_fn! {
    /// C_WaitForSlotEvent: blocks unless CKF_DONT_BLOCK; pReserved must be NULL.
    export fn C_WaitForSlotEvent(flags: CK_FLAGS, pSlot: *mut CK_SLOT_ID, pReserved: *mut c_void) {
        library::with(|lib| {
            raw::require_null(pReserved.cast_const())?;
            if pSlot.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let slot = lib.wait_for_slot_event(flags & CKF_DONT_BLOCK != 0)?;
            // SAFETY: not NULL; a writable CK_SLOT_ID (PKCS#11 contract).
            unsafe { raw::write(pSlot, slot) }
        })
    }
}

cryptoki_fn! {
    /// C_GetMechanismList: the C_GetSlotList convention.
    export fn C_GetMechanismList(slotID: CK_SLOT_ID, pMechanismList: *mut CK_MECHANISM_TYPE, pulCount: *mut CK_ULONG) {
        library::with(|lib| {
            if pulCount.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let mechs = lib.mechanism_list(slotID)?;
            // SAFETY: pulCount is a writable CK_ULONG and a non-NULL pMechanismList holds
            // *pulCount mechanism types (PKCS#11 contract).
            unsafe { raw::out_list(pMechanismList, pulCount, &mechs) }
        })
    }
}

cryptoki_fn! {
    /// C_GetMechanismInfo.
    export fn C_GetMechanismInfo(slotID: CK_SLOT_ID, type_: CK_MECHANISM_TYPE, pInfo: *mut CK_MECHANISM_INFO) {
        library::with(|lib| {
            if pInfo.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let info = lib.mechanism_info(slotID, type_)?;
            // SAFETY: not NULL; a writable CK_MECHANISM_INFO (PKCS#11 contract).
            unsafe { raw::write(pInfo, info) }
        })
    }
}

cryptoki_fn! {
    /// C_InitPIN: in an SO session, unblocks the PIN with a new one. No protected
    /// authentication path, so a NULL PIN is CKR_ARGUMENTS_BAD.
    export fn C_InitPIN(hSession: CK_SESSION_HANDLE, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG) {
        in_session(hSession, |lib| {
            if pPin.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            // SAFETY: not NULL; ulPinLen readable bytes (PKCS#11 contract).
            let pin = unsafe { raw::slice(pPin.cast_const(), ulPinLen) }?;
            lib.init_pin(hSession, pin)
        })
    }
}

cryptoki_fn! {
    /// C_SetPIN: user session → PIN, SO session → PUK. NULL PINs are CKR_ARGUMENTS_BAD.
    export fn C_SetPIN(
        hSession: CK_SESSION_HANDLE,
        pOldPin: *mut CK_UTF8CHAR,
        ulOldLen: CK_ULONG,
        pNewPin: *mut CK_UTF8CHAR,
        ulNewLen: CK_ULONG,
    ) {
        in_session(hSession, |lib| {
            if pOldPin.is_null() || pNewPin.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            // SAFETY: not NULL; ulOldLen readable bytes (PKCS#11 contract).
            let old = unsafe { raw::slice(pOldPin.cast_const(), ulOldLen) }?;
            // SAFETY: not NULL; ulNewLen readable bytes (PKCS#11 contract).
            let new = unsafe { raw::slice(pNewPin.cast_const(), ulNewLen) }?;
            lib.set_pin(hSession, old, new)
        })
    }
}

cryptoki_fixed! {
    export CKR_FUNCTION_NOT_SUPPORTED =>
    fn C_InitToken(slotID: CK_SLOT_ID, pPin: *mut CK_UTF8CHAR, ulPinLen: CK_ULONG, pLabel: *mut CK_UTF8CHAR);
}
