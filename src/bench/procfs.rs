//! What a process costs, read from Linux's `/proc/<pid>`: peak resident
//! memory (`status` VmHWM), CPU time (`stat` utime + stime) and bytes written
//! to storage (`io` write_bytes); and the size of a directory on disk.
//!
//! Invariant: the parsers are pure; reading must happen while the process
//! is alive (a reaped process has no `/proc` entry, a zombie no VmHWM).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, 100 on
/// every Linux architecture Switchboard targets.
const USER_HZ: f64 = 100.0;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub peak_rss_kib: u64,
    /// Resident now (VmRSS).
    #[serde(default)]
    pub rss_kib: u64,
    pub cpu_seconds: f64,
    pub write_bytes: u64,
}

/// Reads the counters of `pid`; fields that cannot be read stay 0.
pub fn usage(pid: u32) -> Usage {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let status = read("status");
    Usage {
        peak_rss_kib: vm_hwm_kib(&status).unwrap_or(0),
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        cpu_seconds: cpu_seconds(&read("stat")).unwrap_or(0.0),
        write_bytes: io_field(&read("io"), "write_bytes").unwrap_or(0),
    }
}

/// `VmHWM:   123456 kB` from `/proc/<pid>/status`.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmHWM:")
}

/// A `Name:   123456 kB` line of `/proc/<pid>/status`.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`, in seconds. The
/// command name (field 2) may contain spaces and parentheses, so fields are
/// counted after its closing parenthesis.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so field n is index n - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// A `name: value` line of `/proc/<pid>/io`.
pub fn io_field(io: &str, name: &str) -> Option<u64> {
    io.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// Bytes the filesystem allocated to every file under `dir` (blocks in
/// use: a sparse file's holes do not count), 0 when absent.
pub fn dir_allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_allocated(&e.path()),
            Ok(_) => e.metadata().map(|m| m.blocks() * 512).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Apparent size of every file under `dir`, in bytes (0 when absent).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tswitchboard\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(51_234));
        assert_eq!(vm_hwm_kib("Name: x\n"), None);
        assert_eq!(status_kib(status, "VmRSS:"), Some(40_000));
        let stat = "4242 (switch board) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 30 0 0 20 0 4 0 100 0 0";
        assert_eq!(cpu_seconds(stat), Some(2.8));
        assert_eq!(cpu_seconds("garbage"), None);
        let io = "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 81920\ncancelled_write_bytes: 0\n";
        assert_eq!(io_field(io, "write_bytes"), Some(81_920));
        assert_eq!(io_field(io, "cancelled_write_bytes"), Some(0));
    }

    #[test]
    fn reads_this_process_and_a_directory() {
        let me = usage(std::process::id());
        assert!(me.peak_rss_kib > 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 23]).unwrap();
        assert_eq!(dir_size(dir.path()), 123);
        assert_eq!(dir_size(&dir.path().join("absent")), 0);
        assert!(dir_allocated(dir.path()) >= 123, "written bytes take blocks");
        assert_eq!(dir_allocated(&dir.path().join("absent")), 0);
    }
}
