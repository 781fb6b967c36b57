//! `tessera doctor`: checks the system the way a help desk would — the PC/SC service, readers,
//! cards, the PKCS#11 module loading as browsers load it, which browser profiles know the
//! module, certificate expiry and factory credentials — one line per check with `ok`, `warn`
//! or `fail` and how to fix it. Exits non-zero only when a check fails.

use super::register::{self, Target};
use super::{fail, status, CardSession, ManagerError, Options, Result};
use crate::card::pcsc;
use cryptoki_sys::*;
use serde::Serialize;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// `tessera doctor`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Each line is ok, warn or fail, with how to fix it. Exit status 0 when nothing failed.
Examples:
  tessera doctor
  tessera doctor --vcard card.json --json
  tessera doctor --module target/release/libtessera_pkcs11.so"
)]
pub struct DoctorArgs {
    /// The PKCS#11 module to load (default: the installed one, else the one next to `tessera`).
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but should be looked at.
    Warn,
    /// Broken: the card cannot be used until fixed.
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked ("pcscd", "readers", "module", "firefox", "card 123 slot 9a", …).
    pub name: String,
    /// ok, warn or fail.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// How to fix it (warn/fail).
    pub fix: Option<String>,
}

fn check(name: impl Into<String>, level: Level, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        level,
        message: message.into(),
        fix: None,
    }
}

fn with_fix(mut c: Check, fix: impl Into<String>) -> Check {
    c.fix = Some(fix.into());
    c
}

// ---- PC/SC ------------------------------------------------------------------------------------

fn check_pcsc(have_virtual: bool, out: &mut Vec<Check>) {
    let ctx = match pcsc::establish() {
        Ok(c) => c,
        Err(e) => {
            let level = if have_virtual {
                Level::Warn
            } else {
                Level::Fail
            };
            out.push(with_fix(
                check("pcscd", level, format!("the PC/SC service is not reachable ({e})")),
                "install and start it: apt-get install pcscd; systemctl start pcscd.socket (or run `pcscd`)",
            ));
            return;
        }
    };
    out.push(check("pcscd", Level::Ok, "the PC/SC service answers"));
    match pcsc::readers(&ctx) {
        Ok(readers) if readers.is_empty() => out.push(with_fix(
            check("readers", Level::Warn, "no smart-card reader is connected"),
            "plug in the card reader or USB key (`pcsc_scan` shows what pcscd sees)",
        )),
        Ok(readers) => {
            let names: Vec<String> = readers
                .iter()
                .map(|r| {
                    format!(
                        "{} ({})",
                        r.name,
                        if r.card_present { "card" } else { "empty" }
                    )
                })
                .collect();
            out.push(check(
                "readers",
                Level::Ok,
                format!("{} reader(s): {}", readers.len(), names.join(", ")),
            ));
        }
        Err(e) => out.push(with_fix(
            check("readers", Level::Fail, format!("cannot list readers: {e}")),
            "restart pcscd",
        )),
    }
}

fn check_virtual(out: &mut Vec<Check>) {
    for p in crate::vcard::configured_paths() {
        if p.is_file() {
            match super::virtual_card_problem(&p) {
                None => out.push(check(
                    "virtual card",
                    Level::Ok,
                    format!("{} (TESSERA_VCARD / --vcard)", p.display()),
                )),
                Some(problem) => out.push(with_fix(
                    check("virtual card", Level::Fail, problem),
                    format!(
                        "restore {} from a backup, or make a new card with `tessera vcard init` (a new card has new keys)",
                        p.display()
                    ),
                )),
            }
        } else {
            out.push(with_fix(
                check(
                    "virtual card",
                    Level::Fail,
                    format!("{} does not exist", p.display()),
                ),
                format!("create it with `tessera vcard init {}`", p.display()),
            ));
        }
    }
}

/// A virtual card's file is its secure element (its management key can be recovered from it
/// and its PIN tried offline): warn when group or others may read or write it. Tessera writes
/// cards 0600, and a file of looser mode becomes 0600 on the card's next write.
fn check_virtual_card_mode(out: &mut Vec<Check>) {
    use std::os::unix::fs::PermissionsExt;
    for p in crate::vcard::configured_paths() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        let shown = p.display().to_string();
        let quoted = if shown
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c))
        {
            shown.clone()
        } else {
            format!("'{}'", shown.replace('\'', "'\\''"))
        };
        out.push(with_fix(
            check(
                "virtual card file",
                Level::Warn,
                format!(
                    "{shown} has mode {mode:03o}: other users can copy or change the card, recover its management key and try PINs offline"
                ),
            ),
            format!("chmod 600 {quoted}"),
        ));
    }
}

