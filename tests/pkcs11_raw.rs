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
    tessera::vcard::CardFile::create(&path, &tessera::vcard::CardState::factory(1)).unwrap();
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
    let manufacturer = format!("{:<32}", tessera::token::MANUFACTURER);
    let description = format!("{:<32}", tessera::token::LIBRARY_DESCRIPTION);
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
/// without CKF_SERIAL_SESSION, and malformed mechanism parameters — each refused (after the
/// session handle, §5.1.7) before the core is asked.
#[test]
fn bad_arguments() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    // A real session: an invalid handle would be answered first (§5.1.7).
    let s = open_rw_session(m);
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
    assert_eq!(call!(m, C_GetSessionInfo(s, ptr::null_mut())), bad);
    assert_eq!(
        call!(m, C_Login(s, CKU_USER, ptr::null_mut(), 0)),
        bad,
        "NULL PIN, length 0"
    );
    assert_eq!(call!(m, C_Login(s, CKU_USER, ptr::null_mut(), 6)), bad);
    assert_eq!(call!(m, C_InitPIN(s, ptr::null_mut(), 0)), bad);
    assert_eq!(
        call!(m, C_SetPIN(s, ptr::null_mut(), 0, data.as_mut_ptr(), 6)),
        bad
    );

    // Templates.
    assert_eq!(call!(m, C_GetAttributeValue(s, 1, ptr::null_mut(), 1)), bad);
    assert_eq!(call!(m, C_SetAttributeValue(s, 1, ptr::null_mut(), 2)), bad);
    assert_eq!(
        call!(m, C_CreateObject(s, ptr::null_mut(), 1, &mut object)),
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
            C_CreateObject(s, template.as_mut_ptr(), 1, ptr::null_mut())
        ),
        bad
    );
    template[0].pValue = ptr::null_mut();
    assert_eq!(
        call!(m, C_FindObjectsInit(s, template.as_mut_ptr(), 1)),
        bad,
        "NULL pValue, length 8"
    );
    assert_eq!(call!(m, C_FindObjects(s, ptr::null_mut(), 4, &mut n)), bad);
    let mut found = [0 as CK_OBJECT_HANDLE; 4];
    assert_eq!(
        call!(m, C_FindObjects(s, found.as_mut_ptr(), 4, ptr::null_mut())),
        bad
    );

    // Data and output buffers.
    assert_eq!(
        call!(m, C_SignInit(s, ptr::null_mut(), 1)),
        CKR_OK,
        "NULL mechanism: cancels the (absent) operation, PKCS#11 3.0"
    );
    assert_eq!(call!(m, C_DigestInit(s, ptr::null_mut())), CKR_OK);
    assert_eq!(
        call!(m, C_Sign(s, ptr::null_mut(), 5, data.as_mut_ptr(), &mut n)),
        bad,
        "NULL data with a length"
    );
    assert_eq!(
        call!(
            m,
            C_Sign(s, data.as_mut_ptr(), 4, data.as_mut_ptr(), ptr::null_mut())
        ),
        bad
    );
    assert_eq!(
        call!(m, C_SignFinal(s, data.as_mut_ptr(), ptr::null_mut())),
        bad
    );
    assert_eq!(
        call!(m, C_Verify(s, data.as_mut_ptr(), 4, ptr::null_mut(), 64)),
        bad
    );
    assert_eq!(call!(m, C_SignUpdate(s, ptr::null_mut(), 1)), bad);
    assert_eq!(call!(m, C_GenerateRandom(s, ptr::null_mut(), 16)), bad);

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
        call!(m, C_SignInit(s, &mut mech, 1)),
        CKR_MECHANISM_PARAM_INVALID
    );
    mech.pParameter = ptr::null_mut();
    mech.ulParameterLen = std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG;
    assert_eq!(
        call!(m, C_SignInit(s, &mut mech, 1)),
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
        call!(m, C_DecryptInit(s, &mut mech, 1)),
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
            C_DeriveKey(s, &mut mech, 1, ptr::null_mut(), 0, &mut object)
        ),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        call!(
            m,
            C_DeriveKey(s, &mut mech, 1, ptr::null_mut(), 0, ptr::null_mut())
        ),
        bad
    );
}

