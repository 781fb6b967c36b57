//! Raw tests of the C boundary: the built `libtessera_pkcs11.so` loaded with libloading, called
//! the way no well-behaved binding would — NULL pointers, bad counts, size queries, short
//! buffers, invalid handles, calls out of order. The library is process-global, so every test
//! takes one lock and leaves the module finalised.
//!
//! The module is found through `TESSERA_MODULE`, else next to this test executable
//! (`target/<profile>/libtessera_pkcs11.so`, or the copy in `deps/`, whichever is newer).
//! `cargo test` does not reliably build the cdylib first: run `cargo build` before.
//!
//! Tests marked "needs the core" depend on `token::library` answering slots and sessions
//! (one slot per virtual card in `TESSERA_VCARD`); until the core lands they fail with
//! CKR_FUNCTION_NOT_SUPPORTED.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "module_common/locate.rs"]
mod locate;

use cryptoki_sys::*;
use locate::{module_path, EXPORTS};
use std::ffi::c_void;
use std::path::PathBuf;
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock};

struct Module {
    path: PathBuf,
    lib: libloading::Library,
    list: &'static CK_FUNCTION_LIST,
    /// Keeps the virtual card's directory alive while the process runs.
    _card_dir: Option<tempfile::TempDir>,
}

/// Creates a factory-fresh virtual card for the module's slot, unless the caller configured
/// their own in TESSERA_VCARD. Runs before any C_Initialize reads the environment.
fn virtual_card() -> Option<tempfile::TempDir> {
    if std::env::var_os("TESSERA_VCARD").is_some() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    tessera_pkcs11::vcard::CardFile::create(&path, &tessera_pkcs11::vcard::CardState::factory(1))
        .unwrap();
    std::env::set_var("TESSERA_VCARD", &path);
    Some(dir)
}

fn module() -> &'static Module {
    static MODULE: OnceLock<Module> = OnceLock::new();
    MODULE.get_or_init(|| {
        let card_dir = virtual_card();
        let path = module_path();
        // SAFETY: loading our own module runs no initialiser with preconditions; the Library
        // lives in a static, so it is never unloaded while its functions may run.
        let lib = unsafe { libloading::Library::new(&path) }
            .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: the symbol has the C_GetFunctionList signature (PKCS#11).
        let get: libloading::Symbol<'_, unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
            unsafe { lib.get(b"C_GetFunctionList\0") }.expect("C_GetFunctionList exported");
        // SAFETY: `list` is a valid out-pointer.
        let rv = unsafe { get(&mut list) };
        assert_eq!(rv, CKR_OK);
        assert!(!list.is_null());
        // SAFETY: the module hands out a pointer to a static function list that lives as long as
        // the (never unloaded) library.
        let list = unsafe { &*list };
        Module {
            path,
            lib,
            list,
            _card_dir: card_dir,
        }
    })
}

/// Serialises the tests: the module is one global library instance.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls a function-list entry. The arguments are set up by each test: valid pointers to
/// locals, or NULL on purpose.
macro_rules! call {
    ($m:expr, $f:ident($($arg:expr),* $(,)?)) => {{
        let f = $m.list.$f.expect(concat!(stringify!($f), " in the function list"));
        // SAFETY: the arguments are valid for the call or deliberately NULL/short, which the
        // module must reject without touching them.
        unsafe { f($($arg),*) }
    }};
}

/// Initialises the module and finalises it when dropped (also when an assertion fails).
struct Initialized(&'static Module);

impl Initialized {
    fn new(m: &'static Module) -> Self {
        assert_eq!(call!(m, C_Initialize(ptr::null_mut())), CKR_OK);
        Self(m)
    }
}

impl Drop for Initialized {
    fn drop(&mut self) {
        let rv = call!(self.0, C_Finalize(ptr::null_mut()));
        if !std::thread::panicking() {
            assert_eq!(rv, CKR_OK, "C_Finalize");
        }
    }
}

fn rv_hex(rv: CK_RV) -> String {
    format!("{rv:#x}")
}

type GetInterfaceList = unsafe extern "C" fn(*mut CK_INTERFACE, *mut CK_ULONG) -> CK_RV;
type GetInterface = unsafe extern "C" fn(
    *mut CK_UTF8CHAR,
    *mut CK_VERSION,
    *mut *mut CK_INTERFACE,
    CK_FLAGS,
) -> CK_RV;

fn get_interface_list(m: &Module) -> libloading::Symbol<'_, GetInterfaceList> {
    // SAFETY: the symbol has the C_GetInterfaceList signature (PKCS#11 3.0).
    unsafe { m.lib.get(b"C_GetInterfaceList\0") }.unwrap()
}

fn get_interface(m: &Module) -> libloading::Symbol<'_, GetInterface> {
    // SAFETY: the symbol has the C_GetInterface signature (PKCS#11 3.0).
    unsafe { m.lib.get(b"C_GetInterface\0") }.unwrap()
}

