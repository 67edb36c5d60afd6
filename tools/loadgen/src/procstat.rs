//! CPU time and memory of a process, read from `/proc` (Linux).

/// CPU seconds (user + system, all threads) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports them in clock ticks of USER_HZ, 100 on every mainstream architecture.
    Some((utime + stime) / 100.0)
}

/// Resident memory now and at its peak, in MiB (`VmRSS`, `VmHWM`).
pub(crate) fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The parent pid of a process (field 4 of `/proc/PID/stat`).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A process and all its live descendants (workers, helpers), root first; empty when the root
/// is gone.
pub(crate) fn tree(root: u32) -> Vec<u32> {
    if !std::path::Path::new(&format!("/proc/{root}")).exists() {
        return Vec::new();
    }
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while let Some(&pid) = out.get(i) {
        if let Some(kids) = children.get(&pid) {
            out.extend(kids.iter().copied().filter(|k| *k != root));
        }
        i += 1;
    }
    out
}

/// CPU seconds used so far by a process tree: each live process's own time plus that of the
/// children it has already reaped.
pub(crate) fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let pids = tree(root);
    if pids.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat
            .get(close + 2..)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // utime, stime, cutime, cstime: fields 14 to 17 of the whole line, 11 to 14 after the
        // name, in USER_HZ ticks.
        for i in 11..=14 {
            total += fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    Some(total / 100.0)
}

/// Memory of a process tree now, in MiB: the sum of each process's proportional set size
/// (`Pss` in `smaps_rollup`, so pages shared between forked workers are counted once), or of
/// its `VmRSS` where `Pss` cannot be read.
pub(crate) fn tree_memory_mib(root: u32) -> Option<f64> {
    let pids = tree(root);
    if pids.is_empty() {
        return None;
    }
    let kb_field = |text: &str, name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let mut kb = 0.0;
    for pid in pids {
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| kb_field(&t, "Pss:"));
        let rss = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|t| kb_field(&t, "VmRSS:"))
        };
        kb += pss.or_else(rss).unwrap_or(0.0);
    }
    Some(kb / 1024.0)
}

/// Samples a process tree's memory on a background thread (so that reading `/proc` never
/// delays the load generator's runtime) and keeps the peak.
pub(crate) struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<f64>,
}

impl PeakSampler {
    /// Starts sampling `root`'s tree every `every`.
    pub(crate) fn start(root: u32, every: std::time::Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            loop {
                if let Some(mib) = tree_memory_mib(root) {
                    peak = peak.max(mib);
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(every);
            }
        });
        Self { stop, handle }
    }

    /// Stops sampling and returns the peak in MiB (0 if nothing could be read).
    pub(crate) fn finish(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tree_is_readable() {
        let me = std::process::id();
        let pids = tree(me);
        assert_eq!(pids.first(), Some(&me));
        assert!(tree_cpu_seconds(me).is_some());
        assert!(tree_memory_mib(me).is_some_and(|m| m > 0.0));
        let sampler = PeakSampler::start(me, std::time::Duration::from_millis(5));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(sampler.finish() > 0.0);
    }

    #[test]
    fn a_child_is_part_of_the_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let pids = tree(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(pids.contains(&child.id()));
    }
}