/// Proves: every function Tessera does not offer answers CKR_FUNCTION_NOT_SUPPORTED (and
/// C_GetFunctionStatus/C_CancelFunction CKR_FUNCTION_NOT_PARALLEL), whatever the arguments;
/// C_SeedRandom on a valid session CKR_RANDOM_SEED_NOT_SUPPORTED.
#[test]
fn unsupported_functions() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let s = open_rw_session(m);
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
        call!(m, C_SeedRandom(s, p, 4)),
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

// ---- operation state machine, error precedence, version by function list ----------------------
// (issue 11, point 8: PKCS#11 3.0 §5.1.7, §5.12–5.13, and what google's pkcs11test checks)

/// An RW session on the virtual card's main token (slot list order: virtual cards first).
fn open_rw_session(m: &Module) -> CK_SESSION_HANDLE {
    let mut slots = [0 as CK_SLOT_ID; 16];
    let mut n: CK_ULONG = 16;
    assert_eq!(
        call!(m, C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n)),
        CKR_OK
    );
    assert!(n >= 1, "the virtual card's token is present");
    let mut session: CK_SESSION_HANDLE = 0;
    let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
    assert_eq!(
        call!(
            m,
            C_OpenSession(slots[0], flags, ptr::null_mut(), None, &mut session)
        ),
        CKR_OK
    );
    session
}

/// C_Login(CKU_USER) with the factory PIN.
fn login_user(m: &Module, session: CK_SESSION_HANDLE) {
    let mut pin = *b"123456";
    assert_eq!(
        call!(m, C_Login(session, CKU_USER, pin.as_mut_ptr(), 6)),
        CKR_OK
    );
}

fn attribute(ty: CK_ATTRIBUTE_TYPE, value: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: ty,
        pValue: value.as_mut_ptr().cast(),
        ulValueLen: value.len() as CK_ULONG,
    }
}

/// An RSA-2048 key pair generated on the card (CKA_ID 01, the PIV authentication slot, which
/// signs and decrypts), in a logged-in RW session: (public, private).
fn generate_rsa(m: &Module, session: CK_SESSION_HANDLE) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let mut yes = [CK_TRUE];
    let (mut t1, mut t2, mut t3, mut t4, mut t5) = (yes, yes, yes, yes, yes);
    let mut id = [0x01u8];
    let mut id2 = id;
    let mut bits = (2048 as CK_ULONG).to_ne_bytes();
    let mut exponent = [0x01u8, 0x00, 0x01];
    let mut public = [
        attribute(CKA_TOKEN, &mut yes),
        attribute(CKA_ID, &mut id),
        attribute(CKA_VERIFY, &mut t1),
        attribute(CKA_MODULUS_BITS, &mut bits),
        attribute(CKA_PUBLIC_EXPONENT, &mut exponent),
    ];
    let mut private = [
        attribute(CKA_TOKEN, &mut t2),
        attribute(CKA_PRIVATE, &mut t3),
        attribute(CKA_ID, &mut id2),
        attribute(CKA_SIGN, &mut t4),
        attribute(CKA_DECRYPT, &mut t5),
    ];
    let mut mech = CK_MECHANISM {
        mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    let (mut public_key, mut private_key) = (0, 0);
    let rv = call!(
        m,
        C_GenerateKeyPair(
            session,
            &mut mech,
            public.as_mut_ptr(),
            public.len() as CK_ULONG,
            private.as_mut_ptr(),
            private.len() as CK_ULONG,
            &mut public_key,
            &mut private_key,
        )
    );
    assert_eq!(rv, CKR_OK, "C_GenerateKeyPair RSA-2048: {}", rv_hex(rv));
    (public_key, private_key)
}

fn mechanism(ty: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: ty,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    }
}

const DATA: &[u8] = b"one message, two calls";

/// `DATA` as the `*mut CK_BYTE` the C prototypes want (the module only reads it).
fn data() -> *mut CK_BYTE {
    DATA.as_ptr().cast_mut()
}

const DATA_LEN: CK_ULONG = DATA.len() as CK_ULONG;

