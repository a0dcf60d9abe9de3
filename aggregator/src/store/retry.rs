//! Retrying OpenSearch requests: what is worth retrying, and how long to wait.
//!
//! A cluster under load answers `429 Too Many Requests` (a full write queue), and a node that is
//! restarting or behind a load balancer answers `502`/`503`/`504` or drops the connection. None
//! of these mean the request was wrong, so the store waits and sends it again — with exponential
//! backoff and jitter, so that many writers do not come back in lock step — for as long as the
//! configured `retry_for`. The pipeline waits meanwhile (its source is held back by the bounded
//! channel), nothing is acknowledged upstream, and nothing is lost. The same holds per item of a
//! bulk request: items answered `429`/`5xx` are sent again, alone.

use std::time::{Duration, Instant};

/// Whether an HTTP status is worth sending the same request again for.
pub fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Exponential backoff with jitter under a total time budget.
#[derive(Debug)]
pub struct Backoff {
    started: Instant,
    budget: Duration,
    next: Duration,
    max: Duration,
    attempts: u32,
    seed: u64,
}

impl Backoff {
    /// First wait 100 ms, doubling up to 5 s, for at most `budget` in all.
    pub fn new(budget: Duration) -> Self {
        Backoff {
            started: Instant::now(),
            budget,
            next: Duration::from_millis(100),
            max: Duration::from_secs(5),
            attempts: 0,
            seed: Instant::now().elapsed().subsec_nanos() as u64 | 1,
        }
    }

    /// Attempts that failed so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The wait before the next attempt (75–125 % of the current step), or `None` once the
    /// budget would be exceeded.
    pub fn next_wait(&mut self) -> Option<Duration> {
        self.attempts += 1;
        // xorshift: jitter without a dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let factor = 0.75 + (self.seed % 1000) as f64 / 2000.0;
        let wait = self.next.mul_f64(factor);
        self.next = (self.next * 2).min(self.max);
        (self.started.elapsed() + wait <= self.budget).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_stop_at_the_budget() {
        let mut backoff = Backoff::new(Duration::from_secs(12));
        let waits: Vec<Duration> = std::iter::from_fn(|| backoff.next_wait())
            .take(20)
            .collect();
        assert!(waits[0] >= Duration::from_millis(75) && waits[0] <= Duration::from_millis(125));
        assert!(waits.windows(2).take(4).all(|w| w[1] > w[0]));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(6250)));
        // The budget is checked against the time already spent: nothing was spent here, so every
        // single wait fits.
        assert_eq!(waits.len(), 20);
        let mut spent = Backoff::new(Duration::from_millis(0));
        assert_eq!(spent.next_wait(), None);
        assert_eq!(spent.attempts(), 1);
    }

    #[test]
    fn load_and_unavailability_are_retried_bad_requests_are_not() {
        for status in [429, 500, 502, 503, 504] {
            assert!(retryable(status), "{status}");
        }
        for status in [200, 400, 401, 403, 404, 409, 413] {
            assert!(!retryable(status), "{status}");
        }
    }
}