// ---- cards ------------------------------------------------------------------------------------

fn check_cards(opts: &Options, out: &mut Vec<Check>) {
    if let Err(e) = super::start(opts) {
        out.push(check(
            "cards",
            Level::Fail,
            format!("the card layer does not start: {e}"),
        ));
        return;
    }
    let cards = match super::cards() {
        Ok(c) => c,
        Err(e) => {
            out.push(check(
                "cards",
                Level::Fail,
                format!("cannot list cards: {e}"),
            ));
            return;
        }
    };
    if cards.is_empty() {
        let damaged_virtual = crate::vcard::configured_paths()
            .iter()
            .any(|p| p.is_file() && super::virtual_card_problem(p).is_some());
        let fix = if damaged_virtual {
            "the virtual card above cannot be used (see its check)"
        } else {
            "insert the card (chip up, fully in), or name a virtual card with --vcard FILE"
        };
        out.push(with_fix(check("cards", Level::Fail, "no card found"), fix));
        return;
    }
    out.push(check(
        "cards",
        Level::Ok,
        format!(
            "{} card(s): {}",
            cards.len(),
            cards
                .iter()
                .map(|c| format!("{} serial {} in {}", c.label, c.serial, c.reader))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    ));
    for c in cards {
        let handle = match super::with(|lib| lib.open_session(c.slot, CKF_SERIAL_SESSION)) {
            Ok(h) => h,
            Err(e) => {
                out.push(check(
                    format!("card {}", c.serial),
                    Level::Fail,
                    format!("cannot open a session: {e}"),
                ));
                continue;
            }
        };
        let session = CardSession {
            handle,
            slot: c.slot,
            label: c.label.clone(),
            lock: None,
        };
        match status::status(&session) {
            Ok(r) => card_checks(&c.serial, &r, out),
            Err(e) => out.push(check(
                format!("card {}", c.serial),
                Level::Fail,
                format!("cannot read the card: {e}"),
            )),
        }
    }
}

fn card_checks(serial: &str, r: &status::StatusReport, out: &mut Vec<Check>) {
    let name = format!("card {serial}");
    if r.slots.iter().all(|s| s.certificate.is_none()) {
        out.push(with_fix(
            check(name.clone(), Level::Warn, "no certificate on the card"),
            "load your e-Cert with `tessera import FILE.p12`",
        ));
    }
    for s in &r.slots {
        let Some(c) = &s.certificate else {
            continue;
        };
        let slot_name = if s.slot.starts_with('9') {
            format!("{name} slot {}", s.slot)
        } else {
            format!("{name} slot {} (key history)", s.slot)
        };
        let what = format!("{} valid until {}", c.subject, c.not_after);
        out.push(match c.state {
            "ok" => check(slot_name, Level::Ok, format!("{what} ({} days left)", c.days_left)),
            "warning" | "urgent" => with_fix(
                check(
                    slot_name,
                    Level::Warn,
                    format!("{what}: only {} days left", c.days_left),
                ),
                format!(
                    "renew at least a week before expiry: `tessera renew request --slot {}`",
                    s.slot
                ),
            ),
            "not-yet-valid" => with_fix(
                check(slot_name, Level::Warn, format!("{} is not valid before {}", c.subject, c.not_before)),
                "check the computer's clock",
            ),
            _ => with_fix(
                check(
                    slot_name,
                    if s.slot.starts_with('9') { Level::Fail } else { Level::Ok },
                    format!("{} expired on {}", c.subject, c.not_after),
                ),
                "load a renewed e-Cert (`tessera import FILE.p12`); an expired one cannot be renewed online",
            ),
        });
    }
    if let Some(p) = &r.pending_change {
        out.push(with_fix(
            check(
                format!("{name} change"),
                Level::Fail,
                format!("an interrupted change is not finished: {}", p.change),
            ),
            p.fix.clone(),
        ));
    }
    for p in &r.problems {
        out.push(with_fix(
            check(
                format!("{name} slot {}", p.slot),
                Level::Fail,
                p.problem.clone(),
            ),
            p.fix.clone(),
        ));
    }
    match r.pin.tries_left {
        Some(0) => out.push(with_fix(
            check(format!("{name} PIN"), Level::Fail, "the PIN is blocked"),
            "unblock it with the PUK: `tessera pin unblock`",
        )),
        Some(n) if r.pin.tries_total.is_some_and(|t| n < t) => out.push(with_fix(
            check(
                format!("{name} PIN"),
                Level::Warn,
                format!("{n} PIN tries left"),
            ),
            "the counter resets at the next correct PIN",
        )),
        _ => {}
    }
    if r.puk.tries_left == Some(0) {
        out.push(with_fix(
            check(format!("{name} PUK"), Level::Warn, "the PUK is blocked"),
            "a blocked PIN can then only be cured by resetting the card (its keys are lost)",
        ));
    }
    let mut factory = Vec::new();
    if r.pin.factory_default {
        factory.push("PIN 123456");
    }
    if r.puk.factory_default {
        factory.push("PUK 12345678");
    }
    if r.management_key_default {
        factory.push("the management key");
    }
    if factory.is_empty() {
        out.push(check(
            format!("{name} credentials"),
            Level::Ok,
            "PIN, PUK and management key are not the factory values",
        ));
    } else {
        out.push(with_fix(
            check(
                format!("{name} credentials"),
                Level::Warn,
                format!("factory values still set: {}", factory.join(", ")),
            ),
            "run `tessera setup` (new PIN and PUK, random PIN-protected management key)",
        ));
    }
}

// ---- the module, loaded as browsers load it ------------------------------------------------

/// What loading the module found.
#[derive(Debug, Clone)]
pub struct ModuleProbe {
    /// The library description and version from C_GetInfo.
    pub description: String,
    /// Slots (C_GetSlotList without and with tokenPresent).
    pub slots: (usize, usize),
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a pointer to a NUL-terminated string owned by libc that
    // stays valid until the next dl* call on this thread; it is copied at once.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: p is non-null and NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn rv_err<T>(what: &str, rv: CK_RV) -> Result<T> {
    fail(format!("{what} returned {rv:#x}"))
}

/// dlopen()s the module, then C_GetFunctionList, C_Initialize (OS locking, as NSS and p11-kit
/// ask), C_GetInfo, C_GetSlotList twice and C_Finalize — the calls every browser makes first.
/// The library stays loaded (unloading a Rust library with live thread-locals is not safe).
pub fn probe_module(path: &Path) -> Result<ModuleProbe> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the module path contains a NUL byte".into(),
    })?;
    // SAFETY: c_path is a valid NUL-terminated path. Loading runs the library's initialisers;
    // the Tessera module has none beyond Rust's own.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return fail(format!("dlopen failed: {}", dl_error()));
    }
    // SAFETY: handle is a live dlopen handle and the symbol name is NUL-terminated.
    let sym = unsafe { libc::dlsym(handle, c"C_GetFunctionList".as_ptr()) };
    if sym.is_null() {
        return fail("the library has no C_GetFunctionList: not a PKCS#11 module");
    }
    // SAFETY: C_GetFunctionList has exactly this signature in every PKCS#11 module
    // (CK_C_GetFunctionList); sym is non-null, so the transmuted Option is Some.
    let get_list: CK_C_GetFunctionList = unsafe { std::mem::transmute(sym) };
    let Some(get_list) = get_list else {
        return fail("C_GetFunctionList is NULL");
    };
    let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: get_list is the module's C_GetFunctionList; list is a valid out-pointer.
    let rv = unsafe { get_list(&mut list) };
    if rv != CKR_OK {
        return rv_err("C_GetFunctionList", rv);
    }
    if list.is_null() {
        return fail("C_GetFunctionList returned no function list");
    }
    // SAFETY: list is non-null and points to the module's static function list, which lives as
    // long as the library stays loaded (it is never unloaded).
    let functions = unsafe { &*list };
    let (Some(initialize), Some(finalize), Some(get_info), Some(get_slot_list)) = (
        functions.C_Initialize,
        functions.C_Finalize,
        functions.C_GetInfo,
        functions.C_GetSlotList,
    ) else {
        return fail("the function list lacks C_Initialize/C_Finalize/C_GetInfo/C_GetSlotList");
    };
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: std::ptr::null_mut(),
    };
    // SAFETY: args is a valid CK_C_INITIALIZE_ARGS that outlives the call.
    let rv = unsafe { initialize((&mut args as *mut CK_C_INITIALIZE_ARGS).cast()) };
    if rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED {
        return rv_err("C_Initialize", rv);
    }
    let result = (|| {
        // SAFETY: CK_INFO is plain data; all-zero is a valid value.
        let mut info: CK_INFO = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out-pointer for the call.
        let rv = unsafe { get_info(&mut info) };
        if rv != CKR_OK {
            return rv_err("C_GetInfo", rv);
        }
        let description = format!(
            "{} {}.{} (Cryptoki {}.{})",
            String::from_utf8_lossy(&info.libraryDescription).trim_end(),
            info.libraryVersion.major,
            info.libraryVersion.minor,
            info.cryptokiVersion.major,
            info.cryptokiVersion.minor
        );
        let mut counts = [0usize; 2];
        for (present, count) in [CK_FALSE, CK_TRUE].into_iter().zip(counts.iter_mut()) {
            let mut n: CK_ULONG = 0;
            // SAFETY: a NULL list asks for the count; n is a valid out-pointer.
            let rv = unsafe { get_slot_list(present, std::ptr::null_mut(), &mut n) };
            if rv != CKR_OK {
                return rv_err("C_GetSlotList", rv);
            }
            let mut ids: Vec<CK_SLOT_ID> = vec![0; n as usize];
            // SAFETY: ids has room for n slot IDs, as n says.
            let rv = unsafe { get_slot_list(present, ids.as_mut_ptr(), &mut n) };
            if rv != CKR_OK {
                return rv_err("C_GetSlotList", rv);
            }
            *count = n as usize;
        }
        let [all, present] = counts;
        Ok(ModuleProbe {
            description,
            slots: (all, present),
        })
    })();
    // SAFETY: the module was initialised above; C_Finalize takes NULL.
    let rv = unsafe { finalize(std::ptr::null_mut()) };
    let probe = result?;
    if rv != CKR_OK {
        return rv_err("C_Finalize", rv);
    }
    Ok(probe)
}

