//! Processes an attempt at a key leaves behind when its `exec-stage` is killed.
//!
//! Every process an attempt starts inherits `WFPIPE_KEY=<the key's work folder>` in its
//! environment: the folder, not the bare key, because two caches on one machine compute
//! the same keys. Only the holder of the key's lock computes the key, so when a new
//! attempt holds the lock, any other process carrying that mark belongs to an attempt that
//! died: it is killed before the new attempt starts, so it can never write into a result
//! being assembled.

use std::fs;

/// The environment variable marking an attempt's processes.
pub const KEY_ENV: &str = "WFPIPE_KEY";

/// Mark this process (and so every child it starts from now on) as the attempt at the key
/// whose work folder is `key`.
/// `/proc/<pid>/environ` keeps the environment the process started with, so this process
/// itself is never found by [`kill_orphans`], only its children.
pub fn mark(key: &str) {
    std::env::set_var(KEY_ENV, key);
}

/// SIGKILL every process of this user marked with `key`, other than this one; returns how
/// many were found.
pub fn kill_orphans(key: &str) -> usize {
    let wanted = format!("{KEY_ENV}={key}");
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else { return 0 };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        // Unreadable (another user's process, or gone): not ours.
        let Ok(environ) = fs::read(entry.path().join("environ")) else { continue };
        if environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes()) {
            // SAFETY: kill(2) with a pid read from /proc; at worst the process is gone.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn kills_a_marked_process_and_spares_the_rest() {
        let key = format!("test-orphan-{}", std::process::id());
        let mut marked = Command::new("sleep").arg("30").env(KEY_ENV, &key).spawn().unwrap();
        let mut other = Command::new("sleep").arg("30").env(KEY_ENV, format!("{key}-other")).spawn().unwrap();
        // The child's /proc entry shows its environment only after exec.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !fs::read(format!("/proc/{}/environ", marked.id())).is_ok_and(|e| e.windows(key.len()).any(|w| w == key.as_bytes())) {
            assert!(std::time::Instant::now() < deadline, "child never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(kill_orphans(&key), 1);
        let status = marked.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        assert!(other.try_wait().unwrap().is_none(), "a process of another key was killed");
        other.kill().unwrap();
        let _ = other.wait();
    }
}
