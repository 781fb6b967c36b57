//! One change per card at a time across this machine's programs: a command that changes a card
//! holds an exclusive lock on a file named after the card for its whole run (login, change and
//! the check that follows), so two `tessera import` on one card run one after the other and
//! each one's "ok" is about its own change. The card-level guarantee (each change in one
//! transaction, recorded on the card) does not depend on this lock; the lock adds the order,
//! the "waiting" notice and the bounded wait. A killed holder releases it with its process.

use super::{ManagerError, Result};
use crate::token::Location;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a waiting command says after a second.
pub const WAITING: &str = "waiting for the card: another program is using it";

/// The held lock (released when dropped).
#[derive(Debug)]
pub struct ChangeLock {
    _file: File,
}

/// The lock file of a card source: beside a virtual card's file; for a reader, in the user's
/// runtime directory (`$XDG_RUNTIME_DIR/tessera`, else a private directory under /tmp).
pub fn lock_path(source: &Location) -> Result<PathBuf> {
    match source {
        Location::File(path) => {
            let mut name = path.clone().into_os_string();
            name.push(".change");
            Ok(PathBuf::from(name))
        }
        Location::Reader(reader) => {
            let dir = private_dir()?;
            let safe: String = reader
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            Ok(dir.join(format!("reader-{safe}.lock")))
        }
    }
}

/// A directory only this user can write: `$XDG_RUNTIME_DIR/tessera`, else
/// `/tmp/tessera-UID` (created 0700, refused when someone else owns it).
fn private_dir() -> Result<PathBuf> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("tessera"),
        None => std::env::temp_dir().join(format!("tessera-{uid}")),
    };
    if let Err(e) = std::fs::create_dir(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(io_error(&dir, e));
        }
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| io_error(&dir, e))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: format!(
                "{} is not a directory of yours: remove it (it keeps the card locks)",
                dir.display()
            ),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(&dir, e))?;
    }
    Ok(dir)
}

fn io_error(path: &Path, e: std::io::Error) -> ManagerError {
    ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("cannot use the card lock {}: {e}", path.display()),
    }
}

/// Takes the card's change lock, waiting at most `wait`; says [`WAITING`] (through `notice`)
/// once the wait passes a second. Gives up with a message saying nothing was changed.
pub fn acquire(source: &Location, wait: Duration, notice: &dyn Fn(&str)) -> Result<ChangeLock> {
    let path = lock_path(source)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(ChangeLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path, e)),
        }
        let waited = start.elapsed();
        if !told && waited >= Duration::from_secs(1) {
            notice(WAITING);
            told = true;
        }
        if waited >= wait {
            return Err(ManagerError {
                class: crate::manager::ErrorClass::Refused,
                message: format!(
                    "the card is still in use by another program after {} s: nothing was changed; try again when it has finished (or wait longer with --wait SECONDS)",
                    wait.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_second_holder_waits_says_so_and_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let source = Location::File(dir.path().join("card.json"));
        let first = acquire(&source, Duration::from_secs(1), &|_| {}).unwrap();
        let said = Cell::new(0);
        let start = Instant::now();
        let second = acquire(&source, Duration::from_millis(1500), &|m| {
            assert_eq!(m, WAITING);
            said.set(said.get() + 1);
        });
        assert!(second.is_err());
        assert!(second.unwrap_err().message.contains("nothing was changed"));
        assert!(start.elapsed() >= Duration::from_millis(1500));
        assert_eq!(said.get(), 1, "said once");
        drop(first);
        acquire(&source, Duration::from_secs(1), &|_| {}).unwrap();
        let mode = std::fs::metadata(lock_path(&source).unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