fn check_module(args: &DoctorArgs, out: &mut Vec<Check>) -> Option<PathBuf> {
    let path = match register::module_path(args.module.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            out.push(with_fix(
                check("module", Level::Fail, e.message),
                "install the Tessera package, or build it (`cargo build --release`) and pass --module PATH",
            ));
            return None;
        }
    };
    match probe_module(&path) {
        Ok(p) => out.push(check(
            "module",
            Level::Ok,
            format!(
                "{} loads and initialises: {}, {} slot(s), {} with a token{}",
                path.display(),
                p.description,
                p.slots.0,
                p.slots.1,
                if crate::token::config::card_auth_token() {
                    " (card-auth-token is on: each card is two tokens, main + card authentication)"
                } else {
                    " (one token per card)"
                }
            ),
        )),
        Err(e) => out.push(with_fix(
            check(
                "module",
                Level::Fail,
                format!(
                    "{} does not load as applications load it: {e}",
                    path.display()
                ),
            ),
            "reinstall the module; run with TESSERA_LOG=debug for details",
        )),
    }
    Some(path)
}

// ---- browsers and p11-kit -------------------------------------------------------------------

fn check_browsers(module: Option<&Path>, out: &mut Vec<Check>) {
    let mut seen = 0;
    for (target, name) in [
        (Target::Firefox, "firefox"),
        (Target::Thunderbird, "thunderbird"),
        (Target::Nss, "nss"),
    ] {
        for dir in register::profiles(target) {
            if !dir.join("pkcs11.txt").is_file() && !dir.join("cert9.db").is_file() {
                continue;
            }
            seen += 1;
            let label = format!("{name} {}", dir.display());
            let entries = register::tessera_entries(&dir);
            let register_cmd = format!(
                "`tessera register {name} --profile {}` (with the program closed)",
                dir.display()
            );
            let Some(entry) = entries.first() else {
                out.push(with_fix(
                    check(label, Level::Warn, "the Tessera module is not registered"),
                    register_cmd,
                ));
                continue;
            };
            let lib = Path::new(&entry.library);
            if !lib.is_file() {
                out.push(with_fix(
                    check(
                        label,
                        Level::Fail,
                        format!("registered module {} does not exist", entry.library),
                    ),
                    register_cmd,
                ));
            } else if module.is_some_and(|m| std::fs::canonicalize(lib).ok().as_deref() != Some(m))
            {
                out.push(with_fix(
                    check(
                        label,
                        Level::Warn,
                        format!(
                            "registered with {}, not the module checked above",
                            entry.library
                        ),
                    ),
                    register_cmd,
                ));
            } else {
                out.push(check(
                    label,
                    Level::Ok,
                    format!("registered ({})", entry.library),
                ));
            }
        }
    }
    if seen == 0 {
        out.push(with_fix(
            check(
                "browsers",
                Level::Warn,
                "no Firefox or Thunderbird profile and no ~/.pki/nssdb found",
            ),
            "start the browser once, then `tessera register firefox`",
        ));
    }
    // p11-kit module files: the system's, the user's, and the one the Debian package installs.
    let mut module_files: Vec<std::path::PathBuf> = [false, true]
        .into_iter()
        .filter_map(|user| register::p11kit_path(user).ok())
        .collect();
    module_files.push(Path::new(PACKAGED_P11KIT_FILE).to_path_buf());
    for p in module_files {
        if let Ok(text) = std::fs::read_to_string(&p) {
            let lib = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("module:"))
                .map(str::trim)
                .unwrap_or("");
            if Path::new(lib).is_file() {
                out.push(check(
                    "p11-kit",
                    Level::Ok,
                    format!("{} → {lib}", p.display()),
                ));
            } else {
                out.push(with_fix(
                    check(
                        "p11-kit",
                        Level::Warn,
                        format!("{} names a missing module {lib:?}", p.display()),
                    ),
                    "`tessera register p11-kit` again",
                ));
            }
        }
    }
}

