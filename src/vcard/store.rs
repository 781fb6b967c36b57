//! The virtual card's state file: one JSON document, replaced atomically (write a temporary file
//! in the same directory, fsync, rename, fsync the directory) while an exclusive lock is held on
//! a sidecar `FILE.lock`. Two processes using one card therefore never lose an update, and a
//! crash mid-write leaves either the old or the new card, never a torn one.
//! This module knows files and locks, not PIV.

use super::state::CardState;
use crate::card::CardError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
            .open(&self.lock_path)
            .map_err(|e| state_err("cannot open lock", &self.lock_path, e))?;
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
            let bytes = zeroize::Zeroizing::new(
                fs::read(&self.path).map_err(|e| state_err("cannot read", &self.path, e))?,
            );
            let state: CardState = serde_json::from_slice(&bytes)
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

/// Writes `state` to `path` by temporary file + fsync + rename + directory fsync.
fn write_atomically(path: &Path, state: &CardState) -> Result<(), CardError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(state).map_err(|e| state_err("cannot encode", path, e))?,
    );
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        state_err("cannot write", path, e)
    })
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

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(CardFile::open(&path), Err(CardError::State(_))));
    }
}