/// The version at the head of an interface's function list.
fn interface_version(i: &CK_INTERFACE) -> (u8, u8) {
    assert!(!i.pFunctionList.is_null());
    // SAFETY: every function list starts with its CK_VERSION; the list is a static of the
    // loaded module.
    let v = unsafe { ptr::read(i.pFunctionList.cast::<CK_VERSION>()) };
    (v.major, v.minor)
}

/// Proves: all 70 functions are exported under their spec names, and C_GetFunctionList
/// rejects NULL and returns a complete 2.40 list.
#[test]
fn function_list() {
    let m = module();
    let _s = serial();
    for name in EXPORTS {
        let symbol = format!("{name}\0");
        // SAFETY: only the symbol's presence is checked; it is not called.
        let found = unsafe { m.lib.get::<*const c_void>(symbol.as_bytes()) };
        assert!(found.is_ok(), "{name} not exported by {}", m.path.display());
    }
    // SAFETY: C_GetFunctionList's signature.
    let get: libloading::Symbol<'_, unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
        unsafe { m.lib.get(b"C_GetFunctionList\0") }.unwrap();
    // SAFETY: NULL must be refused without a write.
    let rv = unsafe { get(ptr::null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    let l = m.list;
    assert_eq!((l.version.major, l.version.minor), (2, 40));
    let entries = [
        l.C_Initialize.is_some(),
        l.C_Finalize.is_some(),
        l.C_GetInfo.is_some(),
        l.C_GetFunctionList.is_some(),
        l.C_GetSlotList.is_some(),
        l.C_WaitForSlotEvent.is_some(),
        l.C_GenerateRandom.is_some(),
        l.C_CancelFunction.is_some(),
    ];
    assert!(entries.iter().all(|e| *e));
}

/// Proves: C_GetInterfaceList answers the count query, CKR_BUFFER_TOO_SMALL with the count,
/// then two "PKCS 11" interfaces (3.0 first, then 2.40, flags 0); C_GetInterface finds them by
/// name and version, defaults to 3.0, and refuses unknown names, versions, flags and a NULL
/// out-pointer; the 3.0-only functions answer CKR_FUNCTION_NOT_SUPPORTED.
#[test]
fn interfaces() {
    let m = module();
    let _s = serial();
    let symbol = get_interface_list(m);
    let list = |p: *mut CK_INTERFACE, n: *mut CK_ULONG| {
        // SAFETY: the pointers are locals or deliberately NULL/short; the module must
        // refuse what it cannot use.
        unsafe { symbol(p, n) }
    };
    let mut n: CK_ULONG = 0;
    // SAFETY: NULL count must be refused.
    assert_eq!(list(ptr::null_mut(), ptr::null_mut()), CKR_ARGUMENTS_BAD);
    // SAFETY: count query into a local.
    assert_eq!(list(ptr::null_mut(), &mut n), CKR_OK);
    assert_eq!(n, 2);
    let empty = CK_INTERFACE {
        pInterfaceName: ptr::null_mut(),
        pFunctionList: ptr::null_mut(),
        flags: 0,
    };
    let mut buf = [empty; 2];
    n = 1;
    // SAFETY: `buf` holds `n` (1) interfaces.
    assert_eq!(list(buf.as_mut_ptr(), &mut n), CKR_BUFFER_TOO_SMALL);
    assert_eq!(n, 2);
    assert!(
        buf[0].pFunctionList.is_null(),
        "nothing written on BUFFER_TOO_SMALL"
    );
    // SAFETY: `buf` holds `n` (2) interfaces.
    assert_eq!(list(buf.as_mut_ptr(), &mut n), CKR_OK);
    assert_eq!(n, 2);
    for i in &buf {
        // SAFETY: the module's static NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr(i.pInterfaceName.cast()) };
        assert_eq!(name.to_bytes(), b"PKCS 11");
        assert_eq!(i.flags, 0);
    }
    assert_eq!(interface_version(&buf[0]), (3, 0));
    assert_eq!(interface_version(&buf[1]), (2, 40));
    assert_eq!(
        buf[1].pFunctionList.cast_const(),
        ptr::from_ref(m.list).cast::<c_void>()
    );

    let symbol = get_interface(m);
    let get = |name: *mut CK_UTF8CHAR,
               version: *mut CK_VERSION,
               out: *mut *mut CK_INTERFACE,
               flags: CK_FLAGS| {
        // SAFETY: NUL-terminated names, versions and out-pointers are locals or deliberately
        // NULL.
        unsafe { symbol(name, version, out, flags) }
    };
    let mut name = *b"PKCS 11\0";
    let mut found: *mut CK_INTERFACE = ptr::null_mut();
    // SAFETY: NUL-terminated name, out-pointer to a local.
    assert_eq!(
        get(name.as_mut_ptr(), ptr::null_mut(), &mut found, 0),
        CKR_OK
    );
    // SAFETY: the module returned a pointer to its static interface.
    let iface = unsafe { &*found };
    assert_eq!(interface_version(iface), (3, 0));
    found = ptr::null_mut();
    // SAFETY: NULL name → default interface.
    assert_eq!(get(ptr::null_mut(), ptr::null_mut(), &mut found, 0), CKR_OK);
    // SAFETY: as above.
    assert_eq!(interface_version(unsafe { &*found }), (3, 0));
    let mut v240 = CK_VERSION {
        major: 2,
        minor: 40,
    };
    // SAFETY: name and version are locals.
    assert_eq!(get(name.as_mut_ptr(), &mut v240, &mut found, 0), CKR_OK);
    // SAFETY: as above.
    assert_eq!(interface_version(unsafe { &*found }), (2, 40));
    let mut v220 = CK_VERSION {
        major: 2,
        minor: 20,
    };
    // SAFETY: locals.
    let rv = get(name.as_mut_ptr(), &mut v220, &mut found, 0);
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    let mut vendor = *b"Vendor 1\0";
    // SAFETY: locals.
    let rv = get(vendor.as_mut_ptr(), ptr::null_mut(), &mut found, 0);
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    // SAFETY: a NULL out-pointer must be refused.
    let rv = get(name.as_mut_ptr(), ptr::null_mut(), ptr::null_mut(), 0);
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    // SAFETY: locals; our interfaces are not fork-safe.
    let rv = {
        get(
            ptr::null_mut(),
            ptr::null_mut(),
            &mut found,
            CKF_INTERFACE_FORK_SAFE,
        )
    };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);

    // The 3.0 list: 2.40 entries plus the 3.0 ones, which Tessera does not offer.
    // SAFETY: the 3.0 interface's function list is a CK_FUNCTION_LIST_3_0 static.
    let l3 = unsafe { &*buf[0].pFunctionList.cast::<CK_FUNCTION_LIST_3_0>() };
    assert!(l3.C_GetInterfaceList.is_some() && l3.C_GetInterface.is_some());
    let _init = Initialized::new(m);
    let not_supported = {
        let mut pin = *b"123456";
        let mut data = [0u8; 4];
        let mut len: CK_ULONG = 4;
        // SAFETY: every entry is present and called with valid locals or NULL; the module
        // must answer without reading them.
        unsafe {
            [
                l3.C_LoginUser.unwrap()(1, CKU_USER, pin.as_mut_ptr(), 6, pin.as_mut_ptr(), 6),
                l3.C_SessionCancel.unwrap()(1, 0),
                l3.C_MessageEncryptInit.unwrap()(1, ptr::null_mut(), 0),
                l3.C_EncryptMessage.unwrap()(
                    1,
                    ptr::null_mut(),
                    0,
                    ptr::null_mut(),
                    0,
                    data.as_mut_ptr(),
                    4,
                    data.as_mut_ptr(),
                    &mut len,
                ),
                l3.C_MessageEncryptFinal.unwrap()(1),
                l3.C_MessageDecryptInit.unwrap()(1, ptr::null_mut(), 0),
                l3.C_MessageDecryptFinal.unwrap()(1),
                l3.C_MessageSignInit.unwrap()(1, ptr::null_mut(), 0),
                l3.C_SignMessageBegin.unwrap()(1, ptr::null_mut(), 0),
                l3.C_MessageSignFinal.unwrap()(1),
                l3.C_MessageVerifyInit.unwrap()(1, ptr::null_mut(), 0),
                l3.C_VerifyMessageBegin.unwrap()(1, ptr::null_mut(), 0),
                l3.C_MessageVerifyFinal.unwrap()(1),
            ]
        }
    };
    for (i, rv) in not_supported.iter().enumerate() {
        assert_eq!(*rv, CKR_FUNCTION_NOT_SUPPORTED, "3.0 entry #{i}");
    }
}

/// Proves: before C_Initialize every library call answers CKR_CRYPTOKI_NOT_INITIALIZED
/// (including C_Finalize), and after C_Finalize again.
#[test]
fn not_initialized() {
    let m = module();
    let _s = serial();
    let mut info = CK_INFO::default();
    let mut n: CK_ULONG = 0;
    let mut session: CK_SESSION_HANDLE = 0;
    let mut check = || {
        assert_eq!(call!(m, C_GetInfo(&mut info)), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(
            call!(m, C_GetSlotList(CK_FALSE, ptr::null_mut(), &mut n)),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            call!(
                m,
                C_OpenSession(0, CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut session)
            ),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(call!(m, C_CloseSession(1)), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(
            call!(m, C_Finalize(ptr::null_mut())),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
    };
    check();
    drop(Initialized::new(m));
    check();
}

unsafe extern "C" fn create_mutex(_: *mut *mut c_void) -> CK_RV {
    CKR_OK
}
unsafe extern "C" fn mutex_op(_: *mut c_void) -> CK_RV {
    CKR_OK
}

fn init_args() -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: 0,
        pReserved: ptr::null_mut(),
    }
}

/// Proves: C_Initialize checks CK_C_INITIALIZE_ARGS (pReserved, all-or-none callbacks,
/// CKR_CANT_LOCK without CKF_OS_LOCKING_OK) before initialising, refuses a second
/// initialisation, and C_Finalize refuses a non-NULL pReserved without finalising.
#[test]
fn initialize_and_finalize() {
    let m = module();
    let _s = serial();
    let init = |args: &mut CK_C_INITIALIZE_ARGS| {
        call!(m, C_Initialize(ptr::from_mut(args).cast::<c_void>()))
    };
    let mut reserved = 0u8;
    let mut a = init_args();
    a.pReserved = ptr::addr_of_mut!(reserved).cast();
    assert_eq!(init(&mut a), CKR_ARGUMENTS_BAD);

    let mut a = init_args();
    a.CreateMutex = Some(create_mutex);
    assert_eq!(init(&mut a), CKR_ARGUMENTS_BAD, "some callbacks, not all");
    a.DestroyMutex = Some(mutex_op);
    a.LockMutex = Some(mutex_op);
    a.UnlockMutex = Some(mutex_op);
    assert_eq!(init(&mut a), CKR_CANT_LOCK);
    // Nothing was initialised by the refused calls.
    assert_eq!(
        call!(m, C_Finalize(ptr::null_mut())),
        CKR_CRYPTOKI_NOT_INITIALIZED
    );

    a.flags = CKF_OS_LOCKING_OK;
    assert_eq!(init(&mut a), CKR_OK, "callbacks with OS locking allowed");
    assert_eq!(
        call!(m, C_Initialize(ptr::null_mut())),
        CKR_CRYPTOKI_ALREADY_INITIALIZED
    );
    assert_eq!(
        call!(m, C_Finalize(ptr::addr_of_mut!(reserved).cast())),
        CKR_ARGUMENTS_BAD
    );
    // Still initialised after the refused C_Finalize.
    assert_eq!(call!(m, C_Finalize(ptr::null_mut())), CKR_OK);

    let mut a = init_args();
    a.flags = CKF_OS_LOCKING_OK;
    assert_eq!(init(&mut a), CKR_OK, "no callbacks, OS locking");
    assert_eq!(call!(m, C_Finalize(ptr::null_mut())), CKR_OK);
    assert_eq!(
        call!(m, C_Finalize(ptr::null_mut())),
        CKR_CRYPTOKI_NOT_INITIALIZED
    );
}

/// Proves: C_GetInfo refuses NULL and reports Cryptoki 2.40, the package version, and
/// blank-padded (not NUL-padded) text fields.
#[test]
fn get_info() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    assert_eq!(call!(m, C_GetInfo(ptr::null_mut())), CKR_ARGUMENTS_BAD);
    let mut info = CK_INFO::default();
    assert_eq!(call!(m, C_GetInfo(&mut info)), CKR_OK);
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (2, 40)
    );
    let manufacturer = format!("{:<32}", tessera_pkcs11::token::MANUFACTURER);
    let description = format!("{:<32}", tessera_pkcs11::token::LIBRARY_DESCRIPTION);
    assert_eq!(&info.manufacturerID[..], manufacturer.as_bytes());
    assert_eq!(&info.libraryDescription[..], &description.as_bytes()[..32]);
    assert!(!info.manufacturerID.contains(&0));
    assert_eq!(info.flags, 0);
    assert_eq!(
        (info.libraryVersion.major, info.libraryVersion.minor),
        (
            env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap(),
            env!("CARGO_PKG_VERSION_MINOR").parse().unwrap()
        )
    );
}

/// Proves: argument checks that need no card: NULL out-pointers, NULL arrays with non-zero
/// counts, NULL PIN (no protected authentication path), a non-NULL pReserved, a session
/// without CKF_SERIAL_SESSION, and malformed mechanism parameters — each refused before the
/// core is asked.
#[test]
fn bad_arguments() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let bad = CKR_ARGUMENTS_BAD;
    let mut n: CK_ULONG = 0;
    let mut session: CK_SESSION_HANDLE = 0;
    let mut object: CK_OBJECT_HANDLE = 0;
    let mut data = [0u8; 16];
    let mut reserved = 0u8;
    let mut slot: CK_SLOT_ID = 0;

    assert_eq!(
        call!(m, C_GetSlotList(CK_FALSE, ptr::null_mut(), ptr::null_mut())),
        bad
    );
    assert_eq!(
        call!(m, C_GetSlotList(CK_TRUE, ptr::null_mut(), ptr::null_mut())),
        bad
    );
    assert_eq!(call!(m, C_GetSlotInfo(0, ptr::null_mut())), bad);
    assert_eq!(call!(m, C_GetTokenInfo(0, ptr::null_mut())), bad);
    assert_eq!(
        call!(m, C_GetMechanismList(0, ptr::null_mut(), ptr::null_mut())),
        bad
    );
    assert_eq!(
        call!(m, C_GetMechanismInfo(0, CKM_ECDSA, ptr::null_mut())),
        bad
    );
    assert_eq!(
        call!(
            m,
            C_WaitForSlotEvent(
                CKF_DONT_BLOCK,
                &mut slot,
                ptr::addr_of_mut!(reserved).cast()
            )
        ),
        bad
    );
    assert_eq!(
        call!(
            m,
            C_WaitForSlotEvent(CKF_DONT_BLOCK, ptr::null_mut(), ptr::null_mut())
        ),
        bad
    );
    assert_eq!(
        call!(
            m,
            C_OpenSession(
                0,
                CKF_SERIAL_SESSION,
                ptr::null_mut(),
                None,
                ptr::null_mut()
            )
        ),
        bad
    );
    assert_eq!(
        call!(
            m,
            C_OpenSession(0, CKF_RW_SESSION, ptr::null_mut(), None, &mut session)
        ),
        CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    assert_eq!(call!(m, C_GetSessionInfo(1, ptr::null_mut())), bad);
    assert_eq!(
        call!(m, C_Login(1, CKU_USER, ptr::null_mut(), 0)),
        bad,
        "NULL PIN, length 0"
    );
    assert_eq!(call!(m, C_Login(1, CKU_USER, ptr::null_mut(), 6)), bad);
    assert_eq!(call!(m, C_InitPIN(1, ptr::null_mut(), 0)), bad);
    assert_eq!(
        call!(m, C_SetPIN(1, ptr::null_mut(), 0, data.as_mut_ptr(), 6)),
        bad
    );

    // Templates.
    assert_eq!(call!(m, C_GetAttributeValue(1, 1, ptr::null_mut(), 1)), bad);
    assert_eq!(call!(m, C_SetAttributeValue(1, 1, ptr::null_mut(), 2)), bad);
    assert_eq!(
        call!(m, C_CreateObject(1, ptr::null_mut(), 1, &mut object)),
        bad
    );
    let mut class = CKO_CERTIFICATE.to_ne_bytes();
    let mut template = [CK_ATTRIBUTE {
        type_: CKA_CLASS,
        pValue: class.as_mut_ptr().cast(),
        ulValueLen: class.len() as CK_ULONG,
    }];
    assert_eq!(
        call!(
            m,
            C_CreateObject(1, template.as_mut_ptr(), 1, ptr::null_mut())
        ),
        bad
    );
    template[0].pValue = ptr::null_mut();
    assert_eq!(
        call!(m, C_FindObjectsInit(1, template.as_mut_ptr(), 1)),
        bad,
        "NULL pValue, length 8"
    );
    assert_eq!(call!(m, C_FindObjects(1, ptr::null_mut(), 4, &mut n)), bad);
    let mut found = [0 as CK_OBJECT_HANDLE; 4];
    assert_eq!(
        call!(m, C_FindObjects(1, found.as_mut_ptr(), 4, ptr::null_mut())),
        bad
    );

    // Data and output buffers.
    assert_eq!(
        call!(m, C_SignInit(1, ptr::null_mut(), 1)),
        bad,
        "NULL mechanism"
    );
    assert_eq!(call!(m, C_DigestInit(1, ptr::null_mut())), bad);
    assert_eq!(
        call!(m, C_Sign(1, ptr::null_mut(), 5, data.as_mut_ptr(), &mut n)),
        bad,
        "NULL data with a length"
    );
    assert_eq!(
        call!(
            m,
            C_Sign(1, data.as_mut_ptr(), 4, data.as_mut_ptr(), ptr::null_mut())
        ),
        bad
    );
    assert_eq!(
        call!(m, C_SignFinal(1, data.as_mut_ptr(), ptr::null_mut())),
        bad
    );
    assert_eq!(
        call!(m, C_Verify(1, data.as_mut_ptr(), 4, ptr::null_mut(), 64)),
        bad
    );
    assert_eq!(call!(m, C_SignUpdate(1, ptr::null_mut(), 1)), bad);
    assert_eq!(call!(m, C_GenerateRandom(1, ptr::null_mut(), 16)), bad);

    // Mechanism parameters: decoded (and refused) before the core sees them.
    let mut pss = CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        sLen: 32,
    };
    let mut mech = CK_MECHANISM {
        mechanism: CKM_SHA256_RSA_PKCS_PSS,
        pParameter: ptr::addr_of_mut!(pss).cast(),
        ulParameterLen: 8,
    };
    assert_eq!(
        call!(m, C_SignInit(1, &mut mech, 1)),
        CKR_MECHANISM_PARAM_INVALID
    );
    mech.pParameter = ptr::null_mut();
    mech.ulParameterLen = std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG;
    assert_eq!(
        call!(m, C_SignInit(1, &mut mech, 1)),
        CKR_MECHANISM_PARAM_INVALID
    );
    let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: ptr::null_mut(),
        ulSourceDataLen: 4,
    };
    let mut mech = CK_MECHANISM {
        mechanism: CKM_RSA_PKCS_OAEP,
        pParameter: ptr::addr_of_mut!(oaep).cast(),
        ulParameterLen: std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>() as CK_ULONG,
    };
    assert_eq!(
        call!(m, C_DecryptInit(1, &mut mech, 1)),
        CKR_MECHANISM_PARAM_INVALID,
        "NULL OAEP label with a length"
    );
    let mut ecdh = CK_ECDH1_DERIVE_PARAMS {
        kdf: CKD_NULL,
        ulSharedDataLen: 0,
        pSharedData: ptr::null_mut(),
        ulPublicDataLen: 65,
        pPublicData: ptr::null_mut(),
    };
    let mut mech = CK_MECHANISM {
        mechanism: CKM_ECDH1_DERIVE,
        pParameter: ptr::addr_of_mut!(ecdh).cast(),
        ulParameterLen: std::mem::size_of::<CK_ECDH1_DERIVE_PARAMS>() as CK_ULONG,
    };
    assert_eq!(
        call!(
            m,
            C_DeriveKey(1, &mut mech, 1, ptr::null_mut(), 0, &mut object)
        ),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        call!(
            m,
            C_DeriveKey(1, &mut mech, 1, ptr::null_mut(), 0, ptr::null_mut())
        ),
        bad
    );
}

