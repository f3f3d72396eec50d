//! Giving freed memory back to the operating system while a long job runs.
//!
//! The bundled DuckDB allocates through the C library's `malloc`. With glibc,
//! memory freed by DuckDB's worker threads stays in each thread's arena, so
//! the process's resident size (RSS) drifts several hundred MB above DuckDB's
//! `memory_limit` during a merge. A [`Trimmer`] watches the RSS on a
//! background thread (every 100 ms, from `/proc/self/statm`) and calls glibc's
//! `malloc_trim(0)` when it passes a threshold; on other platforms it does
//! nothing. Merges and CSV extractions hold a [`TrimGuard`]; jobs running at
//! once share one trimmer. On the 1M-row merge benchmark this took peak RSS
//! from ~730 MB to ~670 MB for 5-20 % more time (released pages fault back
//! in); trimming every second regardless of RSS cost ~20 %. See the README's
//! Performance section.
//!
//! `DUCKMERGE_MALLOC_TRIM=0` turns it off.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that turns trimming off (`0`, `false`, `off`, `no`).
pub const TRIM_ENV: &str = "DUCKMERGE_MALLOC_TRIM";

/// How often the RSS is checked.
const POLL: Duration = Duration::from_millis(100);
/// After a trim, the next one waits until RSS grew this much more, or
/// [`BACKOFF`] passed: memory that is really in use is not trimmed in a loop.
const REGROW: u64 = 32 << 20;
const BACKOFF: Duration = Duration::from_secs(1);

/// Whether a value of [`TRIM_ENV`] leaves trimming on (unset: on).
pub fn trim_enabled(value: Option<&str>) -> bool {
    !matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("0" | "false" | "off" | "no")
    )
}

/// The RSS to keep under for a DuckDB `memory_limit` of `limit` bytes: the
/// limit plus a fifth (DuckDB allocates some memory outside its limit, and
/// the interpreter and libraries need their own).
pub fn threshold_for(limit: u64) -> u64 {
    limit.saturating_add(limit / 5)
}

/// The `memory_limit` of the database behind `backend`, in bytes (`None`
/// when DuckDB prints something [`parse_size`] does not read).
pub fn memory_limit(backend: &dyn crate::backend::SqlBackend) -> crate::error::Result<Option<u64>> {
    Ok(backend
        .query_value("SELECT current_setting('memory_limit')", &[])?
        .as_str()
        .and_then(parse_size))
}

/// Bytes in a DuckDB size as `current_setting('memory_limit')` prints it
/// (`476.8 MiB`, `1.5 GB`, `1024 bytes`); `None` when it is not one.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// The process's resident size in bytes (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: sysconf takes no pointers.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            return size as u64;
        }
    }
    4096
}

/// Returns freed heap memory to the OS now. True when the platform supports
/// it (glibc), whether or not anything was released.
pub fn trim_now() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and is thread-safe: it locks
        // each arena while it walks it.
        unsafe {
            libc::malloc_trim(0);
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's one shared trimmer and how many jobs hold it (RSS is the
/// whole process's, so jobs running at once, or an extraction inside a
/// merge, share one thread).
static SHARED: Shared = Mutex::new(None);

/// A shared trimmer with the number of jobs holding it.
type Shared = Mutex<Option<(usize, Trimmer)>>;

/// Keeps the shared [`Trimmer`] running while a job runs; the last guard
/// dropped stops it (which logs how often it trimmed).
pub struct TrimGuard(&'static Shared);

impl TrimGuard {
    /// A guard for the statements about to run on `backend`: the shared
    /// trimmer is started for its `memory_limit` unless one runs already.
    /// `None` where [`Trimmer::for_memory_limit`] gives none or the limit
    /// cannot be read.
    pub fn for_backend(backend: &dyn crate::backend::SqlBackend) -> Option<TrimGuard> {
        let limit = || memory_limit(backend).ok().flatten();
        TrimGuard::acquire(&SHARED, limit)
    }

    fn acquire(shared: &'static Shared, limit: impl FnOnce() -> Option<u64>) -> Option<TrimGuard> {
        let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
        match state.as_mut() {
            Some((holders, _)) => *holders += 1,
            None => *state = Some((1, Trimmer::for_memory_limit(limit()?)?)),
        }
        Some(TrimGuard(shared))
    }
}

impl Drop for TrimGuard {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match state.as_mut() {
                Some((holders, _)) if *holders > 1 => {
                    *holders -= 1;
                    None
                }
                _ => state.take(),
            }
        };
        // Stopped outside the lock: joining the thread takes up to a poll.
        drop(last);
    }
}

/// Trims the heap whenever RSS passes a threshold, on a background thread,
/// until dropped.
pub struct Trimmer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<u64>>,
}

impl Trimmer {
    /// Starts a trimmer keeping RSS near [`threshold_for`]`(limit)`, unless
    /// [`TRIM_ENV`] turns it off or the platform cannot trim.
    pub fn for_memory_limit(limit: u64) -> Option<Trimmer> {
        if !trim_enabled(std::env::var(TRIM_ENV).ok().as_deref()) {
            return None;
        }
        Trimmer::start(threshold_for(limit), POLL)
    }