/// A single-part call (C_Digest, C_Sign) into a 512-byte buffer: (rv, output).
fn single_part(
    f: unsafe extern "C" fn(
        CK_SESSION_HANDLE,
        *mut CK_BYTE,
        CK_ULONG,
        *mut CK_BYTE,
        *mut CK_ULONG,
    ) -> CK_RV,
    session: CK_SESSION_HANDLE,
    input: &[u8],
) -> (CK_RV, Vec<u8>) {
    let mut out = vec![0u8; 512];
    let mut len = out.len() as CK_ULONG;
    // SAFETY: input and output are valid for their lengths; the module only reads `input`.
    let rv = unsafe {
        f(
            session,
            input.as_ptr().cast_mut(),
            input.len() as CK_ULONG,
            out.as_mut_ptr(),
            &mut len,
        )
    };
    out.truncate(if rv == CKR_OK { len as usize } else { 0 });
    (rv, out)
}

/// A C_xxxFinal call into a 512-byte buffer: (rv, output).
fn finish(
    f: unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG) -> CK_RV,
    session: CK_SESSION_HANDLE,
) -> (CK_RV, Vec<u8>) {
    let mut out = vec![0u8; 512];
    let mut len = out.len() as CK_ULONG;
    // SAFETY: the output buffer and its length are valid locals.
    let rv = unsafe { f(session, out.as_mut_ptr(), &mut len) };
    out.truncate(if rv == CKR_OK { len as usize } else { 0 });
    (rv, out)
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// Proves (pkcs11test DigestIntersperse/DigestFinalIntersperse, PKCS#11 3.0 §5.12–5.13):
/// C_Digest/C_Sign/C_Verify after an Update cannot finish the multi-part operation — they
/// answer CKR_OPERATION_ACTIVE and the operation ends; C_DigestFinal/C_SignFinal after a
/// single-part length query likewise; length queries and CKR_BUFFER_TOO_SMALL keep it.
#[test]
fn single_part_and_multi_part_calls_do_not_mix() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let l = m.list;
    let s = open_rw_session(m);
    let mut sha = mechanism(CKM_SHA256);

    // Digest: Update, then C_Digest.
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(call!(m, C_DigestUpdate(s, data(), DATA_LEN)), CKR_OK);
    let (rv, _) = single_part(l.C_Digest.unwrap(), s, DATA);
    assert_eq!(
        rv,
        CKR_OPERATION_ACTIVE,
        "C_Digest after C_DigestUpdate: {}",
        rv_hex(rv)
    );
    let (rv, _) = finish(l.C_DigestFinal.unwrap(), s);
    assert_eq!(
        rv, CKR_OPERATION_NOT_INITIALIZED,
        "the refused C_Digest ended the operation"
    );

    // Digest: a single-part length query, then C_DigestFinal.
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    let mut len: CK_ULONG = 0;
    assert_eq!(
        call!(m, C_Digest(s, data(), DATA_LEN, ptr::null_mut(), &mut len)),
        CKR_OK
    );
    assert_eq!(len, 32);
    let (rv, _) = finish(l.C_DigestFinal.unwrap(), s);
    assert_eq!(
        rv,
        CKR_OPERATION_ACTIVE,
        "C_DigestFinal after C_Digest: {}",
        rv_hex(rv)
    );
    let (rv, _) = single_part(l.C_Digest.unwrap(), s, DATA);
    assert_eq!(
        rv, CKR_OPERATION_NOT_INITIALIZED,
        "the refused C_DigestFinal ended it"
    );

    // Digest: the multi-part convention still works (query, too small, result).
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(call!(m, C_DigestUpdate(s, data(), 4)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_DigestUpdate(s, DATA[4..].as_ptr().cast_mut(), DATA_LEN - 4)
        ),
        CKR_OK
    );
    let mut len: CK_ULONG = 0;
    assert_eq!(
        call!(m, C_DigestFinal(s, ptr::null_mut(), &mut len)),
        CKR_OK
    );
    assert_eq!(len, 32);
    let mut short = [0u8; 4];
    len = 4;
    assert_eq!(
        call!(m, C_DigestFinal(s, short.as_mut_ptr(), &mut len)),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(len, 32);
    let (rv, digest) = finish(l.C_DigestFinal.unwrap(), s);
    assert_eq!(rv, CKR_OK);
    assert_eq!(digest, sha256(DATA));

    // Sign and verify with a key on the card.
    login_user(m, s);
    let (public, private) = generate_rsa(m, s);
    let mut rsa = mechanism(CKM_SHA256_RSA_PKCS);
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    assert_eq!(call!(m, C_SignUpdate(s, data(), DATA_LEN)), CKR_OK);
    let (rv, _) = single_part(l.C_Sign.unwrap(), s, DATA);
    assert_eq!(
        rv,
        CKR_OPERATION_ACTIVE,
        "C_Sign after C_SignUpdate: {}",
        rv_hex(rv)
    );
    let (rv, _) = finish(l.C_SignFinal.unwrap(), s);
    assert_eq!(
        rv, CKR_OPERATION_NOT_INITIALIZED,
        "the refused C_Sign ended the operation"
    );

    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    let mut len: CK_ULONG = 0;
    assert_eq!(
        call!(m, C_Sign(s, data(), DATA_LEN, ptr::null_mut(), &mut len)),
        CKR_OK
    );
    assert_eq!(len, 256);
    let (rv, _) = finish(l.C_SignFinal.unwrap(), s);
    assert_eq!(
        rv,
        CKR_OPERATION_ACTIVE,
        "C_SignFinal after C_Sign: {}",
        rv_hex(rv)
    );
    let (rv, _) = single_part(l.C_Sign.unwrap(), s, DATA);
    assert_eq!(
        rv, CKR_OPERATION_NOT_INITIALIZED,
        "the refused C_SignFinal ended it"
    );

    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    let (rv, signature) = single_part(l.C_Sign.unwrap(), s, DATA);
    assert_eq!(rv, CKR_OK);
    let mut signature = signature;
    let sig_len = signature.len() as CK_ULONG;

    assert_eq!(call!(m, C_VerifyInit(s, &mut rsa, public)), CKR_OK);
    assert_eq!(call!(m, C_VerifyUpdate(s, data(), DATA_LEN)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_Verify(s, data(), DATA_LEN, signature.as_mut_ptr(), sig_len)
        ),
        CKR_OPERATION_ACTIVE,
        "C_Verify after C_VerifyUpdate"
    );
    assert_eq!(
        call!(m, C_VerifyFinal(s, signature.as_mut_ptr(), sig_len)),
        CKR_OPERATION_NOT_INITIALIZED,
        "the refused C_Verify ended the operation"
    );
    assert_eq!(call!(m, C_VerifyInit(s, &mut rsa, public)), CKR_OK);
    assert_eq!(call!(m, C_VerifyUpdate(s, data(), 3)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_VerifyUpdate(s, DATA[3..].as_ptr().cast_mut(), DATA_LEN - 3)
        ),
        CKR_OK
    );
    assert_eq!(
        call!(m, C_VerifyFinal(s, signature.as_mut_ptr(), sig_len)),
        CKR_OK,
        "multi-part verification of the single-part signature"
    );
    assert_eq!(call!(m, C_CloseSession(s)), CKR_OK);
}

/// Proves (PKCS#11 3.0 §5.13, pkcs11test DigestInvalid/DigestFinalInvalid): a call that
/// continues or finishes an operation and fails on its arguments — NULL data with a length,
/// NULL length pointer — ends the operation like every other error but CKR_BUFFER_TOO_SMALL.
/// An operation of another kind is left alone.
#[test]
fn bad_arguments_end_the_operation() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let l = m.list;
    let s = open_rw_session(m);
    let mut sha = mechanism(CKM_SHA256);
    let mut out = [0u8; 512];
    let mut len: CK_ULONG = 512;
    let not_init = CKR_OPERATION_NOT_INITIALIZED;

    // C_Digest: NULL data with a length; then NULL length pointer.
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_Digest(s, ptr::null_mut(), 5, out.as_mut_ptr(), &mut len)
        ),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        single_part(l.C_Digest.unwrap(), s, DATA).0,
        not_init,
        "C_Digest(NULL, 5)"
    );
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_Digest(s, data(), DATA_LEN, out.as_mut_ptr(), ptr::null_mut())
        ),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        single_part(l.C_Digest.unwrap(), s, DATA).0,
        not_init,
        "C_Digest(.., NULL)"
    );
    // C_DigestUpdate and C_DigestFinal.
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(
        call!(m, C_DigestUpdate(s, ptr::null_mut(), 3)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        call!(m, C_DigestUpdate(s, data(), DATA_LEN)),
        not_init,
        "C_DigestUpdate(NULL, 3)"
    );
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(call!(m, C_DigestUpdate(s, data(), DATA_LEN)), CKR_OK);
    assert_eq!(
        call!(m, C_DigestFinal(s, out.as_mut_ptr(), ptr::null_mut())),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        finish(l.C_DigestFinal.unwrap(), s).0,
        not_init,
        "C_DigestFinal(.., NULL)"
    );

    login_user(m, s);
    let (public, private) = generate_rsa(m, s);
    let mut rsa = mechanism(CKM_SHA256_RSA_PKCS);
    // C_Sign, C_SignUpdate, C_SignFinal.
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    assert_eq!(
        call!(m, C_Sign(s, ptr::null_mut(), 5, out.as_mut_ptr(), &mut len)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        single_part(l.C_Sign.unwrap(), s, DATA).0,
        not_init,
        "C_Sign(NULL, 5)"
    );
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_Sign(s, data(), DATA_LEN, out.as_mut_ptr(), ptr::null_mut())
        ),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        single_part(l.C_Sign.unwrap(), s, DATA).0,
        not_init,
        "C_Sign(.., NULL)"
    );
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    assert_eq!(
        call!(m, C_SignUpdate(s, ptr::null_mut(), 3)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        call!(m, C_SignUpdate(s, data(), DATA_LEN)),
        not_init,
        "C_SignUpdate(NULL, 3)"
    );
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    assert_eq!(call!(m, C_SignUpdate(s, data(), DATA_LEN)), CKR_OK);
    assert_eq!(
        call!(m, C_SignFinal(s, out.as_mut_ptr(), ptr::null_mut())),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        finish(l.C_SignFinal.unwrap(), s).0,
        not_init,
        "C_SignFinal(.., NULL)"
    );
    // A length query and a short buffer keep the operation; the signature then comes.
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    let mut short = [0u8; 8];
    len = 8;
    assert_eq!(
        call!(m, C_Sign(s, data(), DATA_LEN, short.as_mut_ptr(), &mut len)),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(len, 256);
    let (rv, mut signature) = single_part(l.C_Sign.unwrap(), s, DATA);
    assert_eq!(rv, CKR_OK);
    let sig_len = signature.len() as CK_ULONG;

    // C_Verify, C_VerifyUpdate, C_VerifyFinal.
    assert_eq!(call!(m, C_VerifyInit(s, &mut rsa, public)), CKR_OK);
    assert_eq!(
        call!(m, C_Verify(s, data(), DATA_LEN, ptr::null_mut(), sig_len)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        call!(
            m,
            C_Verify(s, data(), DATA_LEN, signature.as_mut_ptr(), sig_len)
        ),
        not_init,
        "C_Verify(.., NULL, 256)"
    );
    assert_eq!(call!(m, C_VerifyInit(s, &mut rsa, public)), CKR_OK);
    assert_eq!(
        call!(m, C_VerifyUpdate(s, ptr::null_mut(), 3)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        call!(m, C_VerifyUpdate(s, data(), DATA_LEN)),
        not_init,
        "C_VerifyUpdate(NULL, 3)"
    );
    assert_eq!(call!(m, C_VerifyInit(s, &mut rsa, public)), CKR_OK);
    assert_eq!(call!(m, C_VerifyUpdate(s, data(), DATA_LEN)), CKR_OK);
    assert_eq!(
        call!(m, C_VerifyFinal(s, ptr::null_mut(), sig_len)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        call!(m, C_VerifyFinal(s, signature.as_mut_ptr(), sig_len)),
        not_init,
        "C_VerifyFinal(NULL, 256)"
    );

    // C_Encrypt and C_Decrypt (RSA PKCS#1 v1.5).
    let mut pkcs1 = mechanism(CKM_RSA_PKCS);
    assert_eq!(call!(m, C_EncryptInit(s, &mut pkcs1, public)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_Encrypt(s, ptr::null_mut(), 5, out.as_mut_ptr(), &mut len)
        ),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        single_part(l.C_Encrypt.unwrap(), s, DATA).0,
        not_init,
        "C_Encrypt(NULL, 5)"
    );
    assert_eq!(call!(m, C_EncryptInit(s, &mut pkcs1, public)), CKR_OK);
    let (rv, ciphertext) = single_part(l.C_Encrypt.unwrap(), s, DATA);
    assert_eq!(rv, CKR_OK);
    assert_eq!(call!(m, C_DecryptInit(s, &mut pkcs1, private)), CKR_OK);
    assert_eq!(
        call!(
            m,
            C_Decrypt(s, ptr::null_mut(), 256, out.as_mut_ptr(), &mut len)
        ),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        single_part(l.C_Decrypt.unwrap(), s, &ciphertext).0,
        not_init,
        "C_Decrypt(NULL, 256)"
    );
    assert_eq!(call!(m, C_DecryptInit(s, &mut pkcs1, private)), CKR_OK);
    let (rv, plain) = single_part(l.C_Decrypt.unwrap(), s, &ciphertext);
    assert_eq!(rv, CKR_OK);
    assert_eq!(plain, DATA);

    // Bad arguments to another kind of call leave the active operation alone.
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(
        call!(m, C_SignUpdate(s, ptr::null_mut(), 3)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        call!(
            m,
            C_Sign(s, data(), DATA_LEN, out.as_mut_ptr(), ptr::null_mut())
        ),
        CKR_ARGUMENTS_BAD
    );
    let (rv, digest) = single_part(l.C_Digest.unwrap(), s, DATA);
    assert_eq!(rv, CKR_OK, "the digest survived bad C_Sign calls");
    assert_eq!(digest, sha256(DATA));
    assert_eq!(call!(m, C_CloseSession(s)), CKR_OK);
}

/// Proves (PKCS#11 3.0, C_xxxInit with pMechanism NULL_PTR): C_DigestInit, C_SignInit,
/// C_VerifyInit, C_EncryptInit and C_DecryptInit with a NULL mechanism end the active
/// operation of their kind and answer CKR_OK (also when none is active); a new one can start.
#[test]
fn null_mechanism_cancels_the_operation() {
    let m = module();
    let _s = serial();
    let _init = Initialized::new(m);
    let l = m.list;
    let s = open_rw_session(m);
    let not_init = CKR_OPERATION_NOT_INITIALIZED;
    let mut sha = mechanism(CKM_SHA256);

    assert_eq!(
        call!(m, C_DigestInit(s, ptr::null_mut())),
        CKR_OK,
        "nothing to cancel"
    );
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(call!(m, C_DigestUpdate(s, data(), DATA_LEN)), CKR_OK);
    assert_eq!(
        call!(m, C_DigestInit(s, ptr::null_mut())),
        CKR_OK,
        "C_DigestInit(NULL)"
    );
    assert_eq!(finish(l.C_DigestFinal.unwrap(), s).0, not_init);
    assert_eq!(
        call!(m, C_DigestInit(s, &mut sha)),
        CKR_OK,
        "a new digest after the cancel"
    );
    let (rv, digest) = single_part(l.C_Digest.unwrap(), s, DATA);
    assert_eq!((rv, digest), (CKR_OK, sha256(DATA)));

    login_user(m, s);
    let (public, private) = generate_rsa(m, s);
    let mut rsa = mechanism(CKM_SHA256_RSA_PKCS);
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    assert_eq!(
        call!(m, C_SignInit(s, ptr::null_mut(), 0)),
        CKR_OK,
        "C_SignInit(NULL)"
    );
    assert_eq!(single_part(l.C_Sign.unwrap(), s, DATA).0, not_init);
    assert_eq!(call!(m, C_SignInit(s, &mut rsa, private)), CKR_OK);
    let (rv, mut signature) = single_part(l.C_Sign.unwrap(), s, DATA);
    assert_eq!(rv, CKR_OK);
    let sig_len = signature.len() as CK_ULONG;

    assert_eq!(call!(m, C_VerifyInit(s, &mut rsa, public)), CKR_OK);
    assert_eq!(
        call!(m, C_VerifyInit(s, ptr::null_mut(), 0)),
        CKR_OK,
        "C_VerifyInit(NULL)"
    );
    assert_eq!(
        call!(
            m,
            C_Verify(s, data(), DATA_LEN, signature.as_mut_ptr(), sig_len)
        ),
        not_init
    );

    let mut pkcs1 = mechanism(CKM_RSA_PKCS);
    assert_eq!(call!(m, C_EncryptInit(s, &mut pkcs1, public)), CKR_OK);
    assert_eq!(
        call!(m, C_EncryptInit(s, ptr::null_mut(), 0)),
        CKR_OK,
        "C_EncryptInit(NULL)"
    );
    assert_eq!(single_part(l.C_Encrypt.unwrap(), s, DATA).0, not_init);
    assert_eq!(call!(m, C_DecryptInit(s, &mut pkcs1, private)), CKR_OK);
    assert_eq!(
        call!(m, C_DecryptInit(s, ptr::null_mut(), 0)),
        CKR_OK,
        "C_DecryptInit(NULL)"
    );
    assert_eq!(
        single_part(l.C_Decrypt.unwrap(), s, &[0u8; 256]).0,
        not_init
    );

    // A NULL mechanism cancels only its own kind.
    assert_eq!(call!(m, C_DigestInit(s, &mut sha)), CKR_OK);
    assert_eq!(call!(m, C_SignInit(s, ptr::null_mut(), 0)), CKR_OK);
    let (rv, digest) = single_part(l.C_Digest.unwrap(), s, DATA);
    assert_eq!(
        (rv, digest),
        (CKR_OK, sha256(DATA)),
        "C_SignInit(NULL) left the digest"
    );
    assert_eq!(call!(m, C_CloseSession(s)), CKR_OK);
}

/// Proves (PKCS#11 3.0 §5.1.7, pkcs11test SeedRandomNoSession/SeedRandomBadArguments): a
/// session function answers CKR_CRYPTOKI_NOT_INITIALIZED first, then
/// CKR_SESSION_HANDLE_INVALID, and only then looks at its other arguments and gives its own
/// answer (C_SeedRandom: CKR_ARGUMENTS_BAD for NULL with a length, else
/// CKR_RANDOM_SEED_NOT_SUPPORTED).
#[test]
fn session_handle_errors_come_before_the_functions_own() {
    let m = module();
    let _s = serial();
    let mut seed = [1u8, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(
        call!(m, C_SeedRandom(1, seed.as_mut_ptr(), 8)),
        CKR_CRYPTOKI_NOT_INITIALIZED,
        "C_SeedRandom before C_Initialize"
    );
    let _init = Initialized::new(m);
    let bogus: CK_SESSION_HANDLE = 0xDEAD_BEEF;
    let invalid = CKR_SESSION_HANDLE_INVALID;
    assert_eq!(
        call!(m, C_SeedRandom(bogus, seed.as_mut_ptr(), 8)),
        invalid,
        "C_SeedRandom on an invalid session"
    );
    let s = open_rw_session(m);
    assert_eq!(
        call!(m, C_SeedRandom(s, ptr::null_mut(), 1)),
        CKR_ARGUMENTS_BAD,
        "C_SeedRandom(NULL, 1)"
    );
    assert_eq!(
        call!(m, C_SeedRandom(s, seed.as_mut_ptr(), 8)),
        CKR_RANDOM_SEED_NOT_SUPPORTED
    );

    // Every session function: an invalid handle wins over NULL arguments.
    let answers = [
        (
            "C_GetSessionInfo",
            call!(m, C_GetSessionInfo(bogus, ptr::null_mut())),
        ),
        (
            "C_Login",
            call!(m, C_Login(bogus, CKU_USER, ptr::null_mut(), 0)),
        ),
        ("C_InitPIN", call!(m, C_InitPIN(bogus, ptr::null_mut(), 6))),
        (
            "C_SetPIN",
            call!(m, C_SetPIN(bogus, ptr::null_mut(), 6, ptr::null_mut(), 6)),
        ),
        (
            "C_CreateObject",
            call!(
                m,
                C_CreateObject(bogus, ptr::null_mut(), 1, ptr::null_mut())
            ),
        ),
        (
            "C_GetObjectSize",
            call!(m, C_GetObjectSize(bogus, 1, ptr::null_mut())),
        ),
        (
            "C_GetAttributeValue",
            call!(m, C_GetAttributeValue(bogus, 1, ptr::null_mut(), 1)),
        ),
        (
            "C_SetAttributeValue",
            call!(m, C_SetAttributeValue(bogus, 1, ptr::null_mut(), 1)),
        ),
        (
            "C_FindObjectsInit",
            call!(m, C_FindObjectsInit(bogus, ptr::null_mut(), 1)),
        ),
        (
            "C_FindObjects",
            call!(m, C_FindObjects(bogus, ptr::null_mut(), 4, ptr::null_mut())),
        ),
        (
            "C_DigestInit",
            call!(m, C_DigestInit(bogus, ptr::null_mut())),
        ),
        (
            "C_Digest",
            call!(
                m,
                C_Digest(bogus, ptr::null_mut(), 5, ptr::null_mut(), ptr::null_mut())
            ),
        ),
        (
            "C_DigestUpdate",
            call!(m, C_DigestUpdate(bogus, ptr::null_mut(), 5)),
        ),
        (
            "C_DigestFinal",
            call!(m, C_DigestFinal(bogus, ptr::null_mut(), ptr::null_mut())),
        ),
        (
            "C_SignInit",
            call!(m, C_SignInit(bogus, ptr::null_mut(), 1)),
        ),
        (
            "C_Sign",
            call!(
                m,
                C_Sign(bogus, ptr::null_mut(), 5, ptr::null_mut(), ptr::null_mut())
            ),
        ),
        (
            "C_SignUpdate",
            call!(m, C_SignUpdate(bogus, ptr::null_mut(), 5)),
        ),
        (
            "C_SignFinal",
            call!(m, C_SignFinal(bogus, ptr::null_mut(), ptr::null_mut())),
        ),
        (
            "C_VerifyInit",
            call!(m, C_VerifyInit(bogus, ptr::null_mut(), 1)),
        ),
        (
            "C_Verify",
            call!(m, C_Verify(bogus, ptr::null_mut(), 5, ptr::null_mut(), 5)),
        ),
        (
            "C_VerifyUpdate",
            call!(m, C_VerifyUpdate(bogus, ptr::null_mut(), 5)),
        ),
        (
            "C_VerifyFinal",
            call!(m, C_VerifyFinal(bogus, ptr::null_mut(), 5)),
        ),
        (
            "C_EncryptInit",
            call!(m, C_EncryptInit(bogus, ptr::null_mut(), 1)),
        ),
        (
            "C_Encrypt",
            call!(
                m,
                C_Encrypt(bogus, ptr::null_mut(), 5, ptr::null_mut(), ptr::null_mut())
            ),
        ),
        (
            "C_DecryptInit",
            call!(m, C_DecryptInit(bogus, ptr::null_mut(), 1)),
        ),
        (
            "C_Decrypt",
            call!(
                m,
                C_Decrypt(bogus, ptr::null_mut(), 5, ptr::null_mut(), ptr::null_mut())
            ),
        ),
        (
            "C_GenerateKeyPair",
            call!(
                m,
                C_GenerateKeyPair(
                    bogus,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    1,
                    ptr::null_mut(),
                    1,
                    ptr::null_mut(),
                    ptr::null_mut()
                )
            ),
        ),
        (
            "C_DeriveKey",
            call!(
                m,
                C_DeriveKey(
                    bogus,
                    ptr::null_mut(),
                    1,
                    ptr::null_mut(),
                    1,
                    ptr::null_mut()
                )
            ),
        ),
        (
            "C_GenerateRandom",
            call!(m, C_GenerateRandom(bogus, ptr::null_mut(), 16)),
        ),
    ];
    for (name, rv) in answers {
        assert_eq!(rv, invalid, "{name}: {}", rv_hex(rv));
    }
    assert_eq!(call!(m, C_CloseSession(s)), CKR_OK);
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
