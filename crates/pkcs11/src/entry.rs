//! How every exported function is entered: the `cryptoki_fn!` macro writes the
//! `unsafe extern "C"` signature, and [`guard`] runs the body under `catch_unwind`, maps the
//! body's `Result` to a CK_RV, and logs the call. No panic ever crosses into the application.

use crate::token::library::{self, Library, OperationKind};
use crate::token::Result;
use cryptoki_sys::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs one PKCS#11 call: `Ok` → CKR_OK, `Err(e)` → `e.rv()`, a panic → CKR_GENERAL_ERROR.
pub(crate) fn guard(name: &'static str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    let rv = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => e.rv(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            log::error!("{name}: panic caught at the C boundary: {what}");
            CKR_GENERAL_ERROR
        }
    };
    log::debug!("{name} -> {}", rv_name(rv));
    rv
}

/// Runs the body of a call on session `h` in PKCS#11's order of errors (§5.1.7):
/// CKR_CRYPTOKI_NOT_INITIALIZED, then CKR_SESSION_HANDLE_INVALID, and only then the body's
/// own checks of its pointer arguments and the function's answer.
pub(crate) fn in_session<R>(
    h: CK_SESSION_HANDLE,
    body: impl FnOnce(&Library) -> Result<R>,
) -> Result<R> {
    library::with(|lib| {
        lib.check_session(h)?;
        body(lib)
    })
}

/// [`in_session`] for a call that continues or finishes the session's `kind` operation
/// (Update, Final, the single-part call): any error but CKR_BUFFER_TOO_SMALL ends that
/// operation (§5.13), also one that the call's arguments caused before the core saw them.
pub(crate) fn in_operation<R>(
    h: CK_SESSION_HANDLE,
    kind: OperationKind,
    body: impl FnOnce(&Library) -> Result<R>,
) -> Result<R> {
    in_session(h, |lib| {
        let r = body(lib);
        if let Err(e) = &r {
            if e.rv() != CKR_BUFFER_TOO_SMALL {
                // Ending can only fail for a session that went away meanwhile: nothing to end.
                let _ = lib.end_operation(h, kind);
            }
        }
        r
    })
}

/// Defines one PKCS#11 entry point. `export fn` adds `#[no_mangle]` (a symbol applications
/// find with dlsym); `fn` makes an entry reachable only through a function list (the 3.0
/// extras). The body is a block returning `token::Result<()>`; it runs inside [`guard`].
macro_rules! cryptoki_fn {
    ($(#[$meta:meta])* export fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[doc = ""]
        #[doc = "# Safety"]
        #[doc = "Every non-NULL pointer argument must be valid as the PKCS#11 specification says"]
        #[doc = "for this function (lengths as given, output buffers writable)."]
        #[no_mangle]
        #[allow(non_snake_case)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> cryptoki_sys::CK_RV {
            $crate::entry::guard(stringify!($name), move || -> $crate::token::Result<()> {
                $body
            })
        }
    };
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[doc = ""]
        #[doc = "# Safety"]
        #[doc = "As for the exported functions: pointers valid as PKCS#11 says."]
        #[allow(non_snake_case)]
        pub(crate) unsafe extern "C" fn $name($($arg: $ty),*) -> cryptoki_sys::CK_RV {
            $crate::entry::guard(stringify!($name), move || -> $crate::token::Result<()> {
                $body
            })
        }
    };
}