/// Proves: every function Tessera does not offer answers CKR_FUNCTION_NOT_SUPPORTED (and
/// C_SeedRandom CKR_RANDOM_SEED_NOT_SUPPORTED, C_GetFunctionStatus/C_CancelFunction
/// CKR_FUNCTION_NOT_PARALLEL), whatever the arguments.
#[test]
fn unsupported_functions() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let mut b = [0u8; 32];
    let mut n: CK_ULONG = 32;
    let mut h: CK_OBJECT_HANDLE = 0;
    let p = b.as_mut_ptr();
    let answers = [
        ("C_InitToken", call!(m, C_InitToken(0, p, 6, p))),
        (
            "C_GetOperationState",
            call!(m, C_GetOperationState(1, p, &mut n)),
        ),
        (
            "C_SetOperationState",
            call!(m, C_SetOperationState(1, p, 4, 0, 0)),
        ),
        (
            "C_CopyObject",
            call!(m, C_CopyObject(1, 1, ptr::null_mut(), 0, &mut h)),
        ),
        (
            "C_EncryptUpdate",
            call!(m, C_EncryptUpdate(1, p, 4, p, &mut n)),
        ),
        ("C_EncryptFinal", call!(m, C_EncryptFinal(1, p, &mut n))),
        (
            "C_DecryptUpdate",
            call!(m, C_DecryptUpdate(1, p, 4, p, &mut n)),
        ),
        ("C_DecryptFinal", call!(m, C_DecryptFinal(1, p, &mut n))),
        ("C_DigestKey", call!(m, C_DigestKey(1, 1))),
        (
            "C_SignRecoverInit",
            call!(m, C_SignRecoverInit(1, ptr::null_mut(), 1)),
        ),
        ("C_SignRecover", call!(m, C_SignRecover(1, p, 4, p, &mut n))),
        (
            "C_VerifyRecoverInit",
            call!(m, C_VerifyRecoverInit(1, ptr::null_mut(), 1)),
        ),
        (
            "C_VerifyRecover",
            call!(m, C_VerifyRecover(1, p, 4, p, &mut n)),
        ),
        (
            "C_DigestEncryptUpdate",
            call!(m, C_DigestEncryptUpdate(1, p, 4, p, &mut n)),
        ),
        (
            "C_DecryptDigestUpdate",
            call!(m, C_DecryptDigestUpdate(1, p, 4, p, &mut n)),
        ),
        (
            "C_SignEncryptUpdate",
            call!(m, C_SignEncryptUpdate(1, p, 4, p, &mut n)),
        ),
        (
            "C_DecryptVerifyUpdate",
            call!(m, C_DecryptVerifyUpdate(1, p, 4, p, &mut n)),
        ),
        (
            "C_GenerateKey",
            call!(
                m,
                C_GenerateKey(1, ptr::null_mut(), ptr::null_mut(), 0, &mut h)
            ),
        ),
        (
            "C_WrapKey",
            call!(m, C_WrapKey(1, ptr::null_mut(), 1, 2, p, &mut n)),
        ),
        (
            "C_UnwrapKey",
            call!(
                m,
                C_UnwrapKey(1, ptr::null_mut(), 1, p, 4, ptr::null_mut(), 0, &mut h)
            ),
        ),
    ];
    for (name, rv) in answers {
        assert_eq!(rv, CKR_FUNCTION_NOT_SUPPORTED, "{name}: {}", rv_hex(rv));
    }
    assert_eq!(
        call!(m, C_SeedRandom(1, p, 4)),
        CKR_RANDOM_SEED_NOT_SUPPORTED
    );
    assert_eq!(call!(m, C_GetFunctionStatus(1)), CKR_FUNCTION_NOT_PARALLEL);
    assert_eq!(call!(m, C_CancelFunction(1)), CKR_FUNCTION_NOT_PARALLEL);
}

