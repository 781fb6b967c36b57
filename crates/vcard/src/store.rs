//! The virtual card's state file: one JSON document, replaced atomically (write a temporary file
//! in the same directory, fsync, rename, fsync the directory) while an exclusive lock is held on
//! a sidecar `FILE.lock`. Two processes using one card therefore never lose an update, and a
//! crash mid-write leaves either the old or the new card, never a torn one.
//! The file is the card's secure element: the card file, its temporary copies and the lock are
//! created 0600 (a file of looser mode becomes 0600 on its next write), a temporary file has a
//! random name, is created exclusively and is removed on every failure, and one left by a
//! killed writer is removed by the next writer. This module knows files and locks, not PIV.

use super::state::CardState;
use crate::card::CardError;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Mode of the card file, its temporary copies and its lock: the owner's only.
pub const FILE_MODE: u32 = 0o600;
/// Largest card file read (a full card is well under 1 MiB).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// A temporary file this old is stale even if a process with its writer's id is running.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Identity of the file version we last parsed: a rename gives a new inode on every write.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Version {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// A card state file with an in-process cache of its last parsed version.
pub struct CardFile {
    path: PathBuf,
    lock_path: PathBuf,
    cached: Option<(Version, CardState)>,
    /// The lock held across a transaction, if one is open.
    held: Option<File>,
}

fn state_err(what: &str, path: &Path, e: impl std::fmt::Display) -> CardError {
    CardError::State(format!("{what} {}: {e}", path.display()))
}

impl CardFile {
    /// Opens an existing card file (fails when it does not exist or does not parse).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, CardError> {
        let path = path.into();
        let mut f = Self::at(path);
        f.read(|_| ((), false))?;
        if let Ok(meta) = fs::metadata(&f.path) {
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                // Kept working (earlier versions wrote 0644); the next write makes it 0600.
                log::warn!(
                    "virtual card {} has mode {mode:03o}: other users can copy it; it becomes 0600 on its next write (or run chmod 600)",
                    f.path.display()
                );
            }
        }
        Ok(f)
    }

    /// Creates a new card file holding `state`; refuses to overwrite an existing one.
    pub fn create(path: impl Into<PathBuf>, state: &CardState) -> Result<Self, CardError> {
        let path = path.into();
        let f = Self::at(path);
        let _lock = f.lock()?;
        if f.path.exists() {
            return Err(state_err("refusing to overwrite", &f.path, "file exists"));
        }
        write_atomically(&f.path, state)?;
        Ok(f)
    }

    fn at(path: PathBuf) -> Self {
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        Self {
            path,
            lock_path: PathBuf::from(lock),
            cached: None,
            held: None,
        }
    }

    /// Holds the lock until [`CardFile::release`]: a transaction that no other process can
    /// interleave with (the in-process equivalent of SCardBeginTransaction).
    pub fn hold(&mut self) -> Result<(), CardError> {
        if self.held.is_none() {
            self.held = Some(self.lock()?);
        }
        Ok(())
    }

    /// Ends [`CardFile::hold`].
    pub fn release(&mut self) {
        self.held = None;
    }

    /// Where the card lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<File, CardError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&self.lock_path)
            .map_err(|e| state_err("cannot open lock", &self.lock_path, e))?;
        tighten(&f);
        f.lock()
            .map_err(|e| state_err("cannot lock", &self.lock_path, e))?;
        Ok(f)
    }

    fn current(&mut self) -> Result<&mut CardState, CardError> {
        let meta = fs::metadata(&self.path).map_err(|e| state_err("cannot read", &self.path, e))?;
        let version = Version {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        let fresh = matches!(&self.cached, Some((v, _)) if *v == version);
        if !fresh {
            let bytes = read_bounded(&self.path)?;
            let state = CardState::from_json(&bytes)
                .map_err(|e| state_err("corrupt card file", &self.path, e))?;
            self.cached = Some((version, state));
        }
        match &mut self.cached {
            Some((_, state)) => Ok(state),
            None => Err(state_err("cannot read", &self.path, "no state")),
        }
    }

    /// Runs `f` on the current state under the lock; when `f` reports a change (second tuple
    /// element), the new state is written before the lock is released.
    pub fn read<R>(&mut self, f: impl FnOnce(&mut CardState) -> (R, bool)) -> Result<R, CardError> {
        let lock = if self.held.is_some() {
            None
        } else {
            Some(self.lock()?)
        };
        let result = self.update_locked(f);
        drop(lock);
        result
    }

    fn update_locked<R>(
        &mut self,
        f: impl FnOnce(&mut CardState) -> (R, bool),
    ) -> Result<R, CardError> {
        let path = self.path.clone();
        let state = self.current()?;
        let before = state.clone();
        let (r, changed) = f(state);
        if changed {
            if let Err(e) = write_atomically(&path, state) {
                // Keep memory equal to disk: the card did not change.
                *state = before;
                self.cached = None;
                return Err(e);
            }
            self.cached = None;
            // Re-stat so the next call reuses what we just wrote.
            let _ = self.current();
        }
        Ok(r)
    }

    /// Same as [`CardFile::read`]; named for call sites that mean to modify.
    pub fn update<R>(
        &mut self,
        f: impl FnOnce(&mut CardState) -> (R, bool),
    ) -> Result<R, CardError> {
        self.read(f)
    }
}

