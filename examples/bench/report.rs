//! Settings from the environment, the report (stdout, summary.txt, CSV files) and statistics helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::SECTIONS;

/// What to run, from the environment (`BENCH`, `BENCH_OUT` and a few knobs for quick runs).
pub(crate) struct Settings {
    pub(crate) sections: Vec<&'static str>,
    pub(crate) out: PathBuf,
    pub(crate) hosts: usize,
    pub(crate) trials: usize,
    pub(crate) puts: usize,
    pub(crate) scale_k: Vec<usize>,
    /// K of the dual-stack scale section (`BENCH_SCALE6_K`).
    pub(crate) scale6_k: Vec<usize>,
    pub(crate) scale_repeats: usize,
    pub(crate) idle_peers: usize,
    pub(crate) idle_secs: u64,
    pub(crate) iperf_secs: u64,
    pub(crate) iperf_rounds: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => {
            text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value"))
        }
        _ => default,
    }
}

impl Settings {
    pub(crate) fn from_env() -> Settings {
        let wanted = std::env::var("BENCH").unwrap_or_default();
        let mut sections = Vec::new();
        for word in wanted.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                sections = SECTIONS.to_vec();
                break;
            }
            let known = SECTIONS.iter().find(|s| **s == word).unwrap_or_else(|| {
                eprintln!("BENCH: unknown section {word:?}; known: all,{}", SECTIONS.join(","));
                std::process::exit(2);
            });
            if !sections.contains(known) {
                sections.push(known);
            }
        }
        if sections.is_empty() {
            sections = SECTIONS.to_vec();
        }
        let scale_k: String = env_or("BENCH_SCALE_K", "100,1000,2000,5000".to_string());
        let scale6_k: String = env_or("BENCH_SCALE6_K", "5000".to_string());
        let ks = |name: &str, text: String| -> Vec<usize> {
            text.split(',').map(|k| k.trim().parse().unwrap_or_else(|_| panic!("{name}: comma-separated numbers"))).collect()
        };
        Settings {
            sections,
            out: PathBuf::from(env_or("BENCH_OUT", "bench-results".to_string())),
            hosts: env_or("BENCH_HOSTS", 8),
            trials: env_or("BENCH_TRIALS", 20),
            puts: env_or("BENCH_PUTS", 200),
            scale_k: ks("BENCH_SCALE_K", scale_k),
            scale6_k: ks("BENCH_SCALE6_K", scale6_k),
            scale_repeats: env_or("BENCH_SCALE_REPEATS", 3),
            idle_peers: env_or("BENCH_IDLE_PEERS", 100),
            idle_secs: env_or("BENCH_IDLE_SECONDS", 60),
            iperf_secs: env_or("BENCH_IPERF_SECONDS", 10),
            iperf_rounds: env_or("BENCH_IPERF_ROUNDS", 3),
        }
    }
}

/// Figures (stdout and summary.txt) and raw files in the output dir.
pub(crate) struct Report {
    out: PathBuf,
}

impl Report {
    /// `fresh` empties summary.txt (the parent does; each section's process appends).
    pub(crate) fn new(out: &Path, fresh: bool) -> Report {
        fs::create_dir_all(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        if fresh {
            let _ = fs::write(out.join("summary.txt"), "");
        }
        Report { out: out.to_path_buf() }
    }

    /// One figure; NaN (nothing measured) is printed as `nan`.
    pub(crate) fn figure(&self, name: &str, value: f64) {
        self.line(format!("{name} {}", fmt_num(value)));
    }

    pub(crate) fn note(&self, text: &str) {
        for l in text.lines() {
            self.line(format!("# {l}"));
        }
    }

    /// Printed and appended to summary.txt at once, so a later failure keeps what was measured.
    fn line(&self, line: String) {
        use std::io::Write;
        println!("{line}");
        let file = fs::OpenOptions::new().create(true).append(true).open(self.out.join("summary.txt"));
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{line}");
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    pub(crate) fn write(&self, name: &str, text: &str) {
        let path = self.path(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub(crate) fn csv(&self, name: &str, header: &str, rows: &[String]) {
        let mut text = String::from(header);
        text.push('\n');
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        self.write(name, &text);
    }
}

pub(crate) fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// An optional number as a CSV cell (empty when missing).
pub(crate) fn cell(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_default()
}

/// Nearest-rank percentile of `values` (NaN when empty).
pub(crate) fn pct(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN left"));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub(crate) fn max_of(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

pub(crate) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
pub(crate) fn ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(from.duration_since(to).as_secs_f64() * 1e3),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
