//! Webhook signature checks, off the async worker threads and a bounded number at a time.
//!
//! A delivery is checked against the secret of each of its app's triggers of its source (up
//! to 100) before anything authenticates it: an HMAC over the whole body per trigger. Run on
//! the runtime's worker threads, a few large deliveries would hold every other request up;
//! here each check runs on the blocking pool, and at most `permits` of them at once (callers
//! beyond that wait their turn, asynchronously, within the request timeout).

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::problem::ApiError;

/// The checks of one process.
#[derive(Debug, Clone)]
pub struct Verifier {
    permits: Arc<Semaphore>,
}

impl Verifier {
    /// At most `permits` checks at once (at least one).
    pub fn new(permits: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// One check per core the process may use.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    /// Runs `check` on the blocking pool once a permit is free.
    pub async fn run<T, F>(&self, check: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            check()
        })
        .await
        .map_err(|e| ApiError::internal(&e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn checks_run_off_the_runtime_thread_and_at_most_permits_at_once() {
        let verifier = Verifier::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let runtime_thread = std::thread::current().id();
        let checks = (0..8).map(|_| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            verifier.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Blocking here would stall a current-thread runtime: it is not on it.
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
                std::thread::current().id()
            })
        });
        let threads = futures::future::join_all(checks).await;
        for thread in threads {
            let thread = thread.expect("the check ran");
            assert_ne!(thread, runtime_thread);
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} checks ran at once");
    }
}
