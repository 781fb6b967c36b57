//! Benchmark: our PKCS#11 module beside OpenSC's, on the same virtual PIV card in the same run.
//!
//! Both modules are loaded the way applications load them (dlopen + C_GetFunctionList) and
//! driven through their function lists. For each (module, operation) it prints the median and
//! p90 wall time and the APDUs the card received per operation, then whether our module met
//! the budgets of DESIGN.md ("Performance rules"). It prints figures and asserts nothing about
//! time.
//!
//! APDUs are counted at the card, so neither module is touched: the software card
//! (`tessera vcard serve`) connects to a small TCP proxy inside this benchmark, which connects
//! on to pcscd's vpcd reader driver and forwards the vpcd frames both ways, counting the
//! frames longer than one byte that go towards the card (one-byte frames are control codes).
//! The proxy also keeps each command's header (CLA INS P1 P2 only, never data), printed as the
//! trace of an operation that exceeds its budget.
//!
//! Needs a PC/SC lab (`bash pkg/scripts/pcsc-lab.sh up DIR; . DIR/env`) and TESSERA_BIN naming
//! the tessera binary; without them it prints "skipped (no lab)" and exits 0. Our module is
//! `target/release/libtessera_pkcs11.so` (or TESSERA_MODULE), OpenSC's
//! `/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so` (or OPENSC_MODULE). BENCH_ROUNDS sets N
//! (default 50); BENCH_TRACE=1 prints every operation's APDU headers of its last round.
//!
//! Card: factory-fresh, then populated through our module: EC P-256 key pairs with
//! certificates (issued on the host by a throw-away P-256 CA) in 9A, 9C, 9D and 9E (9E through
//! the card's card-authentication token); for the RSA figures 9A is regenerated as RSA-2048
//! with a new certificate. "C_Initialize..list" lists every token of the card (ours: the main
//! token and the card-authentication token; OpenSC: its one token).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use cryptoki_sys::*;
use std::ffi::c_void;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::ptr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

const PIN: &[u8] = b"123456";
const OPENSC_DEFAULT: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
/// Stop an operation's rounds after this much time (at least MIN_ROUNDS rounds are run).
const OP_TIME_BUDGET: Duration = Duration::from_secs(3);
const MIN_ROUNDS: usize = 5;
/// DER of the P-256 curve OID (CKA_EC_PARAMS).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// DigestInfo prefix of SHA-256 (PKCS#1 v1.5).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

// ---------------------------------------------------------------------------------------------
// APDU tap: a vpcd frame proxy between pcscd's vpcd driver and the card server.

/// What the proxy saw going to the card.
#[derive(Default)]
struct Tap {
    apdus: AtomicU64,
    headers: Mutex<Vec<Header>>,
}

/// A command as traced: CLA INS P1 P2, and for GET DATA the object tag (never other data).
#[derive(Clone, Copy)]
struct Header {
    cla_ins_p1_p2: [u8; 4],
    tag: Option<u32>,
}

/// A position in the tap's record.
#[derive(Clone, Copy)]
struct Mark {
    apdus: u64,
    headers: usize,
}

impl Tap {
    fn record(&self, apdu: &[u8]) {
        let mut h = [0u8; 4];
        for (d, s) in h.iter_mut().zip(apdu) {
            *d = *s;
        }
        // GET DATA: CLA CB 3F FF Lc (short, or 00 Lc1 Lc2 extended) 5C len tag… — the tag
        // says which object is read.
        let data = match apdu {
            [_, 0xCB, 0x3F, 0xFF, 0, _, _, data @ ..] => data,
            [_, 0xCB, 0x3F, 0xFF, _, data @ ..] => data,
            _ => &[],
        };
        let tag = match data {
            [0x5C, n, rest @ ..] if usize::from(*n) <= rest.len() => Some(
                rest[..usize::from(*n)]
                    .iter()
                    .fold(0u32, |a, b| (a << 8) | u32::from(*b)),
            ),
            _ => None,
        };
        self.headers.lock().unwrap().push(Header {
            cla_ins_p1_p2: h,
            tag,
        });
        self.apdus.fetch_add(1, Ordering::SeqCst);
    }

    fn mark(&self) -> Mark {
        let headers = self.headers.lock().unwrap().len();
        Mark {
            apdus: self.apdus.load(Ordering::SeqCst),
            headers,
        }
    }

    fn apdus_since(&self, m: Mark) -> u64 {
        self.apdus.load(Ordering::SeqCst) - m.apdus
    }

    fn headers_since(&self, m: Mark) -> Vec<Header> {
        self.headers.lock().unwrap()[m.headers..].to_vec()
    }
}

