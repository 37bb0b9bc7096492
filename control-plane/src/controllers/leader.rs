//! Leader election over a coordination.k8s.io/v1 Lease, with client-go's
//! `leaderelection` semantics, so the controllers and the scheduler act on one member
//! at a time.
//!
//! A candidate takes the Lease `kube-system/skiff-controller-manager` when it is
//! absent, released (no holder), already its own, or expired: not changed for
//! `leaseDurationSeconds` as observed on this member's clock (client-go compares the
//! local time it last saw the record change, never the holder's `renewTime`, so clock
//! skew between members does not matter). Every write is a compare-and-swap on the
//! resourceVersion read, so two candidates never both win. The leader renews every
//! `retry_period`; a renewal that has not succeeded within `renew_deadline` ends its
//! leadership (the controllers stop) before the Lease can expire for the others. On
//! shutdown the leader releases the Lease (no holder, one-second duration), so a
//! successor takes over at once.

use std::time::Duration;

use skiff_api::Object;
use skiff_api::kind;
use skiff_api::meta::ObjectMeta;
use skiff_api::types::{Lease, LeaseSpec, MicroTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apiserver::{ApiError, Registry, Writer, now_timestamp};

/// Namespace of the controllers' Lease.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// Name of the controllers' Lease (one Lease for the controllers and the scheduler).
pub const LEASE_NAME: &str = "skiff-controller-manager";
/// Field manager of the elector's writes.
const MANAGER: &str = "skiff-controller-manager";
/// client-go's `JitterFactor`: a candidate retries after `retry_period` plus up to
/// 1.2 times it, so candidates do not retry in lockstep.
const JITTER_FACTOR: f64 = 1.2;

/// Timings of the election (kube-controller-manager's `--leader-elect-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    /// How long a Lease that has not changed stays held: candidates wait this long
    /// after they last saw it change before taking it over.
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a failed renewal before it gives up
    /// leadership; shorter than `lease_duration`, so it stops before others take over.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire, and the leader renews.
    pub retry_period: Duration,
}

impl Default for LeaderElection {
    /// kube-controller-manager's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Runs `start` whenever this member holds the controllers' Lease as `identity`, with a
/// token cancelled when it stops holding it (or on `shutdown`), then tries to acquire
/// it again. On `shutdown` a held Lease is released before returning.
pub async fn run_while_leader<F>(
    registry: Registry,
    shutdown: CancellationToken,
    identity: String,
    settings: LeaderElection,
    start: F,
) where
    F: Fn(Registry, CancellationToken) + Send + 'static,
{
    let mut elector = Elector::new(registry.clone(), identity, settings);
    loop {
        if !elector.acquire(&shutdown).await {
            return;
        }
        tracing::info!(identity = %elector.identity, lease = %format!("{LEASE_NAMESPACE}/{LEASE_NAME}"), "became leader");
        let leading = shutdown.child_token();
        start(registry.clone(), leading.clone());
        elector.renew(&shutdown).await;
        leading.cancel();
        if shutdown.is_cancelled() {
            elector.release().await;
            return;
        }
        tracing::warn!(identity = %elector.identity, "lost leadership: stopping the controllers");
    }
}

/// One candidate's view of the Lease: client-go's `LeaderElector`.
struct Elector {
    registry: Registry,
    identity: String,
    settings: LeaderElection,
    /// The Lease's spec as last read or written.
    observed: Option<LeaseSpec>,
    /// When `observed` last changed, on this member's clock.
    observed_at: Instant,
}

impl Elector {
    fn new(registry: Registry, identity: String, settings: LeaderElection) -> Self {
        Self {
            registry,
            identity,
            settings,
            observed: None,
            observed_at: Instant::now(),
        }
    }

    /// Whether the last record seen names this candidate.
    fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .and_then(|spec| spec.holder_identity.as_deref())
            == Some(self.identity.as_str())
    }

