//! Per-key OS file locks. The kernel releases a lock when its holder dies, so a crashed
//! process never blocks a key.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

pub struct KeyLock {
    _file: File,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).open(path)
}

impl KeyLock {
    /// Wait until the key is ours.
    pub fn acquire(path: &Path) -> io::Result<KeyLock> {
        let file = open(path)?;
        file.lock()?;
        Ok(KeyLock { _file: file })
    }

    /// Take the key if nobody holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<KeyLock>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(KeyLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Whether some process holds the key's lock right now (it is being computed).
pub fn is_locked(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    matches!(KeyLock::try_acquire(path), Ok(None))
}