/// Needs the core. Proves: C_GetSlotList and C_GetMechanismList follow the size-query
/// convention: NULL list → count, short list → CKR_BUFFER_TOO_SMALL with the count written
/// and nothing else touched, big enough list → the items and the exact count.
#[test]
fn slot_and_mechanism_lists() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let mut n: CK_ULONG = 0;
    let rv = call!(m, C_GetSlotList(CK_FALSE, ptr::null_mut(), &mut n));
    assert_eq!(rv, CKR_OK, "slot count: {}", rv_hex(rv));
    assert!(n >= 1, "one slot per virtual card in TESSERA_VCARD");
    let count = n;
    let mut slots = vec![CK_SLOT_ID::MAX; count as usize + 1];
    n = count - 1;
    assert_eq!(
        call!(m, C_GetSlotList(CK_FALSE, slots.as_mut_ptr(), &mut n)),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(n, count);
    assert!(
        slots.iter().all(|s| *s == CK_SLOT_ID::MAX),
        "nothing written"
    );
    n = count + 1;
    assert_eq!(
        call!(m, C_GetSlotList(CK_FALSE, slots.as_mut_ptr(), &mut n)),
        CKR_OK
    );
    assert_eq!(n, count);
    assert_eq!(
        slots[count as usize],
        CK_SLOT_ID::MAX,
        "no write past the count"
    );
    let slot = slots[0];

    let mut n: CK_ULONG = 0;
    let rv = call!(m, C_GetMechanismList(slot, ptr::null_mut(), &mut n));
    assert_eq!(rv, CKR_OK, "mechanism count: {}", rv_hex(rv));
    assert!(n >= 1);
    let count = n;
    let mut mechs = vec![CK_MECHANISM_TYPE::MAX; count as usize];
    n = 1;
    let rv = call!(m, C_GetMechanismList(slot, mechs.as_mut_ptr(), &mut n));
    if count > 1 {
        assert_eq!(rv, CKR_BUFFER_TOO_SMALL);
        assert_eq!(n, count);
    }
    n = count;
    assert_eq!(
        call!(m, C_GetMechanismList(slot, mechs.as_mut_ptr(), &mut n)),
        CKR_OK
    );
    assert_eq!(n, count);
    let mut info = CK_MECHANISM_INFO::default();
    assert_eq!(
        call!(m, C_GetMechanismInfo(slot, mechs[0], &mut info)),
        CKR_OK
    );
    let mut slot_info = CK_SLOT_INFO::default();
    assert_eq!(call!(m, C_GetSlotInfo(slot, &mut slot_info)), CKR_OK);
    assert_eq!(
        call!(m, C_GetSlotInfo(CK_SLOT_ID::MAX - 7, &mut slot_info)),
        CKR_SLOT_ID_INVALID
    );
}

