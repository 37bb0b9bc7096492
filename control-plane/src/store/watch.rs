//! Watches: every change under a prefix after a revision, in revision order, exactly
//! once, with progress notifications.
//!
//! A watcher subscribes to the live feed *before* reading the history, so nothing
//! falls between the two; events it already delivered (revision ≤ the last one it
//! sent) are skipped. If it falls behind the live feed, it re-reads the history from
//! where it was; if that was compacted, or a snapshot replaced the state, the watch
//! ends with [`WatchMessage::Expired`] and the client must relist.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state_machine::Reader;
use super::{Error, Event, Result};

/// Capacity of the live feed; a watcher further behind re-reads the history.
const FEED_CAPACITY: usize = 1024;
/// Capacity of each watcher's outgoing queue.
const WATCHER_QUEUE: usize = 256;

/// What a watcher receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes, in revision order.
    Events(Vec<Event>),
    /// Every change up to this revision has been delivered (a bookmark).
    Progress(u64),
    /// The watch cannot continue: its history was compacted or replaced by a snapshot.
    /// This is the last message.
    Expired,
}

/// A change published by the state machine after an apply commits.
#[derive(Clone, Debug)]
enum Change {
    /// Events of one apply batch, and the revision the batch ends at.
    Events(Arc<[Event]>, u64),
    /// A snapshot replaced the state at this revision.
    Reset(u64),
}

/// The live feed from the state machine to watchers.
#[derive(Clone)]
pub(crate) struct WatchHub {
    feed: broadcast::Sender<Change>,
}

impl WatchHub {
    pub(super) fn new() -> Self {
        Self {
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    /// Publishes one apply batch's events (already committed).
    pub(super) fn publish(&self, events: Vec<Event>, revision: u64) {
        // No receivers is fine: nobody is watching.
        let _ = self.feed.send(Change::Events(events.into(), revision));
    }

    /// Tells every watcher that the state was replaced by a snapshot.
    pub(super) fn reset(&self, revision: u64) {
        let _ = self.feed.send(Change::Reset(revision));
    }

    /// Starts a watch on `tasks`: events under `prefix` after `after_revision` (0 for
    /// "from now on"). Fails at once with [`Error::Compacted`] if the history no longer
    /// reaches back that far.
    pub(super) fn watch(
        &self,
        reader: &Reader,
        prefix: &str,
        after_revision: u64,
        progress_interval: Option<Duration>,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<WatchStream> {
        let feed = self.feed.subscribe();
        let (backlog, caught_up) = if after_revision == 0 {
            (Vec::new(), reader.revision())
        } else {
            reader.history(prefix, after_revision)?
        };
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let watcher = Watcher {
            reader: reader.clone(),
            prefix: prefix.to_owned(),
            feed,
            tx,
            last: caught_up.max(after_revision),
            progress_interval,
        };
        tasks.spawn(watcher.run(backlog, cancel));
        Ok(WatchStream { rx })
    }
}

/// The receiving end of a watch; dropping it ends the watch.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<WatchMessage>,
}

impl WatchStream {
    /// The next message, or `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<WatchMessage> {
        self.rx.recv().await
    }
}

impl tokio_stream::Stream for WatchStream {
    type Item = WatchMessage;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

struct Watcher {
    reader: Reader,
    prefix: String,
    feed: broadcast::Receiver<Change>,
    tx: mpsc::Sender<WatchMessage>,
    /// Every event up to this revision has been delivered (or skipped as unwatched).
    last: u64,
    progress_interval: Option<Duration>,
}

impl Watcher {
    async fn run(mut self, backlog: Vec<Event>, cancel: CancellationToken) {
        if !backlog.is_empty() && !self.deliver(WatchMessage::Events(backlog), &cancel).await {
            return;
        }
        let interval = self.progress_interval.unwrap_or(Duration::from_secs(3600));
        let mut sent_since_tick = false;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => return,
                () = self.tx.closed() => return,
                _ = ticker.tick(), if self.progress_interval.is_some() => {
                    if std::mem::take(&mut sent_since_tick) {
                        continue;
                    }
                    WatchMessage::Progress(self.last)
                }
                change = self.feed.recv() => match self.on_change(change) {
                    Ok(Some(events)) => {
                        sent_since_tick = true;
                        WatchMessage::Events(events)
                    }
                    Ok(None) => continue,
                    Err(()) => WatchMessage::Expired,
                },
            };
            let expired = message == WatchMessage::Expired;
            if !self.deliver(message, &cancel).await || expired {
                return;
            }
        }
    }

    /// Sends one message; false when the watcher is gone or the store is stopping (a
    /// reader that stopped reading must not hold up shutdown).
    async fn deliver(&self, message: WatchMessage, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => false,
            sent = self.tx.send(message) => sent.is_ok(),
        }
    }

    /// Turns a feed message into the events to deliver; `Err` when the watch expired.
    fn on_change(
        &mut self,
        change: Result<Change, broadcast::error::RecvError>,
    ) -> Result<Option<Vec<Event>>, ()> {
        let events: Vec<Event> = match change {
            Ok(Change::Events(batch, revision)) => {
                if revision <= self.last {
                    return Ok(None);
                }
                let events = batch
                    .iter()
                    .filter(|e| e.revision() > self.last && e.kv.key.starts_with(&self.prefix))
                    .cloned()
                    .collect();
                self.last = revision;
                events
            }
            // A watcher that already stands at or past the snapshot started from the new
            // state: it lost nothing. Any other must relist.
            Ok(Change::Reset(revision)) if revision <= self.last => return Ok(None),
            Ok(Change::Reset(_)) | Err(broadcast::error::RecvError::Closed) => return Err(()),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                match self.reader.history(&self.prefix, self.last) {
                    Ok((events, revision)) => {
                        self.last = self.last.max(revision);
                        events
                    }
                    Err(Error::Compacted { .. }) => return Err(()),
                    Err(error) => {
                        tracing::warn!(%error, prefix = %self.prefix, "watch could not re-read the history");
                        return Err(());
                    }
                }
            }
        };
        Ok(if events.is_empty() {
            None
        } else {
            Some(events)
        })
    }
}
