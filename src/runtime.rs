//! The async runtime every command runs on, with one worker thread unless
//! `HA_INGESTOR_WORKER_THREADS` asks for more.
//!
//! A home's stream is a few hundred events a second, and what it costs is wake-ups,
//! not work: with a worker per core, a task woken on one worker sends the runtime
//! looking for work on the others, and each of those looks is a context switch. One
//! worker (the buffer's appender and flusher keep their own threads, and file work its
//! blocking pool) is cheaper at every rate measured, up to 20,000 events/s
//! (docs/BENCHMARKS.md, "One worker thread"). A fleet of many busy homes can raise it.

use crate::config::WORKER_THREADS_VAR;

/// Worker threads when the variable is not set.
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// The most worker threads the variable may ask for.
pub const MAX_WORKER_THREADS: usize = 256;

/// A worker-thread count that could not be used, with the text that asked for it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{WORKER_THREADS_VAR}={0:?} is not a number of worker threads from 1 to {MAX_WORKER_THREADS}"
)]
pub struct WorkerThreadsError(String);

/// The worker threads that the variable's value (if set) asks for.
pub fn worker_threads(value: Option<&str>) -> Result<usize, WorkerThreadsError> {
    let Some(text) = value else {
        return Ok(DEFAULT_WORKER_THREADS);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(n),
        _ => Err(WorkerThreadsError(text.to_string())),
    }
}

/// Builds the runtime from the process environment; the error says what to fix.
pub fn build() -> Result<tokio::runtime::Runtime, String> {
    let value = std::env::var(WORKER_THREADS_VAR).ok();
    let workers = worker_threads(value.as_deref()).map_err(|e| e.to_string())?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_one_worker_and_a_count_is_taken_as_given() {
        assert_eq!(worker_threads(None).unwrap(), 1);
        assert_eq!(worker_threads(Some("4")).unwrap(), 4);
        assert_eq!(worker_threads(Some(" 2 ")).unwrap(), 2);
        assert_eq!(worker_threads(Some("256")).unwrap(), 256);
    }

    #[test]
    fn zero_too_many_or_text_is_an_error_that_names_the_variable() {
        for bad in ["0", "257", "two", "", "-1"] {
            let err = worker_threads(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains(WORKER_THREADS_VAR) && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
    }
}
