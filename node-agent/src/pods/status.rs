//! A pod's status as kubelet reports it, computed from what the pod worker sees: the
//! phase (kubelet's `getPhase`), the conditions, and one status per container.
//!
//! Pure: no I/O and no clock (`now` is passed in), so every rule is unit-tested.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// What one container looks like to the pod worker right now.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    /// The container's name in the pod spec.
    pub name: String,
    /// The image as the spec names it.
    pub image: String,
    /// `sha256:…` of the image in use, once pulled.
    pub image_id: Option<String>,
    /// `skiff://<id>` of the current (or last) container instance.
    pub container_id: Option<String>,
    /// How often the container has been restarted.
    pub restart_count: i32,
    /// Its current state.
    pub state: State,
    /// How its previous instance ended, if it was restarted.
    pub last_terminated: Option<Terminated>,
    /// Its readiness probe passed (or it has none and runs).
    pub ready: bool,
    /// Its startup probe passed (or it has none and runs).
    pub started: bool,
}

/// A container's state.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Not running: being pulled, created, or backing off.
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `ErrImagePull`, `ImagePullBackOff`,
        /// `CrashLoopBackOff`, `CreateContainerConfigError`, …
        reason: String,
        /// Details for humans; may be empty.
        message: String,
    },
    /// Running since `started_at`.
    Running {
        /// When its process started.
        started_at: Timestamp,
    },
    /// Ended.
    Terminated(Terminated),
}

/// How a container instance ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    /// The exit code (128 + signal when killed).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`, …
    pub reason: String,
    /// Details for humans; may be empty.
    pub message: String,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// `skiff://<id>` of that instance.
    pub container_id: Option<String>,
}

/// Everything the pod status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// The sandbox (namespaces) exists.
    pub sandbox_ready: bool,
    /// Init containers, in spec order.
    pub init_containers: Vec<ContainerView>,
    /// App containers, in spec order.
    pub containers: Vec<ContainerView>,
    /// `spec.restartPolicy` (`Always` when unset).
    pub restart_policy: String,
    /// The node's IP.
    pub host_ip: Option<String>,
    /// The pod's IP, once it has one.
    pub pod_ip: Option<String>,
    /// When the agent first started working on the pod.
    pub start_time: Option<Timestamp>,
}