    /// Starts checking RSS every `poll` and trimming above `threshold`
    /// bytes; `None` on platforms without `malloc_trim` or `/proc`, or when
    /// the thread cannot be spawned.
    pub fn start(threshold: u64, poll: Duration) -> Option<Trimmer> {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) || resident_bytes().is_none() {
            return None;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("duckmerge-trim".into())
            .spawn(move || watch(&flag, threshold, poll))
            .ok()?;
        Some(Trimmer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread; returns how many times it trimmed.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        let Some(thread) = self.thread.take() else {
            return 0;
        };
        let trims = thread.join().unwrap_or(0);
        log::debug!("returned freed memory to the OS {trims} time(s)");
        trims
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The trimmer thread: returns how many times it trimmed.
fn watch(stop: &(Mutex<bool>, Condvar), threshold: u64, poll: Duration) -> u64 {
    let (lock, wake) = stop;
    let mut trims = 0u64;
    let mut last: Option<(Instant, u64)> = None;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (guard, _) = wake
            .wait_timeout_while(stopped, poll, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        stopped = guard;
        if *stopped {
            return trims;
        }
        drop(stopped);
        let rss = resident_bytes().unwrap_or(0);
        let due = match last {
            None => true,
            Some((at, after)) => rss > after.saturating_add(REGROW) || at.elapsed() >= BACKOFF,
        };
        if rss > threshold && due {
            trim_now();
            trims += 1;
            last = Some((Instant::now(), resident_bytes().unwrap_or(rss)));
        }
        stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_turns_it_off() {
        assert!(trim_enabled(None));
        assert!(trim_enabled(Some("1")));
        assert!(trim_enabled(Some("yes")));
        for off in ["0", "false", "OFF", " no "] {
            assert!(!trim_enabled(Some(off)), "{off}");
        }
    }

    #[test]
    fn sizes_as_duckdb_prints_them() {
        // 476.8 × 2^20 = 499,961,036.8, truncated.
        assert_eq!(parse_size("476.8 MiB"), Some(499_961_036));
        assert_eq!(parse_size("1.5 GB"), Some(1_500_000_000));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1024 bytes"), Some(1024));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("80%"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(threshold_for(500), 600);
        assert_eq!(threshold_for(u64::MAX), u64::MAX);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trims_above_the_threshold_only_and_stops_promptly() {
        let rss = resident_bytes().expect("linux has /proc/self/statm");
        assert!(rss > 0);
        // Far above this process's RSS: never trims.
        let idle = Trimmer::start(rss * 100, Duration::from_millis(5)).expect("glibc");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(idle.stop(), 0);
        // Below it: trims, then backs off (REGROW / BACKOFF) instead of
        // trimming on every poll.
        let busy = Trimmer::start(0, Duration::from_millis(5)).expect("glibc");
        std::thread::sleep(Duration::from_millis(300));
        let stopping = Instant::now();
        let trims = busy.stop();
        assert!(stopping.elapsed() < Duration::from_millis(200));
        // ~60 polls; without the back-off each would trim. (Other tests in
        // this process may grow RSS meanwhile, which allows a few more.)
        assert!((1..=20).contains(&trims), "trimmed {trims} times in 300 ms");
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn duckdb_gives_the_same_answers_while_trimmed() {
        // Threshold 0: trims whenever RSS grows by REGROW, or every BACKOFF,
        // while DuckDB builds, aggregates and joins strings on two threads.
        let trimmer = Trimmer::start(0, Duration::from_millis(1)).expect("glibc");
        let con = duckdb::Connection::open_in_memory().unwrap();
        con.execute_batch(
            "SET threads = 2; CREATE TABLE t AS SELECT i, 'name ' || (i % 100000) AS s \
             FROM range(2000000) r(i)",
        )
        .unwrap();
        let (groups, total): (i64, i64) = con
            .query_row(
                "SELECT count(*), sum(n) FROM (SELECT s, count(*) AS n FROM t GROUP BY s)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let joined: i64 = con
            .query_row(
                "SELECT count(*) FROM t a JOIN t b ON a.i = b.i AND a.s = b.s",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let trims = trimmer.stop();
        assert_eq!((groups, total, joined), (100_000, 2_000_000, 2_000_000));
        assert!(trims >= 1, "never trimmed");
    }

    #[test]
    fn jobs_at_once_share_one_trimmer_until_the_last_ends() {
        if Trimmer::start(u64::MAX, Duration::from_secs(1)).is_none() {
            return; // no malloc_trim here
        }
        // Its own shared slot: other tests' jobs use the process's one.
        static SLOT: Shared = Mutex::new(None);
        let running = || SLOT.lock().unwrap().is_some();
        let first = TrimGuard::acquire(&SLOT, || Some(1u64 << 40)).unwrap();
        assert!(running());
        // The limit is read only to start the trimmer.
        let second = TrimGuard::acquire(&SLOT, || panic!("the limit is read again")).unwrap();
        drop(first);
        assert!(running());
        drop(second);
        assert!(!running());
        assert!(TrimGuard::acquire(&SLOT, || None).is_none());
        assert!(!running());
    }

    #[test]
    fn a_long_poll_does_not_delay_the_stop() {
        let Some(trimmer) = Trimmer::start(0, Duration::from_secs(3600)) else {
            return; // nothing to trim on this platform
        };
        let stopping = Instant::now();
        assert_eq!(trimmer.stop(), 0);
        assert!(stopping.elapsed() < Duration::from_secs(1));
    }
}
