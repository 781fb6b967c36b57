//! `tessera register`: makes the PKCS#11 module known to the programs that should use it.
//!
//! - Firefox, Thunderbird and other NSS programs keep their modules in each profile's NSS
//!   database (`sql:` format: `cert9.db`, `key4.db`, `pkcs11.txt`). The module is added and
//!   removed with NSS's own `modutil` (Debian package `libnss3-tools`), exactly as the
//!   browser's "Security Devices" dialog would; what is registered is read from `pkcs11.txt`.
//!   A running browser holds its profile: close Firefox/Thunderbird first (Tessera refuses a
//!   profile whose lock says the browser is running, and reports modutil's own error otherwise).
//! - Chromium and other programs that use the shared NSS database use `~/.pki/nssdb` (target
//!   `nss`).
//! - GnuTLS, p11-kit-aware programs and `p11tool` find modules through p11-kit's module files:
//!   `/etc/pkcs11/modules/tessera.module` (as root) or
//!   `$XDG_CONFIG_HOME/pkcs11/modules/tessera.module` (a user, or `--user`).
//!
//! Every registration is idempotent: a second run answers "already registered".

use super::{fail, ManagerError, Options, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The name the module gets in NSS databases.
pub const MODULE_NAME: &str = "Tessera PIV";
/// The module's file name.
pub const MODULE_FILE: &str = "libtessera_pkcs11.so";
/// p11-kit module file name.
pub const P11KIT_FILE: &str = "tessera.module";

/// Where the module is registered.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Firefox profiles (~/.mozilla/firefox, and the snap's).
    Firefox,
    /// Thunderbird profiles (~/.thunderbird).
    Thunderbird,
    /// An NSS database directory, or the shared one (~/.pki/nssdb, used by Chromium).
    Nss,
    /// p11-kit's module configuration (GnuTLS, p11tool, …).
    #[value(name = "p11-kit")]
    P11Kit,
}

/// `tessera register`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  tessera register firefox                        every Firefox profile (close Firefox first)
  tessera register firefox --profile ~/.mozilla/firefox/abcd.default-esr
  tessera register nss --profile /tmp/db          any NSS database (certutil -d sql:/tmp/db)
  tessera register thunderbird --remove           unregister from every Thunderbird profile
  tessera register p11-kit                        /etc/pkcs11/modules/tessera.module (root)

NSS registrations need modutil (Debian: apt-get install libnss3-tools).")]
pub struct RegisterArgs {
    /// What to register with.
    #[arg(value_enum)]
    pub target: Target,
    /// A profile / NSS database directory, or `all` for every profile found.
    #[arg(long, value_name = "DIR|all", default_value = "all")]
    pub profile: String,
    /// Remove the module instead of adding it.
    #[arg(long)]
    pub remove: bool,
    /// The module to register (default: the installed one, else the one next to `tessera`).
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// p11-kit: write the per-user module file even as root.
    #[arg(long)]
    pub user: bool,
}

/// What was done to one database or file.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    /// firefox, thunderbird, nss or p11-kit.
    pub target: Target,
    /// The NSS database directory or the p11-kit module file.
    pub location: PathBuf,
    /// added, updated, already registered, removed, not registered, failed.
    pub action: String,
    /// The module path.
    pub module: Option<PathBuf>,
    /// Details (why it failed and how to fix it).
    pub message: Option<String>,
}

impl Registration {
    fn ok(&self) -> bool {
        self.action != "failed"
    }
}

/// The multiarch triplet of this build ("x86_64-linux-gnu").
pub fn multiarch() -> String {
    format!("{}-{}-gnu", std::env::consts::ARCH, std::env::consts::OS)
}

/// Where a Debian package installs the module.
pub fn installed_module() -> PathBuf {
    PathBuf::from(format!("/usr/lib/{}/pkcs11/{MODULE_FILE}", multiarch()))
}

