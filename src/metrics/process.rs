//! The standard `process_*` metrics, read from Linux `/proc` at scrape time.
//! prometheus' own `process` feature would pull in `procfs` and its dependency
//! tree for these few numbers; reading three small text files is enough.
//! Where `/proc` is unreadable (not Linux) the values stay at 0.

use std::sync::Mutex;

use prometheus::{Counter, IntGauge, Registry};

use super::register::{float_counter, float_gauge, gauge};
use super::MetricsError;

/// Linux reports CPU times in USER_HZ ticks, fixed at 100 on every mainstream
/// architecture (it is an ABI constant, unlike the kernel's internal HZ).
const USER_HZ: f64 = 100.0;

pub(super) struct ProcessMetrics {
    resident: IntGauge,
    virtual_size: IntGauge,
    threads: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    cpu: Counter,
    /// CPU seconds already added to `cpu` (a counter only goes up by deltas).
    cpu_reported: Mutex<f64>,
}

impl ProcessMetrics {
    pub(super) fn register(r: &Registry) -> Result<Self, MetricsError> {
        let cpu = float_counter(
            r,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )?;
        let start_time = float_gauge(
            r,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?;
        if let Some(t) = start_time_seconds() {
            start_time.set(t);
        }
        Ok(ProcessMetrics {
            resident: gauge(
                r,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )?,
            virtual_size: gauge(
                r,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            )?,
            threads: gauge(r, "process_threads", "Number of OS threads in the process.")?,
            open_fds: gauge(r, "process_open_fds", "Number of open file descriptors.")?,
            max_fds: gauge(
                r,
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )?,
            cpu,
            cpu_reported: Mutex::new(0.0),
        })
    }

    /// Re-reads `/proc/self`; called before each scrape.
    pub(super) fn refresh(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let s = parse_status(&status);
            self.resident.set(s.resident_bytes);
            self.virtual_size.set(s.virtual_bytes);
            self.threads.set(s.threads);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| parse_max_open_files(&l))
        {
            self.max_fds.set(max);
        }
        if let Some(times) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            let total = (times.utime + times.stime) as f64 / USER_HZ;
            let mut reported = self.cpu_reported.lock().unwrap();
            if total > *reported {
                self.cpu.inc_by(total - *reported);
                *reported = total;
            }
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Status {
    resident_bytes: i64,
    virtual_bytes: i64,
    threads: i64,
}

/// `VmRSS`, `VmSize` (in kB) and `Threads` from `/proc/self/status`.
fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = value
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0);
        match key {
            "VmRSS" => s.resident_bytes = number.saturating_mul(1024),
            "VmSize" => s.virtual_bytes = number.saturating_mul(1024),
            "Threads" => s.threads = number,
            _ => {}
        }
    }
    s
}

#[derive(Debug, PartialEq, Eq)]
struct StatTimes {
    utime: u64,
    stime: u64,
    /// Ticks after boot at which the process started.
    start: u64,
}

/// Fields 14, 15 and 22 of `/proc/self/stat`. The command name (field 2) may
/// contain spaces and parentheses, so counting starts after its last `)`.
fn parse_stat(text: &str) -> Option<StatTimes> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatTimes {
        utime: field(14)?,
        stime: field(15)?,
        start: field(22)?,
    })
}

/// The soft limit on the `Max open files` line of `/proc/self/limits`.
fn parse_max_open_files(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` (boot time, unix seconds) from `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn start_time_seconds() -> Option<f64> {
    let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(boot as f64 + stat.start as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let text = "Name:\tpgrelay\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t7\n";
        assert_eq!(
            parse_status(text),
            Status {
                resident_bytes: 2048 * 1024,
                virtual_bytes: 123456 * 1024,
                threads: 7
            }
        );
    }

    #[test]
    fn stat_survives_spaces_and_parens_in_the_command_name() {
        let text = "4242 (pg relay) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 3 0 98765 100000 512 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(StatTimes {
                utime: 250,
                stime: 75,
                start: 98765
            })
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
    }

    #[test]
    fn limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(parse_max_open_files(limits), Some(1_048_576));
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn refresh_reads_this_process() {
        let r = Registry::new();
        let p = ProcessMetrics::register(&r).unwrap();
        p.refresh();
        assert!(p.resident.get() > 0);
        assert!(p.threads.get() >= 1);
        assert!(p.open_fds.get() >= 3);
        assert!(p.max_fds.get() > 0);
    }
}