/// Re-arms TCP_QUICKACK (Linux clears it after a while): Debian's vpcd writes a frame's
/// header and payload in two segments, so a delayed ACK would stall each APDU ~40 ms.
fn rearm_quickack(stream: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: the descriptor belongs to `stream`, which outlives the call; the option value
    // points to a live c_int and the length passed is its size.
    let _ = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Forwards vpcd frames (2-byte big-endian length, payload) from `from` to `to`, each as one
/// write; frames towards the card longer than one byte are recorded in `tap`.
fn pump(mut from: TcpStream, mut to: TcpStream, tap: Option<Arc<Tap>>) -> io::Result<()> {
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 2];
        rearm_quickack(&from);
        from.read_exact(&mut len)?;
        let n = usize::from(u16::from_be_bytes(len));
        frame.clear();
        frame.extend_from_slice(&len);
        frame.resize(2 + n, 0);
        rearm_quickack(&from);
        from.read_exact(&mut frame[2..])?;
        if let Some(tap) = &tap {
            if n > 1 {
                tap.record(&frame[2..]);
            }
        }
        to.write_all(&frame)?;
        // The payload may hold a PIN (VERIFY): do not keep it around.
        frame.iter_mut().for_each(|b| *b = 0);
    }
}

/// Listens on 127.0.0.1:0 for the card server and connects each of its connections on to
/// the vpcd driver at `vpcd`. Returns the listening port.
fn start_proxy(vpcd: String, tap: Arc<Tap>) -> R<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy bind: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("proxy address: {e}"))?
        .port();
    std::thread::spawn(move || {
        for card in listener.incoming() {
            let Ok(card) = card else { continue };
            let reader = match TcpStream::connect(&vpcd) {
                Ok(r) => r,
                Err(_) => {
                    // The card server retries; do not spin.
                    let _ = card.shutdown(Shutdown::Both);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let _ = card.set_nodelay(true);
            let _ = reader.set_nodelay(true);
            let (Ok(card2), Ok(reader2)) = (card.try_clone(), reader.try_clone()) else {
                continue;
            };
            let tap = Arc::clone(&tap);
            std::thread::spawn(move || {
                let (card3, reader3) = (card2.try_clone(), reader2.try_clone());
                let down = std::thread::spawn(move || {
                    let _ = pump(reader2, card2, Some(tap));
                });
                let _ = pump(card, reader, None);
                if let (Ok(c), Ok(r)) = (card3, reader3) {
                    let _ = c.shutdown(Shutdown::Both);
                    let _ = r.shutdown(Shutdown::Both);
                }
                let _ = down.join();
            });
        }
    });
    Ok(port)
}

/// The card server; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Modules through their function lists.

struct Module {
    name: &'static str,
    f: &'static CK_FUNCTION_LIST,
}

/// Calls a function-list entry; `?`-returns an error when the module lacks it.
macro_rules! ck {
    ($m:expr, $f:ident($($arg:expr),* $(,)?)) => {{
        let f = $m.f.$f.ok_or_else(|| {
            format!("{}: {} missing from the function list", $m.name, stringify!($f))
        })?;
        // SAFETY: every pointer argument points to a live local of the type and length the
        // PKCS#11 signature asks for (buffers with their true sizes), or is NULL where the
        // standard allows it.
        unsafe { f($($arg),*) }
    }};
}

fn rv_name(rv: CK_RV) -> String {
    let name = match rv {
        CKR_OK => "CKR_OK",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
        CKR_ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
        CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
        CKR_PIN_INCORRECT => "CKR_PIN_INCORRECT",
        CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_TOKEN_NOT_RECOGNIZED => "CKR_TOKEN_NOT_RECOGNIZED",
        CKR_USER_ALREADY_LOGGED_IN => "CKR_USER_ALREADY_LOGGED_IN",
        CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        CKR_CRYPTOKI_ALREADY_INITIALIZED => "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        _ => return format!("CKR {rv:#x}"),
    };
    name.to_string()
}

fn ok(rv: CK_RV, what: &str) -> R<()> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(format!("{what}: {}", rv_name(rv)))
    }
}

/// An attribute pointing at `value` (which must outlive the call using it).
fn attr<T>(ty: CK_ATTRIBUTE_TYPE, value: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: ty,
        pValue: (value as *const T).cast_mut().cast::<c_void>(),
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

/// An attribute pointing at the bytes `value`.
fn attr_bytes(ty: CK_ATTRIBUTE_TYPE, value: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: ty,
        pValue: value.as_ptr().cast_mut().cast::<c_void>(),
        ulValueLen: value.len() as CK_ULONG,
    }
}

fn trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_string()
}

