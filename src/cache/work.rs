//! The work folder of a key: where one process computes it and leaves its traces. Its
//! files are named here only; executors find a key's log, progress and error through
//! [`Work`], and `exec-stage` prepares it, computes into `out/` and hands it to
//! [`Cache::publish_work`].
//!
//! ```text
//! <root>/work/<key>/job.json        what to compute (written by the executor)
//!                   log.txt         everything the computing process printed
//!                   progress.jsonl  step and metric lines, throttled
//!                   error.txt       why the last attempt failed (absent after a success)
//!                   out/            outputs being written, moved into the entry on publish
//!                   scratch/        checkpoints a rerun of the key resumes from
//!                   spawn.log       what an executor saw when starting the process failed
//! ```
//! The SLURM executor keeps its own records there too (`slurm.json`, `slurm-<job>.out`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{fsync_dir, list_files, remove_tree, Cache, FileRecord, Manifest};

#[derive(Clone, Debug)]
pub struct Work {
    dir: PathBuf,
}

impl Work {
    pub(super) fn new(dir: PathBuf) -> Work {
        Work { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn job(&self) -> PathBuf {
        self.dir.join("job.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.txt")
    }
    pub fn progress(&self) -> PathBuf {
        self.dir.join("progress.jsonl")
    }
    pub fn error(&self) -> PathBuf {
        self.dir.join("error.txt")
    }
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch")
    }
    pub fn spawn_log(&self) -> PathBuf {
        self.dir.join("spawn.log")
    }

    /// The spawn log, opened for appending (folder created if needed): errors a process
    /// prints before it takes its own log (unreadable job, lock failure) land there.
    pub fn open_spawn_log(&self) -> io::Result<fs::File> {
        fs::create_dir_all(&self.dir)?;
        fs::OpenOptions::new().create(true).append(true).open(self.spawn_log())
    }

    /// Ready the folder for an attempt: an empty `out/` (what a killed attempt wrote is not
    /// trusted), `scratch/` kept for resuming, the last error gone; returns the new log.
    pub fn prepare(&self) -> io::Result<fs::File> {
        let out = self.out();
        if out.exists() {
            fs::remove_dir_all(&out)?;
        }
        fs::create_dir_all(&out)?;
        fs::create_dir_all(self.scratch())?;
        let _ = fs::remove_file(self.error());
        fs::File::create(self.log())
    }
}

impl Cache {
    pub fn work(&self, key: &str) -> Work {
        Work::new(self.root.join("work").join(key))
    }

    /// Publish what `work/out/` holds as the entry `manifest.key`: every output file
    /// digested into the manifest, fsynced, the manifest written last, the folder renamed
    /// into place and sealed. The instance's index then points at the key, and the scratch
    /// folder, no longer needed, goes.
    pub fn publish_work(&self, work: &Work, mut manifest: Manifest) -> io::Result<()> {
        let key = manifest.key.clone();
        let assembled = self.tmp_dir().join(format!("{key}.{}", std::process::id()));
        let result = (|| {
            if assembled.exists() {
                fs::remove_dir_all(&assembled)?;
            }
            fs::create_dir_all(&assembled)?;
            fs::rename(work.out(), assembled.join("out"))?;
            manifest.outputs = digest_outputs(&assembled.join("out"))?;
            let _ = fs::copy(work.log(), assembled.join("log.txt"));
            let mut f = fs::File::create(assembled.join("manifest.json"))?;
            f.write_all(&serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))?;
            f.sync_all()?;
            fsync_dir(&assembled.join("out"))?;
            fsync_dir(&assembled)?;
            self.publish(&assembled, &key)
        })();
        if let Err(e) = result {
            self.clean_assembly(&key);
            return Err(e);
        }
        let _ = self.record_index(&manifest.pipeline, &manifest.instance, &key);
        let _ = fs::remove_dir_all(work.scratch());
        Ok(())
    }

    /// Remove the folders an earlier attempt at `key` was assembling in `tmp/` when it died
    /// or failed. Only the holder of the key's lock may call this: none of them is in use.
    pub fn clean_assembly(&self, key: &str) {
        let prefix = format!("{key}.");
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else { return };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = remove_tree(&e.path());
            }
        }
    }
}

/// Each output's size and digest, after an fsync; an entry holds only regular files (a
/// link's target could change after publication).
fn digest_outputs(out: &Path) -> io::Result<Vec<FileRecord>> {
    let mut outputs = Vec::new();
    for rel in list_files(out)? {
        let path = out.join(&rel);
        if !fs::symlink_metadata(&path)?.is_file() {
            return Err(io::Error::other(format!("output `{}` is not a regular file (a symbolic link?)", rel.display())));
        }
        fs::File::open(&path)?.sync_all()?;
        outputs.push(FileRecord {
            path: rel.to_string_lossy().replace('\\', "/"),
            size: fs::metadata(&path)?.len(),
            blake3: crate::key::file_digest(&path)?,
        });
    }
    Ok(outputs)
}