/// Needs the core. Proves: handles that were never issued (or are closed) answer
/// CKR_SESSION_HANDLE_INVALID, and C_GetAttributeValue walks a mixed template: a NULL value
/// gets its length, a value that fits is copied, a short buffer and an unknown type get
/// CK_UNAVAILABLE_INFORMATION, and the first error in template order is returned.
#[test]
fn sessions_and_attributes() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let bogus: CK_SESSION_HANDLE = 0xDEAD_BEEF;
    let mut info = CK_SESSION_INFO::default();
    assert_eq!(call!(m, C_CloseSession(bogus)), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(
        call!(m, C_GetSessionInfo(bogus, &mut info)),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        call!(m, C_FindObjectsInit(bogus, ptr::null_mut(), 0)),
        CKR_SESSION_HANDLE_INVALID
    );
    let mut pin = *b"123456";
    assert_eq!(
        call!(m, C_Login(bogus, CKU_USER, pin.as_mut_ptr(), 6)),
        CKR_SESSION_HANDLE_INVALID
    );

    let mut slots = [0 as CK_SLOT_ID; 8];
    let mut n: CK_ULONG = 8;
    assert_eq!(
        call!(m, C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n)),
        CKR_OK
    );
    assert!(n >= 1, "the virtual card's token is present");
    let mut session: CK_SESSION_HANDLE = 0;
    assert_eq!(
        call!(
            m,
            C_OpenSession(
                slots[0],
                CKF_SERIAL_SESSION,
                ptr::null_mut(),
                None,
                &mut session
            )
        ),
        CKR_OK
    );
    assert_eq!(call!(m, C_GetSessionInfo(session, &mut info)), CKR_OK);
    assert_eq!(info.slotID, slots[0]);

    assert_eq!(
        call!(m, C_FindObjectsInit(session, ptr::null_mut(), 0)),
        CKR_OK
    );
    let mut objects = [0 as CK_OBJECT_HANDLE; 64];
    let mut found: CK_ULONG = 0;
    assert_eq!(
        call!(
            m,
            C_FindObjects(session, objects.as_mut_ptr(), 64, &mut found)
        ),
        CKR_OK
    );
    assert_eq!(call!(m, C_FindObjectsFinal(session)), CKR_OK);
    assert!(found >= 1, "at least the CKO_PROFILE object");
    let object = objects[0];

    let unknown: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x7E55;
    let mut class = [0u8; std::mem::size_of::<CK_ULONG>()];
    let mut short = [0u8; 1];
    let attr = |ty, value: *mut u8, len: usize| CK_ATTRIBUTE {
        type_: ty,
        pValue: value.cast(),
        ulValueLen: len as CK_ULONG,
    };
    let mut template = [
        attr(CKA_CLASS, class.as_mut_ptr(), class.len()),
        attr(CKA_CLASS, ptr::null_mut(), 0),
        attr(CKA_CLASS, short.as_mut_ptr(), 1),
        attr(unknown, ptr::null_mut(), 0),
    ];
    let rv = call!(
        m,
        C_GetAttributeValue(session, object, template.as_mut_ptr(), 4)
    );
    assert_eq!(rv, CKR_BUFFER_TOO_SMALL, "first error in template order");
    let len = std::mem::size_of::<CK_ULONG>() as CK_ULONG;
    assert_eq!(template[0].ulValueLen, len);
    assert!(CK_ULONG::from_ne_bytes(class) <= CKO_PROFILE);
    assert_eq!(template[1].ulValueLen, len, "NULL value: length only");
    assert_eq!(template[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(short, [0], "nothing written into a short buffer");
    assert_eq!(template[3].ulValueLen, CK_UNAVAILABLE_INFORMATION);

    let mut template = [
        attr(unknown, ptr::null_mut(), 0),
        attr(CKA_CLASS, short.as_mut_ptr(), 1),
        attr(CKA_CLASS, ptr::null_mut(), 0),
    ];
    let rv = call!(
        m,
        C_GetAttributeValue(session, object, template.as_mut_ptr(), 3)
    );
    assert_eq!(
        rv, CKR_ATTRIBUTE_TYPE_INVALID,
        "first error in template order"
    );
    assert_eq!(template[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(template[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(template[2].ulValueLen, len, "processed after the errors");

    assert_eq!(
        call!(m, C_GetAttributeValue(session, object, ptr::null_mut(), 1)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(call!(m, C_CloseSession(session)), CKR_OK);
    assert_eq!(
        call!(m, C_CloseSession(session)),
        CKR_SESSION_HANDLE_INVALID
    );
}

/// Proves: C_GetInfo reports the Cryptoki version of the function list it was reached
/// through — 3.0 through the default "PKCS 11" interface (C_GetInterface), 2.40 through
/// C_GetFunctionList, the 2.40 interface and the exported symbol.
#[test]
fn get_info_version_follows_the_function_list() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let symbol = get_interface(m);
    let mut name = *b"PKCS 11\0";
    let mut v30 = CK_VERSION { major: 3, minor: 0 };
    let mut v240 = CK_VERSION {
        major: 2,
        minor: 40,
    };
    let mut found: *mut CK_INTERFACE = ptr::null_mut();
    // SAFETY: NUL-terminated name, version and out-pointer are locals.
    let rv = unsafe { symbol(name.as_mut_ptr(), &mut v30, &mut found, 0) };
    assert_eq!(rv, CKR_OK);
    // SAFETY: the module returned its static 3.0 interface, whose list is a
    // CK_FUNCTION_LIST_3_0.
    let l3 = unsafe { &*(*found).pFunctionList.cast::<CK_FUNCTION_LIST_3_0>() };
    let mut info = CK_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { l3.C_GetInfo.unwrap()(&mut info) }, CKR_OK);
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (3, 0),
        "C_GetInfo through the 3.0 list"
    );
    // SAFETY: NULL must be refused without a write.
    let rv = unsafe { l3.C_GetInfo.unwrap()(ptr::null_mut()) };
    assert_eq!(rv, CKR_ARGUMENTS_BAD);
    let manufacturer = info.manufacturerID;

    // SAFETY: NUL-terminated name, version and out-pointer are locals.
    let rv = unsafe { symbol(name.as_mut_ptr(), &mut v240, &mut found, 0) };
    assert_eq!(rv, CKR_OK);
    // SAFETY: the 2.40 interface's list is a CK_FUNCTION_LIST.
    let l2 = unsafe { &*(*found).pFunctionList.cast::<CK_FUNCTION_LIST>() };
    let mut info = CK_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { l2.C_GetInfo.unwrap()(&mut info) }, CKR_OK);
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (2, 40)
    );
    assert_eq!(
        info.manufacturerID, manufacturer,
        "same library, other version"
    );
    let mut info = CK_INFO::default();
    assert_eq!(call!(m, C_GetInfo(&mut info)), CKR_OK);
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (2, 40)
    );
    // SAFETY: the exported C_GetInfo has the CK_C_GetInfo signature.
    let exported: libloading::Symbol<'_, unsafe extern "C" fn(*mut CK_INFO) -> CK_RV> =
        unsafe { m.lib.get(b"C_GetInfo\0") }.unwrap();
    let mut info = CK_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { exported(&mut info) }, CKR_OK);
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (2, 40)
    );
}