impl Module {
    /// Loads a module and takes its function list. The library is never unloaded.
    fn load(name: &'static str, path: &std::path::Path) -> R<&'static Module> {
        // SAFETY: loading a PKCS#11 module runs its ELF initialisers, which have no
        // preconditions; the handle is leaked below, so the code stays mapped while any of its
        // functions may still run.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("{name}: load {}: {e}", path.display()))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        type GetFunctionList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;
        // SAFETY: C_GetFunctionList has this signature (PKCS#11 2.40 §5.2).
        let get = unsafe { lib.get::<GetFunctionList>(b"C_GetFunctionList\0") }
            .map_err(|e| format!("{name}: C_GetFunctionList: {e}"))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: `list` is a valid out-pointer.
        ok(unsafe { get(&mut list) }, "C_GetFunctionList")?;
        if list.is_null() {
            return Err(format!("{name}: C_GetFunctionList returned NULL"));
        }
        // SAFETY: the module hands out a pointer to its function list, which lives as long as
        // the (never unloaded) library.
        let f = unsafe { &*list };
        Ok(Box::leak(Box::new(Module { name, f })))
    }

    fn initialize(&self) -> R<()> {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        let rv = ck!(
            self,
            C_Initialize((&mut args as *mut CK_C_INITIALIZE_ARGS).cast::<c_void>())
        );
        ok(rv, "C_Initialize")
    }

    fn finalize(&self) -> R<()> {
        ok(ck!(self, C_Finalize(ptr::null_mut())), "C_Finalize")
    }

    /// The slot whose description starts with `reader` (else the first with a token).
    fn slot(&self, reader: &str) -> R<CK_SLOT_ID> {
        Ok(*self
            .card_slots(reader)?
            .first()
            .ok_or_else(|| "no slot with a token".to_string())?)
    }

    /// Every slot with a token whose description starts with `reader` (else the first slot
    /// with a token), in the module's order.
    fn card_slots(&self, reader: &str) -> R<Vec<CK_SLOT_ID>> {
        let mut n: CK_ULONG = 0;
        ok(
            ck!(self, C_GetSlotList(CK_TRUE, ptr::null_mut(), &mut n)),
            "C_GetSlotList",
        )?;
        let mut slots = vec![0 as CK_SLOT_ID; n as usize];
        ok(
            ck!(self, C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n)),
            "C_GetSlotList",
        )?;
        slots.truncate(n as usize);
        let mut mine = Vec::new();
        for &s in &slots {
            // SAFETY: CK_SLOT_INFO is plain data; all zero bytes is a valid value.
            let mut info: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
            ok(ck!(self, C_GetSlotInfo(s, &mut info)), "C_GetSlotInfo")?;
            if trimmed(&info.slotDescription).starts_with(reader) {
                mine.push(s);
            }
        }
        if mine.is_empty() {
            mine.extend(slots.first());
        }
        Ok(mine)
    }

    fn token_info(&self, slot: CK_SLOT_ID) -> R<CK_TOKEN_INFO> {
        // SAFETY: CK_TOKEN_INFO is plain data; all zero bytes is a valid value.
        let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
        ok(ck!(self, C_GetTokenInfo(slot, &mut info)), "C_GetTokenInfo")?;
        Ok(info)
    }

    fn open_session(&self, slot: CK_SLOT_ID) -> R<CK_SESSION_HANDLE> {
        let mut s: CK_SESSION_HANDLE = 0;
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        ok(
            ck!(
                self,
                C_OpenSession(slot, flags, ptr::null_mut(), None, &mut s)
            ),
            "C_OpenSession",
        )?;
        Ok(s)
    }

    fn close_session(&self, s: CK_SESSION_HANDLE) -> R<()> {
        ok(ck!(self, C_CloseSession(s)), "C_CloseSession")
    }

    fn login(&self, s: CK_SESSION_HANDLE) -> R<()> {
        let rv = ck!(
            self,
            C_Login(s, CKU_USER, PIN.as_ptr().cast_mut(), PIN.len() as CK_ULONG)
        );
        ok(rv, "C_Login")
    }

    fn logout(&self, s: CK_SESSION_HANDLE) -> R<()> {
        ok(ck!(self, C_Logout(s)), "C_Logout")
    }

    fn find(&self, s: CK_SESSION_HANDLE, template: &mut [CK_ATTRIBUTE]) -> R<Vec<CK_ULONG>> {
        let t = if template.is_empty() {
            ptr::null_mut()
        } else {
            template.as_mut_ptr()
        };
        ok(
            ck!(self, C_FindObjectsInit(s, t, template.len() as CK_ULONG)),
            "C_FindObjectsInit",
        )?;
        let mut found = Vec::new();
        let mut batch = [0 as CK_OBJECT_HANDLE; 64];
        loop {
            let mut n: CK_ULONG = 0;
            let rv = ck!(
                self,
                C_FindObjects(s, batch.as_mut_ptr(), batch.len() as CK_ULONG, &mut n)
            );
            if let Err(e) = ok(rv, "C_FindObjects") {
                let _ = ck!(self, C_FindObjectsFinal(s));
                return Err(e);
            }
            found.extend_from_slice(&batch[..n as usize]);
            if (n as usize) < batch.len() {
                break;
            }
        }
        ok(ck!(self, C_FindObjectsFinal(s)), "C_FindObjectsFinal")?;
        Ok(found)
    }