/// Candidate module paths, best first: the installed one, then the one beside the running
/// binary (target/release/libtessera_pkcs11.so when run from the build tree).
pub fn module_candidates() -> Vec<PathBuf> {
    let mut out = vec![installed_module()];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(MODULE_FILE));
        // cargo puts test binaries in target/*/deps
        if dir.ends_with("deps") {
            if let Some(up) = dir.parent() {
                out.push(up.join(MODULE_FILE));
            }
        }
    }
    out
}

/// The module to register: `explicit` if given (it must exist), else the first candidate that
/// exists. Always an absolute path.
pub fn module_path(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => {
            if !p.is_file() {
                return fail(format!("module {} does not exist", p.display()));
            }
            p.to_path_buf()
        }
        None => match module_candidates().into_iter().find(|p| p.is_file()) {
            Some(p) => p,
            None => {
                return fail(format!(
                    "no {MODULE_FILE} found (looked in {}); build it with `cargo build --release` or name it with --module PATH",
                    module_candidates()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        },
    };
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Profile directories listed in a Mozilla `profiles.ini` (`Path=`, relative or absolute).
fn profiles_ini(base: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(base.join("profiles.ini")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut relative = true;
    let mut path: Option<String> = None;
    let mut flush = |relative: bool, path: &mut Option<String>| {
        if let Some(p) = path.take() {
            out.push(if relative {
                base.join(p)
            } else {
                PathBuf::from(p)
            });
        }
    };
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(relative, &mut path);
            relative = true;
        } else if let Some(v) = line.strip_prefix("Path=") {
            path = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("IsRelative=") {
            relative = v.trim() != "0";
        }
    }
    flush(relative, &mut path);
    out
}

/// Profile directories of a Mozilla program under `base`: every entry of `profiles.ini` that
/// exists, and every sub-directory holding an NSS database (cert9.db).
fn mozilla_profiles(base: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = profiles_ini(base)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if let Ok(dir) = std::fs::read_dir(base) {
        for e in dir.flatten() {
            let p = e.path();
            if p.join("cert9.db").is_file() {
                found.push(p);
            }
        }
    }
    let mut canonical: Vec<PathBuf> = found
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .collect();
    canonical.sort();
    canonical.dedup();
    canonical
}

/// The NSS databases of `target` on this machine (for `--profile all`).
pub fn profiles(target: Target) -> Vec<PathBuf> {
    let Some(home) = home() else {
        return Vec::new();
    };
    match target {
        Target::Firefox => {
            let mut v = mozilla_profiles(&home.join(".mozilla/firefox"));
            v.extend(mozilla_profiles(
                &home.join("snap/firefox/common/.mozilla/firefox"),
            ));
            v
        }
        Target::Thunderbird => {
            let mut v = mozilla_profiles(&home.join(".thunderbird"));
            v.extend(mozilla_profiles(
                &home.join("snap/thunderbird/common/.thunderbird"),
            ));
            v
        }
        Target::Nss => vec![home.join(".pki/nssdb")],
        Target::P11Kit => Vec::new(),
    }
}

/// One module entry of an NSS database's `pkcs11.txt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NssModule {
    /// `name=`.
    pub name: String,
    /// `library=` (empty for NSS's internal module).
    pub library: String,
}

/// The modules listed in `DIR/pkcs11.txt` (`None` when the file is missing).
pub fn nss_modules(dir: &Path) -> Option<Vec<NssModule>> {
    let text = std::fs::read_to_string(dir.join("pkcs11.txt")).ok()?;
    let mut out = Vec::new();
    let mut library: Option<String> = None;
    let mut name: Option<String> = None;
    let mut flush = |library: &mut Option<String>, name: &mut Option<String>| {
        if library.is_some() || name.is_some() {
            out.push(NssModule {
                name: name.take().unwrap_or_default(),
                library: library.take().unwrap_or_default(),
            });
        }
    };
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            flush(&mut library, &mut name);
        } else if let Some(v) = line.strip_prefix("library=") {
            library = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("name=") {
            name = Some(v.to_owned());
        }
    }
    flush(&mut library, &mut name);
    Some(out)
}

/// The Tessera module entries of a database: by name, or by a library named like ours.
pub fn tessera_entries(dir: &Path) -> Vec<NssModule> {
    nss_modules(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.name == MODULE_NAME || m.library.ends_with(MODULE_FILE))
        .collect()
}

/// The process that holds a Mozilla profile, if it runs: Firefox and Thunderbird leave a
/// `lock` symlink pointing at "IP:+PID" while they run.
pub fn profile_locked_by(dir: &Path) -> Option<u32> {
    let target = std::fs::read_link(dir.join("lock")).ok()?;
    let text = target.to_string_lossy().into_owned();
    let pid: u32 = text.rsplit(['+', ':']).next()?.parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn modutil(args: &[&std::ffi::OsStr]) -> Result<std::process::Output> {
    Command::new("modutil").args(args).output().map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::NotFound {
            "modutil is not installed: install NSS's tools (Debian/Ubuntu: apt-get install libnss3-tools)".to_owned()
        } else {
            format!("cannot run modutil: {e}")
        };
        ManagerError { class: crate::manager::ErrorClass::Refused, message }
    })
}

