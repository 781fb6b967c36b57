//! General-purpose functions: C_Initialize, C_Finalize, C_GetInfo. They check the caller's
//! arguments and hand over to `token::library`; the library instance itself lives there.

use super::entry::cryptoki_fn;
use super::{logging, raw};
use crate::token::{self, attr::padded, library, Error};
use cryptoki_sys::*;
use std::ffi::c_void;

/// The Cryptoki version of the 2.40 function list and of its C_GetInfo.
pub(crate) const CRYPTOKI_VERSION_2_40: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};

/// The Cryptoki version of the 3.0 function list and of its C_GetInfo.
pub(crate) const CRYPTOKI_VERSION_3_0: CK_VERSION = CK_VERSION { major: 3, minor: 0 };

/// The library version from Cargo's package version (major.minor).
pub(crate) fn library_version() -> CK_VERSION {
    CK_VERSION {
        major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
        minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
    }
}

/// Checks CK_C_INITIALIZE_ARGS: pReserved NULL, mutex callbacks all or none, and callbacks
/// only together with CKF_OS_LOCKING_OK (Tessera locks with the OS; it cannot use the
/// application's mutexes).
fn check_init_args(args: &CK_C_INITIALIZE_ARGS) -> token::Result<()> {
    raw::require_null(args.pReserved.cast_const())?;
    let callbacks = [
        args.CreateMutex.is_some(),
        args.DestroyMutex.is_some(),
        args.LockMutex.is_some(),
        args.UnlockMutex.is_some(),
    ];
    let given = callbacks.iter().filter(|c| **c).count();
    match given {
        0 => Ok(()),
        4 if args.flags & CKF_OS_LOCKING_OK != 0 => Ok(()),
        4 => Err(Error::new(CKR_CANT_LOCK)),
        _ => Err(Error::new(CKR_ARGUMENTS_BAD)),
    }
}

cryptoki_fn! {
    /// C_Initialize: pInitArgs NULL or a CK_C_INITIALIZE_ARGS (see the checks above).
    export fn C_Initialize(pInitArgs: *mut c_void) {
        logging::init();
        if !pInitArgs.is_null() {
            // SAFETY: not NULL; the PKCS#11 contract says it points to a CK_C_INITIALIZE_ARGS.
            let args = unsafe { raw::read(pInitArgs.cast::<CK_C_INITIALIZE_ARGS>().cast_const()) }?;
            check_init_args(&args)?;
        }
        library::initialize(crate::vcard::standard_connectors())
    }
}

cryptoki_fn! {
    /// C_Finalize: pReserved must be NULL.
    export fn C_Finalize(pReserved: *mut c_void) {
        raw::require_null(pReserved.cast_const())?;
        library::finalize()
    }
}

/// C_GetInfo's answer, reporting `version`: the version of the function list the application
/// reached it through (an application that asked for the 3.0 interface is told 3.0).
///
/// # Safety
/// A non-NULL `info` must point to a writable CK_INFO.
unsafe fn get_info(info: *mut CK_INFO, version: CK_VERSION) -> token::Result<()> {
    library::with(|_| {
        let answer = CK_INFO {
            cryptokiVersion: version,
            manufacturerID: padded(token::MANUFACTURER),
            flags: 0,
            libraryDescription: padded(token::LIBRARY_DESCRIPTION),
            libraryVersion: library_version(),
        };
        // SAFETY: NULL checked by `write`; else a writable CK_INFO (this function's contract).
        unsafe { raw::write(info, answer) }
    })
}

cryptoki_fn! {
    /// C_GetInfo (the exported symbol and the 2.40 function list's entry): Cryptoki 2.40,
    /// Tessera's manufacturer, description and version.
    export fn C_GetInfo(pInfo: *mut CK_INFO) {
        // SAFETY: a non-NULL pInfo is a writable CK_INFO (PKCS#11 contract).
        unsafe { get_info(pInfo, CRYPTOKI_VERSION_2_40) }
    }
}

cryptoki_fn! {
    /// C_GetInfo of the 3.0 function list: the same answer, Cryptoki 3.0.
    fn C_GetInfo_3_0(pInfo: *mut CK_INFO) {
        // SAFETY: a non-NULL pInfo is a writable CK_INFO (PKCS#11 contract).
        unsafe { get_info(pInfo, CRYPTOKI_VERSION_3_0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> CK_C_INITIALIZE_ARGS {
        CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: 0,
            pReserved: std::ptr::null_mut(),
        }
    }

    unsafe extern "C" fn create(_: *mut *mut c_void) -> CK_RV {
        CKR_OK
    }
    unsafe extern "C" fn other(_: *mut c_void) -> CK_RV {
        CKR_OK
    }

    fn rv(r: token::Result<()>) -> CK_RV {
        r.err().map_or(CKR_OK, |e| e.rv())
    }

    #[test]
    fn init_args() {
        assert_eq!(rv(check_init_args(&args())), CKR_OK);
        let mut a = args();
        a.flags = CKF_OS_LOCKING_OK;
        assert_eq!(rv(check_init_args(&a)), CKR_OK);
        let mut r = 0u8;
        a.pReserved = std::ptr::addr_of_mut!(r).cast();
        assert_eq!(rv(check_init_args(&a)), CKR_ARGUMENTS_BAD);
        let mut a = args();
        a.CreateMutex = Some(create);
        assert_eq!(rv(check_init_args(&a)), CKR_ARGUMENTS_BAD);
        a.DestroyMutex = Some(other);
        a.LockMutex = Some(other);
        a.UnlockMutex = Some(other);
        assert_eq!(rv(check_init_args(&a)), CKR_CANT_LOCK);
        a.flags = CKF_OS_LOCKING_OK;
        assert_eq!(rv(check_init_args(&a)), CKR_OK);
    }
}