/// The p11-kit module file the Debian package installs.
const PACKAGED_P11KIT_FILE: &str = "/usr/share/p11-kit/modules/tessera.module";

/// Enterprise policy files that can add the module to every Firefox/Thunderbird profile.
const POLICY_FILES: [(&str, &str); 2] = [
    ("firefox policy", "/etc/firefox/policies/policies.json"),
    (
        "thunderbird policy",
        "/etc/thunderbird/policies/policies.json",
    ),
];

/// Reports the enterprise policy files that name a Tessera security device.
fn check_policies(out: &mut Vec<Check>) {
    for (label, path) in POLICY_FILES {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            out.push(with_fix(
                check(label, Level::Warn, format!("{path} is not valid JSON")),
                "fix the file; the browser ignores every policy in it",
            ));
            continue;
        };
        let devices = json
            .pointer("/policies/SecurityDevices/Add")
            .and_then(|v| v.as_object());
        let named = devices.and_then(|d| {
            d.iter()
                .find(|(_, lib)| lib.as_str().is_some_and(|l| l.contains("tessera")))
        });
        if let Some((name, lib)) = named {
            let lib = lib.as_str().unwrap_or_default();
            if Path::new(lib).is_file() {
                out.push(check(
                    label,
                    Level::Ok,
                    format!("{path} adds \"{name}\" ({lib}) to every profile"),
                ));
            } else {
                out.push(with_fix(
                    check(
                        label,
                        Level::Warn,
                        format!("{path} adds {lib}, which does not exist"),
                    ),
                    "reinstall the tessera package or correct the path",
                ));
            }
        }
    }
}