    /// Reads CKA_CLASS, CKA_ID and CKA_LABEL of `obj` (as a listing application does).
    fn describe(&self, s: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> R<(CK_ULONG, Vec<u8>)> {
        let mut class: CK_ULONG = CK_ULONG::MAX;
        let mut id = [0u8; 64];
        let mut label = [0u8; 256];
        let mut t = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: (&mut class as *mut CK_ULONG).cast::<c_void>(),
                ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
            },
            CK_ATTRIBUTE {
                type_: CKA_ID,
                pValue: id.as_mut_ptr().cast::<c_void>(),
                ulValueLen: id.len() as CK_ULONG,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: label.as_mut_ptr().cast::<c_void>(),
                ulValueLen: label.len() as CK_ULONG,
            },
        ];
        let rv = ck!(
            self,
            C_GetAttributeValue(s, obj, t.as_mut_ptr(), t.len() as CK_ULONG)
        );
        match rv {
            // Objects without a CKA_ID (e.g. CKO_PROFILE) answer TYPE_INVALID for it.
            CKR_OK | CKR_ATTRIBUTE_TYPE_INVALID | CKR_ATTRIBUTE_SENSITIVE => {}
            _ => return Err(format!("C_GetAttributeValue: {}", rv_name(rv))),
        }
        let id_len = t[1].ulValueLen;
        let id = if id_len == CK_UNAVAILABLE_INFORMATION {
            Vec::new()
        } else {
            id[..(id_len as usize).min(id.len())].to_vec()
        };
        Ok((class, id))
    }

    /// Every object of the session with its class, ID and label read.
    fn list_all(&self, s: CK_SESSION_HANDLE) -> R<Vec<(CK_ULONG, Vec<u8>)>> {
        let objects = self.find(s, &mut [])?;
        objects.iter().map(|&o| self.describe(s, o)).collect()
    }

    /// The object of `class` with CKA_ID `id`.
    fn object(&self, s: CK_SESSION_HANDLE, class: CK_ULONG, id: u8) -> R<CK_OBJECT_HANDLE> {
        let id = [id];
        let mut t = [attr(CKA_CLASS, &class), attr_bytes(CKA_ID, &id)];
        let found = self.find(s, &mut t)?;
        found
            .first()
            .copied()
            .ok_or_else(|| format!("no object of class {class:#x} with CKA_ID {:02x}", id[0]))
    }

    fn sign(
        &self,
        s: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        data: &[u8],
    ) -> R<Vec<u8>> {
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        ok(ck!(self, C_SignInit(s, &mut mech, key)), "C_SignInit")?;
        let mut out = vec![0u8; 1024];
        let mut len = out.len() as CK_ULONG;
        let rv = ck!(
            self,
            C_Sign(
                s,
                data.as_ptr().cast_mut(),
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len
            )
        );
        ok(rv, "C_Sign")?;
        out.truncate(len as usize);
        Ok(out)
    }

    fn attribute(
        &self,
        s: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
    ) -> R<Vec<u8>> {
        let mut t = [CK_ATTRIBUTE {
            type_: ty,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        ok(
            ck!(self, C_GetAttributeValue(s, obj, t.as_mut_ptr(), 1)),
            "C_GetAttributeValue (size)",
        )?;
        let mut buf = vec![0u8; t[0].ulValueLen as usize];
        t[0].pValue = buf.as_mut_ptr().cast::<c_void>();
        ok(
            ck!(self, C_GetAttributeValue(s, obj, t.as_mut_ptr(), 1)),
            "C_GetAttributeValue",
        )?;
        buf.truncate(t[0].ulValueLen as usize);
        Ok(buf)
    }
}

// ---------------------------------------------------------------------------------------------
// Populating the card (through our module).

/// Issues a certificate for `spki_der` signed by the host CA.
fn certificate(ca: &p256::ecdsa::SigningKey, spki_der: &[u8], id: u8) -> R<Vec<u8>> {
    use der::{Decode, Encode};
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    let spki = spki::SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(cert_err("spki"))?;
    let issuer =
        x509_cert::name::Name::from_str("CN=Tessera bench CA").map_err(cert_err("issuer"))?;
    let subject = x509_cert::name::Name::from_str(&format!("CN=Tessera bench key {id:02x}"))
        .map_err(cert_err("subject"))?;
    let profile = Profile::Leaf {
        issuer,
        enable_key_agreement: id == 3,
        enable_key_encipherment: false,
    };
    let validity = x509_cert::time::Validity::from_now(Duration::from_secs(86_400 * 365))
        .map_err(cert_err("validity"))?;
    let serial =
        x509_cert::serial_number::SerialNumber::new(&[0x10, id]).map_err(cert_err("serial"))?;
    let builder = CertificateBuilder::new(profile, serial, validity, subject, spki, ca)
        .map_err(cert_err("builder"))?;
    let cert = builder
        .build::<p256::ecdsa::DerSignature>()
        .map_err(cert_err("build"))?;
    cert.to_der().map_err(cert_err("der"))
}

fn cert_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("certificate {what}: {e}")
}