/// Reads the card file, refusing one over [`MAX_FILE`].
fn read_bounded(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, CardError> {
    let f = File::open(path).map_err(|e| state_err("cannot read", path, e))?;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    f.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| state_err("cannot read", path, e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(state_err(
            "corrupt card file",
            path,
            format!("larger than {} MiB", MAX_FILE / (1024 * 1024)),
        ));
    }
    Ok(bytes)
}

/// Makes a file we own that others may read or write the owner's only (an existing lock file
/// from before modes were set). Best effort: a file of another owner is left as it is.
fn tighten(f: &File) {
    let Ok(meta) = f.metadata() else { return };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.mode() & 0o077 != 0 && meta.uid() == euid {
        let _ = f.set_permissions(fs::Permissions::from_mode(FILE_MODE));
    }
}

/// The directory holding `path` and the prefix of its temporary files (`.NAME.tmp.`).
fn temp_prefix(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, format!(".{name}.tmp."))
}

/// Whether a process with id `pid` exists (one we may not signal exists too).
fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes temporary files of `path` that a killed writer left behind: ours (same owner), and
/// either their writer's process is gone or they are older than [`STALE_AFTER`]. Called with
/// the lock held, so no live writer of this card is between creating and renaming its file.
fn remove_stale_temporaries(path: &Path) {
    let (dir, prefix) = temp_prefix(path);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.uid() != euid {
            continue;
        }
        // `.NAME.tmp.PID.RANDOM` (and `.NAME.tmp.PID` from before random names).
        let pid = rest
            .split('.')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or(0);
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old || !process_exists(pid) {
            match fs::remove_file(entry.path()) {
                Ok(()) => log::info!("removed a stale copy {}", entry.path().display()),
                Err(e) => log::debug!("stale copy {}: {e}", entry.path().display()),
            }
        }
    }
}

/// A temporary file removed when dropped unless it was renamed into place.
struct Temporary {
    path: PathBuf,
    armed: bool,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `state` to `path` by temporary file + fsync + rename + directory fsync. The temporary
/// file is created exclusively, 0600, under a random name; the card keeps its owner when root
/// writes someone else's card.
fn write_atomically(path: &Path, state: &CardState) -> Result<(), CardError> {
    remove_stale_temporaries(path);
    let (dir, prefix) = temp_prefix(path);
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(state).map_err(|e| state_err("cannot encode", path, e))?,
    );
    let owner = fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let write = || -> std::io::Result<()> {
        let (mut f, mut tmp) = loop {
            let random = hex::encode(super::crypto::random_bytes(8));
            let candidate = dir.join(format!("{prefix}{}.{random}", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&candidate)
            {
                Ok(f) => {
                    let tmp = Temporary {
                        path: candidate,
                        armed: true,
                    };
                    break (f, tmp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        // The umask may only have narrowed the mode; make it exactly 0600.
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        if let Some((uid, gid)) = owner {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } == 0 && uid != 0 {
                let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
            }
        }
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp.path, path)?;
        tmp.armed = false;
        File::open(&dir)?.sync_all()
    };
    write().map_err(|e| state_err("cannot write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuses_overwrite_and_update_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let mut f = CardFile::create(&path, &CardState::factory(42)).unwrap();
        assert!(CardFile::create(&path, &CardState::factory(43)).is_err());
        f.update(|s| {
            s.serial = 77;
            ((), true)
        })
        .unwrap();
        let mut g = CardFile::open(&path).unwrap();
        assert_eq!(g.read(|s| (s.serial, false)).unwrap(), 77);
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn card_and_lock_are_0600_from_creation_and_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let lock = dir.path().join("card.json.lock");
        let mut f = CardFile::create(&path, &CardState::factory(42)).unwrap();
        assert_eq!((mode(&path), mode(&lock)), (0o600, 0o600));
        // A card (and lock) made readable by others, as files of earlier versions were.
        for p in [&path, &lock] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
        }
        f.read(|_| ((), false)).unwrap();
        assert_eq!(mode(&path), 0o644, "reading does not write");
        assert_eq!(mode(&lock), 0o600, "the lock is tightened when taken");
        f.update(|s| {
            s.serial = 43;
            ((), true)
        })
        .unwrap();
        assert_eq!(mode(&path), 0o600, "the next write makes it 0600");
    }

    #[test]
    fn copies_of_dead_writers_are_removed_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let mut f = CardFile::create(&path, &CardState::factory(42)).unwrap();
        // A process that has exited (reaped): its id is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale_new = dir
            .path()
            .join(format!(".card.json.tmp.{dead}.0011223344556677"));
        let stale_old = dir.path().join(format!(".card.json.tmp.{dead}"));
        // A copy whose writer is alive (this process) and recent stays.
        let live = dir.path().join(format!(
            ".card.json.tmp.{}.8899aabbccddeeff",
            std::process::id()
        ));
        let other_card = dir
            .path()
            .join(format!(".other.json.tmp.{dead}.0011223344556677"));
        for p in [&stale_new, &stale_old, &live, &other_card] {
            fs::write(p, b"{}").unwrap();
        }
        f.update(|s| {
            s.serial = 43;
            ((), true)
        })
        .unwrap();
        assert!(!stale_new.exists() && !stale_old.exists());
        assert!(live.exists(), "a live writer's copy is left alone");
        assert!(
            other_card.exists(),
            "another card's copies are not ours to remove"
        );
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(CardFile::open(&path), Err(CardError::State(_))));
    }
}
