//! What this machine offers the local executor, read without any driver or tool.

/// GPUs as device files (`/dev/nvidia0`, ...), which needs no driver library.
pub fn gpu_device_files() -> u32 {
    std::fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("nvidia").is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
                })
                .count() as u32
        })
        .unwrap_or(0)
}

/// The memory this process may use: the machine's (`/proc/meminfo`), or a container's
/// cgroup limit when that is lower (v2 `memory.max`, else v1 `memory.limit_in_bytes`).
pub fn memory_mb() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    memory_limit_mb(
        &read("/proc/meminfo")?,
        read("/sys/fs/cgroup/memory.max").or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes")).as_deref(),
    )
}

fn memory_limit_mb(meminfo: &str, cgroup_limit: Option<&str>) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let machine = line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024;
    // "max" (v2) or a huge number (v1's "no limit") parse to no limit or lose to the machine.
    let limit = cgroup_limit.and_then(|text| text.trim().parse::<u64>().ok()).map(|bytes| bytes / (1024 * 1024));
    Some(limit.map_or(machine, |l| l.min(machine)))
}

#[cfg(test)]
mod tests {
    use super::memory_limit_mb;

    #[test]
    fn a_cgroup_limit_below_the_machine_wins() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(memory_limit_mb(meminfo, None), Some(24000));
        assert_eq!(memory_limit_mb(meminfo, Some("max\n")), Some(24000));
        assert_eq!(memory_limit_mb(meminfo, Some("4294967296\n")), Some(4096));
        // cgroup v1 without a limit reports about 2^63
        assert_eq!(memory_limit_mb(meminfo, Some("9223372036854771712\n")), Some(24000));
        assert_eq!(memory_limit_mb("no such line", Some("4294967296")), None);
    }
}