/// `modutil -dbdir DB -delete NAME -force`.
fn delete_module(db: &std::ffi::OsStr, name: &str) -> Result<std::process::Output> {
    modutil(&[
        "-dbdir".as_ref(),
        db,
        "-delete".as_ref(),
        name.as_ref(),
        "-force".as_ref(),
    ])
}

fn output_text(out: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if text.is_empty() {
        text = stdout.trim().to_owned();
    }
    text.replace('\n', " ")
}

fn sql_dir(dir: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from("sql:");
    s.push(dir.as_os_str());
    s
}

/// Adds (or with `remove`, removes) the module in one NSS database directory.
pub fn register_nss(target: Target, dir: &Path, module: &Path, remove: bool) -> Registration {
    let mut r = Registration {
        target,
        location: dir.to_path_buf(),
        action: String::new(),
        module: Some(module.to_path_buf()),
        message: None,
    };
    match register_nss_inner(dir, module, remove) {
        Ok(action) => r.action = action.to_owned(),
        Err(e) => {
            r.action = "failed".into();
            r.message = Some(e.message);
        }
    }
    r
}

fn register_nss_inner(dir: &Path, module: &Path, remove: bool) -> Result<&'static str> {
    if !dir.is_dir() {
        return fail(format!(
            "{} is not a directory (create an NSS database with `certutil -N --empty-password -d sql:{}`)",
            dir.display(),
            dir.display()
        ));
    }
    if let Some(pid) = profile_locked_by(dir) {
        return fail(format!(
            "the profile is in use by a running browser or mail client (process {pid}): close it and run this again"
        ));
    }
    let existing = tessera_entries(dir);
    let db = sql_dir(dir);
    let module_str = module.as_os_str();
    if remove {
        if existing.is_empty() {
            return Ok("not registered");
        }
        for m in &existing {
            let out = delete_module(&db, &m.name)?;
            if !out.status.success() {
                return fail(format!(
                    "modutil could not remove {:?}: {} (close Firefox/Thunderbird if they use this profile)",
                    m.name,
                    output_text(&out)
                ));
            }
        }
        return Ok("removed");
    }
    let wanted = module.to_string_lossy();
    if existing
        .iter()
        .any(|m| m.name == MODULE_NAME && m.library == wanted)
    {
        return Ok("already registered");
    }
    // A Tessera entry with another library (an older build, a moved install) is replaced.
    for m in existing.iter().filter(|m| m.name == MODULE_NAME) {
        let out = delete_module(&db, &m.name)?;
        if !out.status.success() {
            return fail(format!(
                "modutil could not replace the old registration ({}): {}",
                m.library,
                output_text(&out)
            ));
        }
    }
    let out = modutil(&[
        "-dbdir".as_ref(),
        &db,
        "-add".as_ref(),
        MODULE_NAME.as_ref(),
        "-libfile".as_ref(),
        module_str,
        "-force".as_ref(),
    ])?;
    if !out.status.success() {
        return fail(format!(
            "modutil could not add the module: {} (close Firefox/Thunderbird if they use this profile; the database must be in sql: format)",
            output_text(&out)
        ));
    }
    let now = tessera_entries(dir);
    if !now.iter().any(|m| m.library == wanted) {
        return fail(format!(
            "modutil reported success but {} does not list the module",
            dir.join("pkcs11.txt").display()
        ));
    }
    Ok(if existing.is_empty() {
        "added"
    } else {
        "updated"
    })
}

