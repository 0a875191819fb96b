//! Bounded waits: every wait a test makes has an overall deadline and, past it, panics naming
//! what it waited for. A per-step timeout alone is not enough where something else (a
//! keep-alive, a heartbeat, an unrelated event) can arrive before it and start it again.
use std::time::{Duration, Instant};

/// How often `until` probes.
const POLL: Duration = Duration::from_millis(50);

/// Probes until `probe` returns `Some`; panics naming `what` once `limit` has passed.
pub fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(POLL);
    }
}

/// `future`'s output, or a panic naming `what` once `limit` has passed, however many
/// intermediate steps (chunks, skipped events) it took.
pub async fn within<F: IntoFuture>(what: &str, limit: Duration, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: not within {limit:?}"),
    }
}

/// Probes until `probe` returns `Some`, sleeping between probes without blocking the runtime;
/// panics naming `what` once `limit` has passed. A probe that itself hangs is cut off too.
pub async fn until_async<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    let probing = async {
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    match tokio::time::timeout_at(deadline, probing).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not within {limit:?}"),
    }
}