/// The pod's phase, as kubelet's `getPhase` computes it; a terminal phase in
/// `previous` is kept (a pod never leaves Succeeded or Failed).
pub fn phase(previous: Option<&str>, view: &PodView) -> &'static str {
    if let Some(terminal @ ("Succeeded" | "Failed")) = previous {
        return if terminal == "Succeeded" {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let always = view.restart_policy == "Always";
    let never = view.restart_policy == "Never";
    // Init containers first: a failed one under Never fails the pod; any not done
    // keeps it Pending.
    for init in &view.init_containers {
        match &init.state {
            State::Terminated(t) if t.exit_code == 0 => {}
            State::Terminated(_) if never => return "Failed",
            _ => return "Pending",
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in &view.containers {
        match &container.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // A container waiting to be restarted has run: it counts as stopped.
            State::Waiting { .. } if container.last_terminated.is_some() => {
                stopped += 1;
                if container
                    .last_terminated
                    .as_ref()
                    .is_some_and(|t| t.exit_code == 0)
                {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if always {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if never {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// The pod's status: phase, conditions, IPs and container statuses. Fields the agent
/// does not own (`qosClass`, `PodScheduled`, nominated node, …) are kept from
/// `previous`; a condition's `lastTransitionTime` moves only when its status changes.
pub fn build(previous: &PodStatus, view: &PodView, now: Timestamp) -> PodStatus {
    let phase = phase(previous.phase.as_deref(), view);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let mut status = previous.clone();
    status.phase = Some(phase.to_owned());
    status.host_ip.clone_from(&view.host_ip);
    status.host_ips = view
        .host_ip
        .as_ref()
        .map(|ip| vec![k8s_openapi::api::core::v1::HostIP { ip: ip.clone() }]);
    status.pod_ip.clone_from(&view.pod_ip);
    status.pod_ips = view
        .pod_ip
        .as_ref()
        .map(|ip| vec![PodIP { ip: ip.clone() }]);
    if status.start_time.is_none() {
        status.start_time = view.start_time.map(Time);
    }
    status.init_container_statuses = (!view.init_containers.is_empty())
        .then(|| view.init_containers.iter().map(container_status).collect());
    status.container_statuses = Some(view.containers.iter().map(container_status).collect());

    let not_done_init: Vec<&str> = view
        .init_containers
        .iter()
        .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready || !matches!(c.state, State::Running { .. }))
        .map(|c| c.name.as_str())
        .collect();
    let mut conditions = Vec::new();
    conditions.push(condition(
        "PodReadyToStartContainers",
        view.sandbox_ready,
        None,
        None,
    ));
    conditions.push(if not_done_init.is_empty() || phase == "Succeeded" {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                not_done_init.join(" ")
            )),
        )
    });
    let (ready, reason, message) = if terminal {
        (false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    conditions.push(condition("ContainersReady", ready, reason, message.clone()));
    conditions.push(condition("Ready", ready, reason, message));
    status.conditions = Some(merge_conditions(
        previous.conditions.as_deref().unwrap_or_default(),
        conditions,
        now,
    ));
    status
}

/// A condition without its times (filled by [`merge_conditions`]).
fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        ..PodCondition::default()
    }
}

/// The new conditions with `lastTransitionTime` kept where the status is unchanged,
/// plus the previous conditions the agent does not own (e.g. `PodScheduled`), in
/// Kubernetes' order: owned ones first as computed, then the others.
fn merge_conditions(
    previous: &[PodCondition],
    computed: Vec<PodCondition>,
    now: Timestamp,
) -> Vec<PodCondition> {
    let mut merged: Vec<PodCondition> = previous
        .iter()
        .filter(|old| !computed.iter().any(|new| new.type_ == old.type_))
        .cloned()
        .collect();
    for mut new in computed {
        let old = previous.iter().find(|old| old.type_ == new.type_);
        new.last_transition_time = match old {
            Some(old) if old.status == new.status => old.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
        merged.push(new);
    }
    merged
}

/// One container's `ContainerStatus`.
fn container_status(view: &ContainerView) -> ContainerStatus {
    let running = matches!(view.state, State::Running { .. });
    ContainerStatus {
        name: view.name.clone(),
        image: view.image.clone(),
        image_id: view.image_id.clone().unwrap_or_default(),
        container_id: view.container_id.clone(),
        restart_count: view.restart_count,
        ready: view.ready && running,
        started: Some(view.started && running),
        state: Some(state(&view.state)),
        last_state: Some(
            view.last_terminated
                .as_ref()
                .map(|t| ContainerState {
                    terminated: Some(terminated(t)),
                    ..ContainerState::default()
                })
                .unwrap_or_default(),
        ),
        ..ContainerStatus::default()
    }
}

/// A [`State`] as Kubernetes' `ContainerState`.
fn state(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..ContainerState::default()
        },
    }
}

/// A [`Terminated`] as Kubernetes' `ContainerStateTerminated`.
fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: (!t.message.is_empty()).then(|| t.message.clone()),
        started_at: t.started_at.map(Time),
        finished_at: t.finished_at.map(Time),
        container_id: t.container_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid time")
    }

    fn view(name: &str, state: State) -> ContainerView {
        ContainerView {
            name: name.to_owned(),
            image: "busybox".to_owned(),
            image_id: None,
            container_id: None,
            restart_count: 0,
            state,
            last_terminated: None,
            ready: true,
            started: true,
        }
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.to_owned(),
            message: String::new(),
            started_at: Some(at(0)),
            finished_at: Some(at(1)),
            container_id: None,
        })
    }

    fn waiting(reason: &str) -> State {
        State::Waiting {
            reason: reason.to_owned(),
            message: String::new(),
        }
    }

    fn pod(policy: &str, init: Vec<ContainerView>, containers: Vec<ContainerView>) -> PodView {
        PodView {
            sandbox_ready: true,
            init_containers: init,
            containers,
            restart_policy: policy.to_owned(),
            host_ip: Some("10.0.0.1".to_owned()),
            pod_ip: None,
            start_time: Some(at(0)),
        }
    }

    #[test]
    fn phase_follows_kubelet() {
        let running = State::Running { started_at: at(0) };
        let cases = [
            (
                pod(
                    "Always",
                    vec![],
                    vec![view("a", waiting("ContainerCreating"))],
                ),
                "Pending",
            ),
            (
                pod("Always", vec![], vec![view("a", running.clone())]),
                "Running",
            ),
            (pod("Always", vec![], vec![view("a", exited(0))]), "Running"),
            (
                pod("Never", vec![], vec![view("a", exited(0))]),
                "Succeeded",
            ),
            (
                pod("OnFailure", vec![], vec![view("a", exited(0))]),
                "Succeeded",
            ),
            (pod("Never", vec![], vec![view("a", exited(1))]), "Failed"),
            (
                pod("OnFailure", vec![], vec![view("a", exited(1))]),
                "Running",
            ),
            (
                pod(
                    "Never",
                    vec![],
                    vec![view("a", exited(0)), view("b", running.clone())],
                ),
                "Running",
            ),
            (
                pod(
                    "Always",
                    vec![view("i", running.clone())],
                    vec![view("a", waiting("PodInitializing"))],
                ),
                "Pending",
            ),
            (
                pod(
                    "Never",
                    vec![view("i", exited(2))],
                    vec![view("a", waiting("PodInitializing"))],
                ),
                "Failed",
            ),
            (
                pod(
                    "OnFailure",
                    vec![view("i", exited(2))],
                    vec![view("a", waiting("PodInitializing"))],
                ),
                "Pending",
            ),
            (
                pod(
                    "Never",
                    vec![view("i", exited(0))],
                    vec![view("a", running)],
                ),
                "Running",
            ),
        ];
        for (view, expected) in cases {
            assert_eq!(phase(None, &view), expected, "{view:?}");
        }
    }

    #[test]
    fn a_crash_looping_container_keeps_the_pod_running() {
        let mut crashing = view("a", waiting("CrashLoopBackOff"));
        crashing.last_terminated = Some(match exited(1) {
            State::Terminated(t) => t,
            _ => unreachable!(),
        });
        crashing.restart_count = 3;
        assert_eq!(
            phase(None, &pod("Always", vec![], vec![crashing])),
            "Running"
        );
    }

    #[test]
    fn terminal_phases_stick() {
        let view = pod(
            "Always",
            vec![],
            vec![view("a", State::Running { started_at: at(0) })],
        );
        assert_eq!(phase(Some("Succeeded"), &view), "Succeeded");
        assert_eq!(phase(Some("Failed"), &view), "Failed");
        assert_eq!(phase(Some("Pending"), &view), "Running");
    }

    #[test]
    fn conditions_keep_their_transition_time_and_foreign_conditions() {
        let scheduled = PodCondition {
            type_: "PodScheduled".to_owned(),
            status: "True".to_owned(),
            last_transition_time: Some(Time(at(-5))),
            ..PodCondition::default()
        };
        let previous = PodStatus {
            phase: Some("Pending".to_owned()),
            qos_class: Some("BestEffort".to_owned()),
            conditions: Some(vec![scheduled.clone()]),
            ..PodStatus::default()
        };
        let mut container = view("a", waiting("ContainerCreating"));
        container.ready = false;
        let first = build(
            &previous,
            &pod("Always", vec![], vec![container.clone()]),
            at(1),
        );
        assert_eq!(first.qos_class.as_deref(), Some("BestEffort"));
        let conditions = first.conditions.clone().expect("conditions");
        assert_eq!(conditions[0], scheduled);
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [a]")
        );
        assert_eq!(ready.last_transition_time, Some(Time(at(1))));

        // Unchanged status: the time stays; changed: it moves.
        let second = build(&first, &pod("Always", vec![], vec![container]), at(2));
        let ready = |s: &PodStatus| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .expect("Ready")
        };
        assert_eq!(ready(&second).last_transition_time, Some(Time(at(1))));
        let running = view("a", State::Running { started_at: at(2) });
        let third = build(&second, &pod("Always", vec![], vec![running]), at(3));
        assert_eq!(ready(&third).status, "True");
        assert_eq!(ready(&third).last_transition_time, Some(Time(at(3))));
        assert_eq!(third.phase.as_deref(), Some("Running"));
        assert_eq!(third.start_time, Some(Time(at(0))));
        assert_eq!(third.host_ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn container_statuses_carry_states_and_last_state() {
        let mut restarted = view("a", State::Running { started_at: at(5) });
        restarted.restart_count = 1;
        restarted.container_id = Some("skiff://x-2".to_owned());
        restarted.last_terminated = Some(Terminated {
            exit_code: 137,
            signal: Some(9),
            reason: "OOMKilled".to_owned(),
            message: String::new(),
            started_at: Some(at(1)),
            finished_at: Some(at(4)),
            container_id: Some("skiff://x-1".to_owned()),
        });
        let status = build(
            &PodStatus::default(),
            &pod("Always", vec![], vec![restarted]),
            at(6),
        );
        let container = &status.container_statuses.expect("statuses")[0];
        assert_eq!(container.restart_count, 1);
        assert!(container.ready);
        assert_eq!(container.started, Some(true));
        let last = container
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("last state");
        assert_eq!(last.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(last.exit_code, 137);
        assert!(status.init_container_statuses.is_none());
    }

    #[test]
    fn completed_pods_are_not_ready_with_pod_completed() {
        let status = build(
            &PodStatus::default(),
            &pod("Never", vec![], vec![view("a", exited(0))]),
            at(1),
        );
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
    }
}