/// Where the p11-kit module file goes: system-wide as root (unless `user`), else per user.
pub fn p11kit_path(user: bool) -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && !user {
        return Ok(PathBuf::from("/etc/pkcs11/modules").join(P11KIT_FILE));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home().map(|h| h.join(".config")));
    match base {
        Some(b) => Ok(b.join("pkcs11/modules").join(P11KIT_FILE)),
        None => fail("neither XDG_CONFIG_HOME nor HOME is set"),
    }
}

/// The p11-kit module file's text.
pub fn p11kit_text(module: &Path) -> String {
    format!(
        "# Tessera PIV smart-card middleware, written by `tessera register p11-kit`.\n# Remove with `tessera register p11-kit --remove`.\nmodule: {}\n",
        module.display()
    )
}

/// Writes (or removes) the p11-kit module file.
pub fn register_p11kit(path: &Path, module: Option<&Path>, remove: bool) -> Result<Registration> {
    let mut r = Registration {
        target: Target::P11Kit,
        location: path.to_path_buf(),
        action: String::new(),
        module: module.map(Path::to_path_buf),
        message: None,
    };
    if remove {
        r.action = match std::fs::remove_file(path) {
            Ok(()) => "removed".into(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "not registered".into(),
            Err(e) => return fail(format!("cannot remove {}: {e}", path.display())),
        };
        return Ok(r);
    }
    let Some(module) = module else {
        return fail("no module to register");
    };
    let text = p11kit_text(module);
    let old = std::fs::read_to_string(path).ok();
    if old.as_deref() == Some(text.as_str()) {
        r.action = "already registered".into();
        return Ok(r);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: format!("cannot create {}: {e}", dir.display()),
        })?;
    }
    let tmp = path.with_extension("module.tmp");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: format!(
                "cannot write {}: {e} (system-wide needs root; use --user for your own)",
                path.display()
            ),
        })?;
    r.action = if old.is_some() { "updated" } else { "added" }.into();
    Ok(r)
}

fn shared_nssdb_create(dir: &Path) -> Result<()> {
    if dir.join("cert9.db").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let out = Command::new("certutil")
        .arg("-N")
        .arg("--empty-password")
        .arg("-d")
        .arg(sql_dir(dir))
        .output()
        .map_err(|e| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: format!("cannot run certutil (apt-get install libnss3-tools): {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        fail(format!(
            "certutil could not create {}: {}",
            dir.display(),
            output_text(&out)
        ))
    }
}

