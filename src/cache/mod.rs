//! The content-addressed cache.
//!
//! ```text
//! <root>/entries/<k[0..2]>/<key>/   a finished result: manifest.json (written last), log.txt, out/
//! <root>/locks/<key>.lock           per-key OS lock, held while the key is computed
//! <root>/work/<key>/                the computing process's job.json, log, progress, scratch (`work`)
//! <root>/tmp/                       entries being assembled before their atomic rename
//! <root>/quarantine/                entries that failed `cache verify`
//! <root>/index/                     instance name -> last key, to explain what changed
//! ```
//! An entry folder is renamed into place only after every file and the manifest are
//! fsynced, so a folder under `entries/` is always complete.

pub mod gc;
pub mod lock;
pub mod manifest;
pub mod verify;
pub mod work;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use manifest::{hostname, FileRecord, Manifest};
pub use work::Work;

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Open (creating the layout if needed) a cache folder.
    pub fn open(root: &Path) -> io::Result<Cache> {
        for sub in ["entries", "locks", "work", "tmp", "quarantine", "index"] {
            fs::create_dir_all(root.join(sub))?;
        }
        let root = root.canonicalize()?;
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(&key[..2]).join(key)
    }

    /// The folder holding an entry's outputs (what downstream stages read).
    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.entry_dir(key).join("out")
    }

    pub fn manifest_path(&self, key: &str) -> PathBuf {
        self.entry_dir(key).join("manifest.json")
    }

    /// Cheap check used by plan/status: the manifest exists (it is written last).
    pub fn is_cached(&self, key: &str) -> bool {
        self.manifest_path(key).is_file()
    }

    pub fn read_manifest(&self, key: &str) -> io::Result<Manifest> {
        let bytes = fs::read(self.manifest_path(key))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// Index file remembering the last key computed for an instance name.
    pub fn index_path(&self, pipeline: &str, instance: &str) -> PathBuf {
        let h = blake3::hash(format!("{pipeline}\0{instance}").as_bytes());
        self.root.join("index").join(format!("{}.json", &h.to_hex()[..32]))
    }

    pub fn record_index(&self, pipeline: &str, instance: &str, key: &str) -> io::Result<()> {
        let path = self.index_path(pipeline, instance);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, serde_json::json!({ "pipeline": pipeline, "instance": instance, "key": key }).to_string())?;
        fs::rename(tmp, path)
    }

    pub fn last_key(&self, pipeline: &str, instance: &str) -> Option<String> {
        let bytes = fs::read(self.index_path(pipeline, instance)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("key")?.as_str().map(str::to_owned)
    }

    /// Every finished entry's key.
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        for shard in fs::read_dir(self.root.join("entries"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                keys.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Move an assembled folder into place as the entry for `key`, sealed read-only.
    ///
    /// A folder already there without a manifest is the remains of something that never
    /// finished (a copy cut short, a manual edit): not an entry, so it is removed first.
    fn publish(&self, assembled: &Path, key: &str) -> io::Result<()> {
        let dest = self.entry_dir(key);
        let shard = dest.parent().expect("entry has a shard folder");
        fs::create_dir_all(shard)?;
        if dest.exists() && !self.is_cached(key) {
            tracing::warn!(key, "removing an entry folder without a manifest");
            remove_tree(&dest)?;
        }
        seal(assembled)?;
        fs::rename(assembled, &dest)?;
        fsync_dir(shard)
    }
}

/// Make an assembled entry read-only: every file 0444, every folder below it 0555. The
/// entry folder itself stays writable, so `verify` can move it to quarantine and `gc` can
/// remove it; for everyone but root a stage cannot modify what it reads.
pub fn seal(entry: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, top: bool) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                walk(&e.path(), false)?;
            } else if t.is_file() {
                fs::set_permissions(e.path(), fs::Permissions::from_mode(0o444))?;
            }
        }
        if !top {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o555))?;
        }
        Ok(())
    }
    walk(entry, true)
}

/// Remove a folder tree, sealed or not (folders are made writable on the way down).
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn unseal(dir: &Path) -> io::Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                unseal(&e.path())?;
            }
        }
        Ok(())
    }
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if m.is_dir() => unseal(dir)?,
        Ok(_) => {}
    }
    fs::remove_dir_all(dir)
}

/// fsync a folder so a rename into it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Total size in bytes of the files below a folder.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => total += dir_size(&e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

/// Files below `dir`, as sorted relative paths.
pub fn list_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                walk(base, &e.path(), out)?;
            } else {
                out.push(e.path().strip_prefix(base).expect("below base").to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out)?;
    }
    out.sort();
    Ok(out)
}
