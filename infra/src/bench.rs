//! Measuring a benchmark run from inside the process: CPU time and peak memory.
//!
//! Linux only (`/proc/self`); elsewhere the figures are zero or `None`. CPU time is the whole
//! process's, every thread's user and system time together (10 ms resolution, `USER_HZ`).

use std::time::{Duration, Instant};

/// User and system CPU seconds of this process so far (all threads, exited ones included).
pub fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default()
    };
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// A `kB` line of `/proc/self/status` in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// The resident set size of this process now (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// Resets the peak resident set size to the current one (writes `5` to `/proc/self/clear_refs`),
/// so that a phase's peak can be measured after an earlier, bigger one. False where that is not
/// possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What a measured phase used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Wall-clock time.
    pub wall: Duration,
    /// User CPU seconds (all threads).
    pub user_s: f64,
    /// System CPU seconds (all threads).
    pub sys_s: f64,
    /// Peak resident set size during the phase (bytes), if known: the process's peak when the
    /// peak could not be reset at the start.
    pub peak_rss: Option<u64>,
}

impl Usage {
    /// User plus system CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    /// `n` per second of wall time.
    pub fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// One line: wall, CPU (and cores used on average), peak RSS.
    pub fn describe(&self) -> String {
        let wall = self.wall.as_secs_f64();
        format!(
            "wall {wall:.3} s  cpu {:.2} s (user {:.2} + sys {:.2}, {:.2} cores)  peak rss {}",
            self.cpu_s(),
            self.user_s,
            self.sys_s,
            self.cpu_s() / wall.max(1e-9),
            self.peak_rss
                .map_or("?".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6)),
        )
    }
}

/// Measures a phase: started by [`Meter::start`], read by [`Meter::stop`].
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    start: Instant,
    cpu: (f64, f64),
}

impl Meter {
    /// Starts measuring, resetting the peak RSS so that the phase's own peak is reported.
    pub fn start() -> Self {
        reset_peak_rss();
        Meter {
            start: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    /// What the phase used so far.
    pub fn stop(&self) -> Usage {
        let (user, sys) = cpu_seconds();
        Usage {
            wall: self.start.elapsed(),
            user_s: user - self.cpu.0,
            sys_s: sys - self.cpu.1,
            peak_rss: peak_rss_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_measured() {
        let meter = Meter::start();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let usage = meter.stop();
        drop(block);
        assert!(usage.cpu_s() >= 0.1, "{usage:?}");
        assert!(usage.wall >= Duration::from_millis(200));
        let peak = usage.peak_rss.expect("Linux has VmHWM");
        assert!(peak >= 64 << 20, "{usage:?}");
        assert!(rss_bytes().unwrap() <= peak);
        assert!(usage.describe().contains("peak rss"));
    }
}