/// Generates a key pair with CKA_ID `id` (EC P-256, or RSA-2048 when `rsa`) and writes a
/// certificate for it.
fn generate_with_cert(
    m: &Module,
    s: CK_SESSION_HANDLE,
    ca: &p256::ecdsa::SigningKey,
    id: u8,
    rsa: bool,
) -> R<()> {
    let yes: CK_BBOOL = CK_TRUE;
    let ids = [id];
    let bits: CK_ULONG = 2048;
    let exponent = [1u8, 0, 1];
    let mut public = vec![attr(CKA_TOKEN, &yes), attr_bytes(CKA_ID, &ids)];
    let mechanism = if rsa {
        public.push(attr(CKA_MODULUS_BITS, &bits));
        public.push(attr_bytes(CKA_PUBLIC_EXPONENT, &exponent));
        CKM_RSA_PKCS_KEY_PAIR_GEN
    } else {
        public.push(attr_bytes(CKA_EC_PARAMS, &P256_PARAMS));
        CKM_EC_KEY_PAIR_GEN
    };
    let mut private = [
        attr(CKA_TOKEN, &yes),
        attr(CKA_PRIVATE, &yes),
        attr(CKA_SIGN, &yes),
        attr_bytes(CKA_ID, &ids),
    ];
    let mut mech = CK_MECHANISM {
        mechanism,
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    };
    let (mut public_key, mut private_key) = (0, 0);
    let rv = ck!(
        m,
        C_GenerateKeyPair(
            s,
            &mut mech,
            public.as_mut_ptr(),
            public.len() as CK_ULONG,
            private.as_mut_ptr(),
            private.len() as CK_ULONG,
            &mut public_key,
            &mut private_key,
        )
    );
    ok(rv, &format!("C_GenerateKeyPair (CKA_ID {id:02x})"))?;
    let spki = m.attribute(s, public_key, CKA_PUBLIC_KEY_INFO)?;
    let der = certificate(ca, &spki, id)?;
    let class: CK_ULONG = CKO_CERTIFICATE;
    let cert_type: CK_ULONG = CKC_X_509;
    let label = format!("bench certificate {id:02x}");
    let mut t = [
        attr(CKA_CLASS, &class),
        attr(CKA_CERTIFICATE_TYPE, &cert_type),
        attr(CKA_TOKEN, &yes),
        attr_bytes(CKA_ID, &ids),
        attr_bytes(CKA_LABEL, label.as_bytes()),
        attr_bytes(CKA_VALUE, &der),
    ];
    let mut cert = 0;
    let rv = ck!(
        m,
        C_CreateObject(s, t.as_mut_ptr(), t.len() as CK_ULONG, &mut cert)
    );
    ok(rv, &format!("C_CreateObject certificate (CKA_ID {id:02x})"))
}

/// Runs `f` in an initialised module with a logged-in RW session on the lab card.
fn with_user_session(
    m: &Module,
    reader: &str,
    f: impl FnOnce(CK_SESSION_HANDLE) -> R<()>,
) -> R<()> {
    m.initialize()?;
    let out = (|| {
        let slot = m.slot(reader)?;
        let s = m.open_session(slot)?;
        m.login(s)?;
        let r = f(s);
        let _ = m.logout(s);
        r
    })();
    let fin = m.finalize();
    out.and(fin)
}

// ---------------------------------------------------------------------------------------------
// Measuring.

struct Stats {
    times: Vec<Duration>,
    apdus: u64,
    /// APDU headers of the last round.
    trace: Vec<Header>,
    /// Extra facts (e.g. objects listed).
    note: String,
    /// Objects listed (class, CKA_ID), for the listing operations.
    objects: Vec<(CK_ULONG, Vec<u8>)>,
}

impl Stats {
    fn rounds(&self) -> usize {
        self.times.len()
    }
    fn pct(&self, p: usize) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        let i = (t.len() * p / 100).min(t.len().saturating_sub(1));
        t.get(i).copied().unwrap_or_default()
    }
    fn per_op(&self) -> f64 {
        self.apdus as f64 / self.rounds().max(1) as f64
    }
}

/// Runs `op` up to `rounds` times (fewer when slow), timing and counting each call;
/// `between` runs after each round, neither timed nor counted.
fn measure(
    tap: &Tap,
    rounds: usize,
    mut op: impl FnMut() -> R<()>,
    mut between: impl FnMut() -> R<()>,
) -> R<Stats> {
    let mut stats = Stats {
        times: Vec::with_capacity(rounds),
        apdus: 0,
        trace: Vec::new(),
        note: String::new(),
        objects: Vec::new(),
    };
    let started = Instant::now();
    for i in 0..rounds {
        let mark = tap.mark();
        let t0 = Instant::now();
        op()?;
        stats.times.push(t0.elapsed());
        stats.apdus += tap.apdus_since(mark);
        stats.trace = tap.headers_since(mark);
        between()?;
        if i + 1 >= MIN_ROUNDS && started.elapsed() > OP_TIME_BUDGET {
            break;
        }
    }
    Ok(stats)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ins_name(ins: u8) -> &'static str {
    match ins {
        0xA4 => "SELECT",
        0xCB => "GET DATA",
        0x20 => "VERIFY",
        0x87 => "GENERAL AUTHENTICATE",
        0xC0 => "GET RESPONSE",
        0xF8 => "GET SERIAL",
        0xFD => "GET VERSION",
        0xF7 => "GET METADATA",
        0x47 => "GENERATE ASYMMETRIC",
        0xDB => "PUT DATA",
        0x24 => "CHANGE REFERENCE DATA",
        0x2C => "RESET RETRY COUNTER",
        0xF6 => "MOVE KEY",
        0xFE => "IMPORT KEY",
        _ => "?",
    }
}