/// Defines entry points that answer one fixed CK_RV whatever their arguments (functions
/// Tessera does not offer). `export` ones get a symbol; `internal` ones live only in a
/// function list.
macro_rules! cryptoki_fixed {
    (export $rv:expr => $(fn $name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        $(
            $crate::entry::cryptoki_fn! {
                #[doc = concat!("`", stringify!($name), "`: not offered by Tessera; always `", stringify!($rv), "`.")]
                export fn $name($($arg: $ty),*) {
                    $(let _ = $arg;)*
                    Err($crate::token::Error::new($rv))
                }
            }
        )*
    };
    (internal $rv:expr => $(fn $name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        $(
            $crate::entry::cryptoki_fn! {
                #[doc = concat!("`", stringify!($name), "`: not offered by Tessera; always `", stringify!($rv), "`.")]
                fn $name($($arg: $ty),*) {
                    $(let _ = $arg;)*
                    Err($crate::token::Error::new($rv))
                }
            }
        )*
    };
}

pub(crate) use {cryptoki_fixed, cryptoki_fn};

/// A CK_RV's name for the log.
pub(crate) fn rv_name(rv: CK_RV) -> std::borrow::Cow<'static, str> {
    let name = match rv {
        CKR_OK => "CKR_OK",
        CKR_CANCEL => "CKR_CANCEL",
        CKR_HOST_MEMORY => "CKR_HOST_MEMORY",
        CKR_SLOT_ID_INVALID => "CKR_SLOT_ID_INVALID",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
        CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
        CKR_NO_EVENT => "CKR_NO_EVENT",
        CKR_CANT_LOCK => "CKR_CANT_LOCK",
        CKR_ATTRIBUTE_SENSITIVE => "CKR_ATTRIBUTE_SENSITIVE",
        CKR_ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
        CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
        CKR_ATTRIBUTE_READ_ONLY => "CKR_ATTRIBUTE_READ_ONLY",
        CKR_DATA_INVALID => "CKR_DATA_INVALID",
        CKR_DATA_LEN_RANGE => "CKR_DATA_LEN_RANGE",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
        CKR_DEVICE_REMOVED => "CKR_DEVICE_REMOVED",
        CKR_ENCRYPTED_DATA_INVALID => "CKR_ENCRYPTED_DATA_INVALID",
        CKR_ENCRYPTED_DATA_LEN_RANGE => "CKR_ENCRYPTED_DATA_LEN_RANGE",
        CKR_FUNCTION_NOT_PARALLEL => "CKR_FUNCTION_NOT_PARALLEL",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
        CKR_KEY_SIZE_RANGE => "CKR_KEY_SIZE_RANGE",
        CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
        CKR_MECHANISM_PARAM_INVALID => "CKR_MECHANISM_PARAM_INVALID",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_OPERATION_ACTIVE => "CKR_OPERATION_ACTIVE",
        CKR_OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
        CKR_PIN_INCORRECT => "CKR_PIN_INCORRECT",
        CKR_PIN_INVALID => "CKR_PIN_INVALID",
        CKR_PIN_LEN_RANGE => "CKR_PIN_LEN_RANGE",
        CKR_PIN_LOCKED => "CKR_PIN_LOCKED",
        CKR_SESSION_CLOSED => "CKR_SESSION_CLOSED",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_SESSION_PARALLEL_NOT_SUPPORTED => "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
        CKR_SESSION_READ_ONLY => "CKR_SESSION_READ_ONLY",
        CKR_SESSION_READ_ONLY_EXISTS => "CKR_SESSION_READ_ONLY_EXISTS",
        CKR_SESSION_READ_WRITE_SO_EXISTS => "CKR_SESSION_READ_WRITE_SO_EXISTS",
        CKR_SIGNATURE_INVALID => "CKR_SIGNATURE_INVALID",
        CKR_SIGNATURE_LEN_RANGE => "CKR_SIGNATURE_LEN_RANGE",
        CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_TOKEN_NOT_RECOGNIZED => "CKR_TOKEN_NOT_RECOGNIZED",
        CKR_TOKEN_WRITE_PROTECTED => "CKR_TOKEN_WRITE_PROTECTED",
        CKR_USER_ALREADY_LOGGED_IN => "CKR_USER_ALREADY_LOGGED_IN",
        CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
        CKR_USER_PIN_NOT_INITIALIZED => "CKR_USER_PIN_NOT_INITIALIZED",
        CKR_USER_TYPE_INVALID => "CKR_USER_TYPE_INVALID",
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN => "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
        CKR_RANDOM_SEED_NOT_SUPPORTED => "CKR_RANDOM_SEED_NOT_SUPPORTED",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        CKR_CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
        CKR_CRYPTOKI_ALREADY_INITIALIZED => "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        _ => return format!("CKR {rv:#x}").into(),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Error;

    #[test]
    fn guard_maps_results_and_panics() {
        assert_eq!(guard("t", || Ok(())), CKR_OK);
        assert_eq!(
            guard("t", || Err(Error::new(CKR_PIN_INCORRECT))),
            CKR_PIN_INCORRECT
        );
        assert_eq!(guard("t", || panic!("boom")), CKR_GENERAL_ERROR);
        assert_eq!(rv_name(CKR_OK), "CKR_OK");
        assert_eq!(rv_name(0x8000_0001), "CKR 0x80000001");
    }
}