/// Runs every check.
pub fn checks(opts: &Options, args: &DoctorArgs) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(v) = &opts.vcard {
        std::env::set_var(crate::vcard::ENV_VCARD, v);
    }
    let have_virtual = !crate::vcard::configured_paths().is_empty();
    check_pcsc(have_virtual, &mut out);
    check_virtual(&mut out);
    check_virtual_card_mode(&mut out);
    let module = check_module(args, &mut out);
    check_cards(opts, &mut out);
    check_browsers(module.as_deref(), &mut out);
    check_policies(&mut out);
    out
}

/// Plain-text report: `ok    name: message` and an indented `fix:` line.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<5} {}: {}\n",
            c.level.word(),
            c.name,
            c.message
        ));
        if let Some(f) = &c.fix {
            s.push_str(&format!("      fix: {f}\n"));
        }
    }
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    s.push_str(&format!(
        "{} check(s): {fails} failed, {warns} warning(s)\n",
        checks.len()
    ));
    s
}

/// Runs `tessera doctor`.
pub fn run(opts: &Options, args: &DoctorArgs) -> Result<()> {
    let all = checks(opts, args);
    if opts.json {
        let text = serde_json::to_string_pretty(&all).map_err(|e| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: e.to_string(),
        })?;
        println!("{text}");
    } else {
        print!("{}", render(&all));
    }
    let fails = all.iter().filter(|c| c.level == Level::Fail).count();
    if fails > 0 {
        return fail(format!("{fails} check(s) failed"));
    }
    Ok(())
}