fn trace_text(trace: &[Header]) -> String {
    trace
        .iter()
        .map(|h| {
            let [cla, ins, p1, p2] = h.cla_ins_p1_p2;
            let tag = h.tag.map(|t| format!(" {t:X}")).unwrap_or_default();
            format!(
                "{cla:02X} {ins:02X} {p1:02X} {p2:02X} {}{tag}",
                ins_name(ins)
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn objects_text(objects: &[(CK_ULONG, Vec<u8>)]) -> String {
    objects
        .iter()
        .map(|(class, id)| {
            let class = match *class {
                CKO_DATA => "data".to_string(),
                CKO_CERTIFICATE => "cert".to_string(),
                CKO_PUBLIC_KEY => "pub".to_string(),
                CKO_PRIVATE_KEY => "priv".to_string(),
                CKO_PROFILE => "profile".to_string(),
                other => format!("{other:#x}"),
            };
            format!("{class} {}", hex::encode(id))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One printed result line.
struct Line {
    module: &'static str,
    op: &'static str,
    result: R<Stats>,
}

// ---------------------------------------------------------------------------------------------
// The operations.

/// C_GetTokenInfo, C_Login, ECDSA C_Sign, listing within one C_Initialize, on EC 9A.
fn bench_ec(m: &Module, reader: &str, tap: &Tap, rounds: usize, out: &mut Vec<Line>) {
    let push = |out: &mut Vec<Line>, op, result| {
        out.push(Line {
            module: m.name,
            op,
            result,
        })
    };
    if let Err(e) = m.initialize() {
        for op in [
            "C_GetTokenInfo",
            "C_Login",
            "C_Sign ECDSA P-256",
            "list objects (warm)",
            "C_OpenSession (card read)",
        ] {
            push(out, op, Err(e.clone()));
        }
        return;
    }
    let slot = m.slot(reader);
    let session = slot.clone().and_then(|slot| m.open_session(slot));

    // C_GetTokenInfo in steady state (the first call may read the card).
    let r = slot.clone().and_then(|slot| {
        m.token_info(slot)?;
        measure(tap, rounds, || m.token_info(slot).map(|_| ()), || Ok(()))
    });
    push(out, "C_GetTokenInfo", r);

    // C_Login (C_Logout between rounds, not counted).
    let r = session.clone().and_then(|s| {
        let _ = m.logout(s);
        measure(tap, rounds, || m.login(s), || m.logout(s))
    });
    push(out, "C_Login", r);

    // ECDSA P-256 over a 32-byte hash after login.
    let r = session.clone().and_then(|s| {
        m.login(s)?;
        let key = m.object(s, CKO_PRIVATE_KEY, 1)?;
        let hash = [0x5Au8; 32];
        let sig = m.sign(s, key, CKM_ECDSA, &hash)?;
        if sig.len() != 64 {
            return Err(format!("ECDSA signature of {} bytes", sig.len()));
        }
        let st = measure(
            tap,
            rounds,
            || m.sign(s, key, CKM_ECDSA, &hash).map(|_| ()),
            || Ok(()),
        );
        let _ = m.logout(s);
        st
    });
    push(out, "C_Sign ECDSA P-256", r);

    // Listing every object again in the same C_Initialize (after the first read).
    let r = session.clone().and_then(|s| {
        let objects = m.list_all(s)?;
        let mut st = measure(tap, rounds, || m.list_all(s).map(|_| ()), || Ok(()))?;
        st.note = format!("objects {}", objects.len());
        st.objects = objects;
        Ok(st)
    });
    push(out, "list objects (warm)", r);

    // A second session on a card this C_Initialize has read: what the change detector costs
    // (ours: one GET DATA of the card's change record proves the cached contents current, so
    // a change by another program is seen here; the first session stays open, so closing the
    // second one logs nothing out).
    let r = slot.and_then(|slot| {
        measure(
            tap,
            rounds,
            || m.open_session(slot).and_then(|s| m.close_session(s)),
            || Ok(()),
        )
    });
    push(out, "C_OpenSession (card read)", r);

    let _ = m.finalize();
}

/// C_Initialize, C_GetSlotList, C_OpenSession, find every object, read class/ID/label,
/// C_Finalize.
fn bench_init_to_list(m: &Module, reader: &str, tap: &Tap, rounds: usize) -> R<Stats> {
    let mut objects = Vec::new();
    let mut st = measure(
        tap,
        rounds,
        || {
            m.initialize()?;
            let r = (|| {
                objects.clear();
                for slot in m.card_slots(reader)? {
                    let s = m.open_session(slot)?;
                    objects.extend(m.list_all(s)?);
                }
                Ok(())
            })();
            let fin = m.finalize();
            r.and(fin)
        },
        || Ok(()),
    )?;
    st.note = format!("objects {}", objects.len());
    st.objects = objects;
    Ok(st)
}

/// RSA-2048 PKCS#1 v1.5 C_Sign over a SHA-256 DigestInfo after login (9A regenerated as RSA).
fn bench_rsa(m: &Module, reader: &str, tap: &Tap, rounds: usize) -> R<Stats> {
    m.initialize()?;
    let r = (|| {
        let slot = m.slot(reader)?;
        let s = m.open_session(slot)?;
        m.login(s)?;
        let key = m.object(s, CKO_PRIVATE_KEY, 1)?;
        let mut data = SHA256_DIGEST_INFO.to_vec();
        data.extend_from_slice(&[0xA5; 32]);
        let sig = m.sign(s, key, CKM_RSA_PKCS, &data)?;
        if sig.len() != 256 {
            return Err(format!("RSA signature of {} bytes", sig.len()));
        }
        let st = measure(
            tap,
            rounds,
            || m.sign(s, key, CKM_RSA_PKCS, &data).map(|_| ()),
            || Ok(()),
        );
        let _ = m.logout(s);
        st
    })();
    let fin = m.finalize();
    let st = r?;
    fin?;
    Ok(st)
}

/// Our module's budget for `op` (DESIGN.md "Performance rules"): the verdict text.
fn budget(op: &str, st: &Stats) -> Option<String> {
    let per_op = st.per_op();
    let (max, min, what) = match op {
        "C_GetTokenInfo" => (0.0, 0.0, "0 APDUs"),
        "C_Login" => (1.0, 0.0, "1 APDU"),
        "C_Sign ECDSA P-256" | "C_Sign RSA-2048" => (2.0, 1.0, "1-2 APDUs"),
        "list objects (warm)" => (
            2.0,
            0.0,
            "SELECT + identity; ours: 1, the change detector's GET DATA in C_FindObjectsInit",
        ),
        "C_OpenSession (card read)" => (
            1.0,
            0.0,
            "1 APDU: the change detector (GET DATA of the change record, 5FFF70)",
        ),
        "C_Initialize..list" => (
            2.0,
            0.0,
            "SELECT + identity after the first read; the in-process cache does not outlive \
             C_Finalize, DESIGN.md's persistent cache is 'later'",
        ),
        _ => return None,
    };
    Some(if per_op <= max && per_op >= min {
        format!("budget ok ({what})")
    } else {
        format!(
            "budget EXCEEDED: {per_op:.1} APDUs/op, budget {what}; last round: {}",
            trace_text(&st.trace)
        )
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench pkcs11: error: {e}");
        std::process::exit(1);
    }
}

fn run() -> R<()> {
    let (Ok(port), Ok(bin), Ok(_sock)) = (
        std::env::var("TESSERA_VPCD_PORT"),
        std::env::var("TESSERA_BIN"),
        std::env::var("PCSCLITE_CSOCK_NAME"),
    ) else {
        println!(
            "bench pkcs11 skipped (no lab: run pkg/scripts/pcsc-lab.sh up DIR, source DIR/env, \
             set TESSERA_BIN)"
        );
        return Ok(());
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(1);
    let show_trace = std::env::var("BENCH_TRACE").is_ok_and(|v| v == "1");
    let lab_reader = std::env::var("TESSERA_LAB_READER")
        .unwrap_or_else(|_| "Yubico YubiKey Virtual".to_string());
    let reader = format!("{lab_reader} 00 00");
    let ours_path = std::env::var_os("TESSERA_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/libtessera_pkcs11.so")
        });
    let opensc_path = std::env::var_os("OPENSC_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(OPENSC_DEFAULT));

    // The card, served through the counting proxy.
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let card_path = dir.path().join("bench.card");
    tessera::vcard::CardFile::create(&card_path, &tessera::vcard::CardState::factory(7_700_001))
        .map_err(|e| format!("card file: {e}"))?;
    wait_for_presence(&reader, false)?;
    let tap = Arc::new(Tap::default());
    let proxy_port = start_proxy(format!("127.0.0.1:{port}"), Arc::clone(&tap))?;
    let child = Command::new(&bin)
        .args(["vcard", "serve"])
        .arg(&card_path)
        .args(["--vpcd", &format!("127.0.0.1:{proxy_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {bin}: {e}"))?;
    let _server = Server(child);
    wait_for_card(&reader)?;

    let ours = Module::load("tessera", &ours_path)?;
    let opensc = Module::load("opensc", &opensc_path);
    let modules: Vec<&Module> = match &opensc {
        Ok(o) => vec![ours, o],
        Err(e) => {
            println!("bench pkcs11 opensc   not loaded: {e}");
            vec![ours]
        }
    };

    let ca = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let t0 = Instant::now();
    with_user_session(ours, &reader, |s| {
        for id in 1..=3 {
            generate_with_cert(ours, s, &ca, id, false)?;
        }
        Ok(())
    })
    .map_err(|e| format!("populating the card through our module: {e}"))?;
    let card_auth = format!("{reader} (card authentication)");
    with_user_session(ours, &card_auth, |s| {
        generate_with_cert(ours, s, &ca, 4, false)
    })
    .map_err(|e| format!("populating 9E through our card-authentication token: {e}"))?;
    println!(
        "bench pkcs11 card populated: EC P-256 + certificate in 9A 9C 9D 9E ({:.0} ms, {} APDUs so far)",
        ms(t0.elapsed()),
        tap.apdus.load(Ordering::SeqCst)
    );

    let mut lines = Vec::new();
    for m in &modules {
        bench_ec(m, &reader, &tap, rounds, &mut lines);
        let r = bench_init_to_list(m, &reader, &tap, rounds.min(20));
        lines.push(Line {
            module: m.name,
            op: "C_Initialize..list",
            result: r,
        });
    }

    let t0 = Instant::now();
    with_user_session(ours, &reader, |s| generate_with_cert(ours, s, &ca, 1, true))
        .map_err(|e| format!("regenerating 9A as RSA-2048 through our module: {e}"))?;
    println!(
        "bench pkcs11 9A regenerated as RSA-2048 + certificate ({:.0} ms)",
        ms(t0.elapsed())
    );
    for m in &modules {
        let r = bench_rsa(m, &reader, &tap, rounds);
        lines.push(Line {
            module: m.name,
            op: "C_Sign RSA-2048",
            result: r,
        });
    }

    // Report.
    println!();
    for l in &lines {
        match &l.result {
            Ok(st) => {
                let mut text = format!(
                    "bench pkcs11 {:<8} {:<20} median {:>8.3} ms p90 {:>8.3} ms apdus/op {:>5.1} rounds {}",
                    l.module,
                    l.op,
                    ms(st.pct(50)),
                    ms(st.pct(90)),
                    st.per_op(),
                    st.rounds()
                );
                if !st.note.is_empty() {
                    text.push_str(&format!("  ({})", st.note));
                }
                println!("{text}");
                if show_trace {
                    println!("    trace: {}", trace_text(&st.trace));
                    if !st.objects.is_empty() {
                        println!("    objects: {}", objects_text(&st.objects));
                    }
                }
            }
            Err(e) => println!("bench pkcs11 {:<8} {:<20} failed: {e}", l.module, l.op),
        }
    }

    println!();
    for l in lines.iter().filter(|l| l.module == ours.name) {
        let verdict = match &l.result {
            Ok(st) => budget(l.op, st).unwrap_or_else(|| "no budget".into()),
            Err(e) => format!("budget not measured: {e}"),
        };
        println!("bench pkcs11 {} {:<20} {verdict}", l.module, l.op);
    }

    println!();
    println!(
        "{:<20} | {:>14} {:>9} | {:>14} {:>9}",
        "operation", "tessera ms", "apdus", "opensc ms", "apdus"
    );
    println!("{}", "-".repeat(74));
    let mut ops: Vec<&str> = Vec::new();
    for l in &lines {
        if !ops.contains(&l.op) {
            ops.push(l.op);
        }
    }
    for op in ops {
        let cell = |module: &str| -> (String, String) {
            match lines.iter().find(|l| l.op == op && l.module == module) {
                Some(Line { result: Ok(st), .. }) => (
                    format!("{:.3}", ms(st.pct(50))),
                    format!("{:.1}", st.per_op()),
                ),
                Some(Line { result: Err(_), .. }) => ("failed".into(), "-".into()),
                None => ("-".into(), "-".into()),
            }
        };
        let (a, b) = (cell("tessera"), cell("opensc"));
        println!("{op:<20} | {:>14} {:>9} | {:>14} {:>9}", a.0, a.1, b.0, b.1);
    }
    println!("(median wall time per operation; APDUs per operation counted at the card)");
    Ok(())
}

/// Waits until pcscd reports a card in `reader`.
fn wait_for_card(reader: &str) -> R<()> {
    wait_for_presence(reader, true)
}

/// Waits until pcscd reports the reader with (`present`) or without a card. A card server that
/// just stopped stays "present" for a moment; starting ours before pcscd noticed would talk to
/// a card that is gone.
fn wait_for_presence(reader: &str, present: bool) -> R<()> {
    use tessera::card::pcsc;
    let ctx = pcsc::establish().map_err(|e| format!("pcsc: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let readers = pcsc::readers(&ctx).map_err(|e| format!("pcsc readers: {e}"))?;
        let now = readers
            .iter()
            .any(|r| r.card_present && r.name.starts_with(reader));
        if now == present {
            return Ok(());
        }
        if Instant::now() > deadline {
            let what = if present { "appeared in" } else { "left" };
            return Err(format!("no card {what} reader '{reader}' within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