/// Registers as `args` say and returns what was done for each database or file.
pub fn register(args: &RegisterArgs) -> Result<Vec<Registration>> {
    if args.target == Target::P11Kit {
        let module = if args.remove {
            None
        } else {
            Some(module_path(args.module.as_deref())?)
        };
        return Ok(vec![register_p11kit(
            &p11kit_path(args.user)?,
            module.as_deref(),
            args.remove,
        )?]);
    }
    let module = match module_path(args.module.as_deref()) {
        Ok(m) => m,
        // Removal works without a module file (entries are found by name).
        Err(_) if args.remove => args
            .module
            .clone()
            .unwrap_or_else(|| PathBuf::from(MODULE_FILE)),
        Err(e) => return Err(e),
    };
    let dirs: Vec<PathBuf> = if args.profile == "all" {
        let found = profiles(args.target);
        if args.target == Target::Nss && !args.remove {
            for d in &found {
                shared_nssdb_create(d)?;
            }
        }
        let found: Vec<PathBuf> = found.into_iter().filter(|d| d.is_dir()).collect();
        if found.is_empty() {
            return fail(match args.target {
                Target::Firefox => "no Firefox profile found in ~/.mozilla/firefox: start Firefox once, or name a profile with --profile DIR",
                Target::Thunderbird => "no Thunderbird profile found in ~/.thunderbird: start Thunderbird once, or name a profile with --profile DIR",
                _ => "no NSS database found: name one with --profile DIR",
            });
        }
        found
    } else {
        let raw = args.profile.strip_prefix("sql:").unwrap_or(&args.profile);
        vec![std::fs::canonicalize(raw).unwrap_or_else(|_| PathBuf::from(raw))]
    };
    Ok(dirs
        .iter()
        .map(|d| register_nss(args.target, d, &module, args.remove))
        .collect())
}

/// Runs `tessera register`.
pub fn run(opts: &Options, args: &RegisterArgs) -> Result<()> {
    let done = register(args)?;
    if opts.json {
        let text = serde_json::to_string_pretty(&done).map_err(|e| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: e.to_string(),
        })?;
        println!("{text}");
    } else {
        for r in &done {
            let module = r
                .module
                .as_ref()
                .map(|m| format!(" ({})", m.display()))
                .unwrap_or_default();
            match &r.message {
                Some(m) => println!("{}: {}: {m}", r.location.display(), r.action),
                None => println!("{}: {}{module}", r.location.display(), r.action),
            }
        }
        if !args.remove
            && done
                .iter()
                .any(|r| r.action == "added" || r.action == "updated")
        {
            if args.target == Target::P11Kit {
                println!("p11-kit programs (GnuTLS, p11tool) now load the module");
            } else {
                println!("restart the browser or mail client to use the card");
            }
        }
    }
    let failed = done.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        return fail(format!("{failed} of {} registrations failed", done.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pkcs11_txt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pkcs11.txt"),
            "library=\nname=NSS Internal PKCS #11 Module\nparameters=x\n\nlibrary=/a/libtessera_pkcs11.so\nname=Tessera PIV\nNSS=trustOrder=100\n\n",
        )
        .unwrap();
        let all = nss_modules(dir.path()).unwrap();
        assert_eq!(all.len(), 2);
        let ours = tessera_entries(dir.path());
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].library, "/a/libtessera_pkcs11.so");
    }

    #[test]
    fn parses_profiles_ini() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("profiles.ini"),
            "[General]\nStartWithLastProfile=1\n\n[Profile0]\nName=default\nIsRelative=1\nPath=abc.default\n\n[Profile1]\nIsRelative=0\nPath=/elsewhere/p\n",
        )
        .unwrap();
        let p = profiles_ini(dir.path());
        assert_eq!(
            p,
            vec![
                dir.path().join("abc.default"),
                PathBuf::from("/elsewhere/p")
            ]
        );
    }

    #[test]
    fn p11kit_file_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modules/tessera.module");
        let m = Path::new("/x/libtessera_pkcs11.so");
        assert_eq!(
            register_p11kit(&path, Some(m), false).unwrap().action,
            "added"
        );
        assert_eq!(
            register_p11kit(&path, Some(m), false).unwrap().action,
            "already registered"
        );
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("module: /x/libtessera_pkcs11.so"));
        assert_eq!(
            register_p11kit(&path, None, true).unwrap().action,
            "removed"
        );
        assert_eq!(
            register_p11kit(&path, None, true).unwrap().action,
            "not registered"
        );
    }
}