    /// Tries until the Lease is ours (`true`) or `shutdown` fires (`false`): at once,
    /// then every `retry_period` with jitter.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return false,
                attempt = tokio::time::timeout(self.settings.renew_deadline, self.try_acquire_or_renew()) => attempt,
            };
            if matches!(attempt, Ok(Ok(true))) {
                return true;
            }
            log_failed_attempt(&attempt);
            let jitter = rand::random::<f64>() * JITTER_FACTOR;
            let wait = self.settings.retry_period.mul_f64(1.0 + jitter);
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews every `retry_period` until a renewal fails for `renew_deadline` (lost
    /// leadership) or `shutdown` fires.
    async fn renew(&mut self, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.settings.retry_period) => {}
            }
            let deadline = Instant::now() + self.settings.renew_deadline;
            // client-go's `PollImmediateUntil(retryPeriod, tryAcquireOrRenew, deadline)`.
            loop {
                let attempt = tokio::select! {
                    () = shutdown.cancelled() => return,
                    attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()) => attempt,
                };
                if matches!(attempt, Ok(Ok(true))) {
                    break;
                }
                log_failed_attempt(&attempt);
                let next = Instant::now() + self.settings.retry_period;
                if next >= deadline {
                    tracing::warn!(identity = %self.identity, "failed to renew the lease within the renew deadline");
                    return;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(next) => {}
                }
            }
        }
    }

    /// client-go's `tryAcquireOrRenew`: `Ok(true)` when the Lease is ours after it.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, ApiError> {
        let now = micro_now();
        let duration_seconds =
            i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let current = match self
            .registry
            .get(&kind::LEASE, Some(LEASE_NAMESPACE), LEASE_NAME)
            .await
        {
            Ok(Object::Lease(lease)) => *lease,
            Ok(_) => return Ok(false),
            Err(error) if error.code == 404 && error.reason == "NotFound" => {
                let spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                };
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.to_owned()),
                        namespace: Some(LEASE_NAMESPACE.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec.clone()),
                };
                self.registry
                    .create(lease.into(), Some(LEASE_NAMESPACE), Writer::main(MANAGER))
                    .await?;
                self.observe(spec);
                return Ok(true);
            }
            Err(error) => return Err(error),
        };
        let old = current.spec.clone().unwrap_or_default();
        self.observe(old.clone());
        let old_holder = old.holder_identity.as_deref().unwrap_or_default();
        let old_duration = old.lease_duration_seconds.map_or(Duration::ZERO, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
        let valid = self.observed_at + old_duration > Instant::now();
        if !old_holder.is_empty() && valid && !self.is_leader() {
            return Ok(false);
        }
        let ours = old_holder == self.identity;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: if ours {
                old.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: if ours {
                old.lease_transitions
            } else {
                Some(old.lease_transitions.unwrap_or(0) + 1)
            },
            ..LeaseSpec::default()
        };
        self.write(current, spec).await?;
        Ok(true)
    }

    /// client-go's `release` (`ReleaseOnCancel`): a Lease this candidate holds gets no
    /// holder and a one-second duration, so a successor need not wait it out.
    async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        let released = tokio::time::timeout(self.settings.renew_deadline, async {
            let Object::Lease(current) = self
                .registry
                .get(&kind::LEASE, Some(LEASE_NAMESPACE), LEASE_NAME)
                .await?
            else {
                return Ok(false);
            };
            let old = current.spec.clone().unwrap_or_default();
            if old.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            let now = micro_now();
            let spec = LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: old.lease_transitions,
                ..LeaseSpec::default()
            };
            self.write(*current, spec).await.map(|()| true)
        })
        .await;
        match released {
            Ok(Ok(true)) => tracing::info!(identity = %self.identity, "released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(identity = %self.identity, %error, "failed to release the lease");
            }
            Err(_) => tracing::warn!(identity = %self.identity, "timed out releasing the lease"),
        }
    }

    /// Replaces `current`'s spec with `spec`, on the condition that `current` is still
    /// the stored version (a 409 otherwise), and observes what was written.
    async fn write(&mut self, current: Lease, spec: LeaseSpec) -> Result<(), ApiError> {
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(spec.clone()),
        };
        self.registry
            .update(
                lease.into(),
                Some(LEASE_NAMESPACE),
                LEASE_NAME,
                Writer::main(MANAGER),
            )
            .await?;
        self.observe(spec);
        Ok(())
    }

    /// Records `spec` as the last seen record, restarting the local expiry clock only
    /// when it changed.
    fn observe(&mut self, spec: LeaseSpec) {
        if self.observed.as_ref() != Some(&spec) {
            self.observed = Some(spec);
            self.observed_at = Instant::now();
        }
    }
}

