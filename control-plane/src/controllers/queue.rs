//! A work queue of object keys, as client-go's: a key is queued at most once, is never
//! handed to two workers at once, comes back if it changed while being worked on, and
//! failed keys return after a per-key exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The first retry delay of a failing key.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting to be handed out (in `queue`) or to be queued again once done.
    dirty: HashSet<String>,
    /// Keys a worker holds.
    processing: HashSet<String>,
    /// Consecutive failures per key.
    failures: HashMap<String, u32>,
    shut_down: bool,
}

/// A deduplicating, rate-limited queue of keys.
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` (a no-op if it is already waiting).
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut state = self.lock();
        if state.shut_down || !state.dirty.insert(key.clone()) {
            return;
        }
        if !state.processing.contains(&key) {
            state.queue.push_back(key);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Queues `key` again after its back-off (5 ms doubling to 60 s per failure).
    pub fn retry(&self, key: &str) {
        let failures = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.to_owned()).or_insert(0);
            *failures = failures.saturating_add(1);
            *failures
        };
        let delay = BASE_DELAY
            .checked_mul(1u32 << failures.saturating_sub(1).min(20))
            .map_or(MAX_DELAY, |d| d.min(MAX_DELAY));
        self.add_after(key.to_owned(), delay);
    }

    /// Clears `key`'s failures (it succeeded).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key, waiting until there is one; `None` after [`WorkQueue::shut_down`].
    /// Call [`WorkQueue::done`] when finished with it.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.lock();
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    let more = !state.queue.is_empty();
                    drop(state);
                    if more {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
                if state.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// A worker finished `key`: if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &str) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.to_owned());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Stops handing out keys; waiting [`WorkQueue::get`] calls return `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.ready.notify_waiters();
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_never_held_twice() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.len(), 2);
        let first = queue.get().await.expect("a key");
        assert_eq!(first, "a");
        // Changed while held: not handed out again until done.
        queue.add("a");
        assert_eq!(queue.get().await.as_deref(), Some("b"));
        assert!(queue.is_empty());
        queue.done("a");
        assert_eq!(queue.get().await.as_deref(), Some("a"));
        queue.done("a");
        queue.done("b");
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_shut_down_ends_waiters() {
        let queue = WorkQueue::new();
        queue.add("k");
        let key = queue.get().await.expect("k");
        queue.retry(&key);
        queue.done(&key);
        let started = tokio::time::Instant::now();
        assert_eq!(queue.get().await.as_deref(), Some("k"));
        assert!(started.elapsed() >= BASE_DELAY);
        queue.retry("k");
        queue.done("k");
        let started = tokio::time::Instant::now();
        assert_eq!(queue.get().await.as_deref(), Some("k"));
        assert!(started.elapsed() >= BASE_DELAY * 2);
        queue.forget("k");
        queue.done("k");
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.get().await }
        });
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(waiter.await.expect("joined"), None);
    }
}
