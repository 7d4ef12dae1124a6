//! Process metrics read from `/proc/self`: CPU seconds, resident memory, open
//! file descriptors, threads. Linux only: elsewhere [`refresh`] sets nothing.
//!
//! Read on demand (each `/metrics` scrape and each alert tick), never on the
//! data path.

use super::metrics as names;

/// What `/proc/self` says about this process; `None` where a file was unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size in bytes.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
}

/// `/proc` reports CPU times in USER_HZ ticks, which Linux fixes at 100 for user space on every architecture.
const USER_HZ: f64 = 100.0;

/// Reads the current sample (cheap: four small files and one directory listing).
pub fn sample() -> ProcessSample {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let status_kb = |key: &str| status.as_deref().and_then(|s| status_value(s, key));
    ProcessSample {
        cpu_seconds: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_seconds(&s)),
        resident_bytes: status_kb("VmRSS:").map(|kb| kb * 1024),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s)),
        threads: status_kb("Threads:"),
    }
}

/// Reads a sample and sets the process gauges and counter.
pub fn refresh() {
    let s = sample();
    if let Some(v) = s.cpu_seconds {
        // A gauge, because the metrics crate's counters are integers and CPU time has 10 ms steps; it only grows, so `rate()` applies.
        metrics::gauge!(names::PROCESS_CPU_SECONDS).set(v);
    }
    if let Some(v) = s.resident_bytes {
        metrics::gauge!(names::PROCESS_RESIDENT_MEMORY).set(v as f64);
    }
    if let Some(v) = s.open_fds {
        metrics::gauge!(names::PROCESS_OPEN_FDS).set(v as f64);
    }
    if let Some(v) = s.max_fds {
        metrics::gauge!(names::PROCESS_MAX_FDS).set(v as f64);
    }
    if let Some(v) = s.threads {
        metrics::gauge!(names::PROCESS_THREADS).set(v as f64);
    }
}

/// utime + stime of `/proc/self/stat`, in seconds. The command name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub(crate) fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The number after `key` in `/proc/self/status` (`VmRSS:   1234 kB`).
fn status_value(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("garbage"), None);
    }

    #[test]
    fn status_and_limits_are_read() {
        let status = "Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t7\n";
        assert_eq!(status_value(status, "VmRSS:"), Some(2048));
        assert_eq!(status_value(status, "Threads:"), Some(7));
        assert_eq!(status_value(status, "VmSwap:"), None);
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_sampled() {
        let s = sample();
        assert!(s.resident_bytes.is_some_and(|b| b > 0), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.threads.is_some_and(|n| n >= 1), "{s:?}");
        assert!(s.cpu_seconds.is_some(), "{s:?}");
        assert!(
            s.max_fds.is_some_and(|n| n >= s.open_fds.unwrap_or(0)),
            "{s:?}"
        );
    }
}