/// The current time at the microsecond precision a `MicroTime` is stored with, so a
/// record read back equals the one written.
fn micro_now() -> MicroTime {
    let now = now_timestamp();
    let truncated =
        skiff_api::meta::jiff::Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now);
    MicroTime(truncated)
}

/// Failed attempts are routine for candidates (someone else leads) and while the
/// store or the `kube-system` namespace is not there yet; other errors degrade.
fn log_failed_attempt(attempt: &Result<Result<bool, ApiError>, tokio::time::error::Elapsed>) {
    match attempt {
        Ok(Ok(_)) => {}
        Ok(Err(error)) if matches!(error.code, 404 | 409 | 503 | 504) => {
            tracing::debug!(%error, "could not acquire or renew the lease");
        }
        Ok(Err(error)) => tracing::warn!(%error, "could not acquire or renew the lease"),
        Err(_) => tracing::debug!("acquiring or renewing the lease timed out"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;
    use crate::testing::{create, eventually, registry};

    /// Quick timings: a Lease expires after a second.
    fn quick() -> LeaderElection {
        LeaderElection {
            lease_duration: Duration::from_secs(1),
            renew_deadline: Duration::from_millis(600),
            retry_period: Duration::from_millis(100),
        }
    }

    /// Generous bound for anything the timings above make happen.
    const LIMIT: Duration = Duration::from_secs(15);

    /// Every `start` call: who started, and the token it got.
    type Starts = Arc<Mutex<Vec<(String, CancellationToken)>>>;

    /// Spawns a candidate as `identity`, recording its starts in `starts` and noting
    /// in `overlap` a start while another start's token is still live.
    fn candidate(
        tasks: &mut tokio::task::JoinSet<()>,
        registry: &Registry,
        identity: &str,
        starts: &Starts,
        overlap: &Arc<Mutex<bool>>,
    ) -> CancellationToken {
        let shutdown = CancellationToken::new();
        let (starts, overlap) = (starts.clone(), overlap.clone());
        let name = identity.to_owned();
        tasks.spawn(run_while_leader(
            registry.clone(),
            shutdown.clone(),
            identity.to_owned(),
            quick(),
            move |_registry, token| {
                let mut starts = starts.lock().unwrap();
                if starts.iter().any(|(_, live)| !live.is_cancelled()) {
                    *overlap.lock().unwrap() = true;
                }
                starts.push((name.clone(), token));
            },
        ));
        shutdown
    }

    async fn lease(registry: &Registry) -> LeaseSpec {
        match registry
            .get(&kind::LEASE, Some(LEASE_NAMESPACE), LEASE_NAME)
            .await
            .unwrap()
        {
            Object::Lease(lease) => lease.spec.unwrap(),
            other => panic!("not a lease: {other:?}"),
        }
    }

    async fn registry_with_kube_system() -> (tempfile::TempDir, Registry) {
        let (dir, registry) = registry().await;
        create(
            &registry,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
        )
        .await;
        (dir, registry)
    }

    fn live_starts(starts: &Starts) -> Vec<String> {
        starts
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, token)| !token.is_cancelled())
            .map(|(name, _)| name.clone())
            .collect()
    }

    #[tokio::test]
    async fn one_leader_at_a_time_and_a_release_hands_over() {
        let (_dir, registry) = registry_with_kube_system().await;
        let starts = Starts::default();
        let overlap = Arc::new(Mutex::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let shutdown_a = candidate(&mut tasks, &registry, "a", &starts, &overlap);
        let shutdown_b = candidate(&mut tasks, &registry, "b", &starts, &overlap);
        let leader = eventually("a leader", LIMIT, || {
            let live = live_starts(&starts);
            async move { live.first().cloned() }
        })
        .await;
        // Several lease durations later the leader still leads, alone, having renewed.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(live_starts(&starts), [leader.as_str()]);
        assert_eq!(starts.lock().unwrap().len(), 1);
        let held = lease(&registry).await;
        assert_eq!(held.holder_identity.as_deref(), Some(leader.as_str()));
        assert_eq!(held.lease_transitions, Some(0));
        assert_eq!(held.lease_duration_seconds, Some(1));
        assert!(held.renew_time.unwrap().0 > held.acquire_time.unwrap().0);

        // The leader shuts down: it releases, and the other takes over.
        let (leader_shutdown, follower) = if leader == "a" {
            (&shutdown_a, "b")
        } else {
            (&shutdown_b, "a")
        };
        leader_shutdown.cancel();
        eventually("the other candidate to lead", LIMIT, || {
            let live = live_starts(&starts);
            async move { (live == [follower]).then_some(()) }
        })
        .await;
        let held = lease(&registry).await;
        assert_eq!(held.holder_identity.as_deref(), Some(follower));
        assert_eq!(held.lease_transitions, Some(1));
        assert!(!*overlap.lock().unwrap(), "two leaders at once");

        shutdown_a.cancel();
        shutdown_b.cancel();
        while tasks.join_next().await.is_some() {}
        // The last leader released the Lease on its way out.
        let released = lease(&registry).await;
        assert_eq!(released.holder_identity.as_deref(), Some(""));
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert!(live_starts(&starts).is_empty());
    }

    #[tokio::test]
    async fn an_expired_lease_of_a_dead_holder_is_taken_over() {
        let (_dir, registry) = registry_with_kube_system().await;
        create(
            &registry,
            Some(LEASE_NAMESPACE),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": LEASE_NAME},
                   "spec": {"holderIdentity": "dead", "leaseDurationSeconds": 1, "leaseTransitions": 4,
                            "acquireTime": "2020-01-01T00:00:00.000000Z",
                            "renewTime": "2020-01-01T00:00:00.000000Z"}}),
        )
        .await;
        let starts = Starts::default();
        let overlap = Arc::new(Mutex::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let began = Instant::now();
        let shutdown = candidate(&mut tasks, &registry, "a", &starts, &overlap);
        eventually("the candidate to lead", LIMIT, || {
            let live = live_starts(&starts);
            async move { (live == ["a"]).then_some(()) }
        })
        .await;
        // Expiry is measured from when this candidate first saw the record, whatever
        // its renewTime says.
        assert!(began.elapsed() >= Duration::from_secs(1));
        let held = lease(&registry).await;
        assert_eq!(held.holder_identity.as_deref(), Some("a"));
        assert_eq!(held.lease_transitions, Some(5));
        assert_eq!(held.acquire_time, held.renew_time);
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
    }

    #[tokio::test]
    async fn a_failed_renewal_stops_the_controllers() {
        let (_dir, registry) = registry_with_kube_system().await;
        let starts = Starts::default();
        let overlap = Arc::new(Mutex::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let shutdown = candidate(&mut tasks, &registry, "a", &starts, &overlap);
        let token = eventually("the candidate to lead", LIMIT, || {
            let first = starts
                .lock()
                .unwrap()
                .first()
                .map(|(_, token)| token.clone());
            async move { first }
        })
        .await;
        // Another holder takes the Lease over with a fresh renewal and a long duration.
        registry
            .write(
                &kind::LEASE,
                Some(LEASE_NAMESPACE),
                LEASE_NAME,
                Writer::main("test"),
                |current| {
                    let Some(Object::Lease(current)) = current else {
                        panic!("no lease")
                    };
                    let mut lease = (**current).clone();
                    let spec = lease.spec.get_or_insert_default();
                    spec.holder_identity = Some("intruder".to_owned());
                    spec.lease_duration_seconds = Some(3600);
                    spec.renew_time = Some(micro_now());
                    Ok(lease.into())
                },
            )
            .await
            .unwrap();
        tokio::time::timeout(LIMIT, token.cancelled())
            .await
            .expect("the controllers stop after the renew deadline");
        // The intruder's Lease is valid: the candidate neither leads again nor
        // releases a Lease it does not hold.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(starts.lock().unwrap().len(), 1);
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        let held = lease(&registry).await;
        assert_eq!(held.holder_identity.as_deref(), Some("intruder"));
        assert_eq!(held.lease_duration_seconds, Some(3600));
    }
}
