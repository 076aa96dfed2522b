//! A scratch folder of this process: created empty under the system's temporary folder
//! with a name no other process or call uses, removed with everything in it on drop.
//! (`wfpipe bench` and the tests use it; a dependency for it would change the feature set
//! of crates the CLI shares, and so split the test build from the run build.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// `<tmp>/wfpipe-<label>-<pid>-<n>-<nanos>`.
    pub fn new(label: &str) -> std::io::Result<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wfpipe-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::ScratchDir;

    #[test]
    fn each_is_new_and_empty_and_gone_after_drop() {
        let (a, b) = (ScratchDir::new("t").unwrap(), ScratchDir::new("t").unwrap());
        assert_ne!(a.path(), b.path());
        assert_eq!(std::fs::read_dir(a.path()).unwrap().count(), 0);
        std::fs::write(a.path().join("f"), "x").unwrap();
        let kept = a.path().to_owned();
        drop(a);
        assert!(!kept.exists());
    }
}
