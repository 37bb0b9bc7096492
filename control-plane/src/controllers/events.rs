//! The events recorder: controllers and the scheduler say what they did or why they
//! could not, as `core/v1` Events on the object concerned. Repeats of the same event
//! (same object, type, reason and message) within [`DEDUP_WINDOW`] bump its `count` and
//! `lastTimestamp` instead of creating another, as client-go's correlator does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use skiff_api::types::Event;
use skiff_api::{Object, kind};

use crate::apiserver::{Registry, Writer, now_timestamp};

/// How long a repeated event is folded into the first.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// How many distinct recent events the recorder remembers.
const REMEMBERED: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Things going as planned.
    Normal,
    /// Something to look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Recent events by their dedup key: (namespace, name, when recorded).
type Recent = Arc<Mutex<HashMap<String, (String, String, Instant)>>>;

/// Records events for one component (`deployment-controller`, `default-scheduler`, …).
#[derive(Clone)]
pub struct Recorder {
    registry: Registry,
    component: &'static str,
    recent: Recent,
}

impl Recorder {
    /// A recorder writing through `registry` as `component`.
    pub fn new(registry: Registry, component: &'static str) -> Self {
        Self {
            registry,
            component,
            recent: Arc::default(),
        }
    }

    /// Records an event about `object` in the background (a failure to record is
    /// logged, never fatal).
    pub fn record(&self, object: &Object, event_type: EventType, reason: &str, message: &str) {
        let recorder = self.clone();
        let involved = reference(object);
        let reason = reason.to_owned();
        let message = message.to_owned();
        tokio::spawn(async move {
            if let Err(error) = recorder
                .write(involved, event_type, &reason, &message)
                .await
            {
                tracing::debug!(%error, %reason, "failed to record an event");
            }
        });
    }

    /// Creates the event, or bumps the count of the same recent one.
    async fn write(
        &self,
        involved: ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), crate::apiserver::ApiError> {
        let namespace = involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let dedup_key = format!(
            "{}|{}|{}|{}|{}",
            involved.uid.as_deref().unwrap_or_default(),
            involved.name.as_deref().unwrap_or_default(),
            event_type.as_str(),
            reason,
            message
        );
        let now = Time(now_timestamp());
        let existing = {
            let recent = self
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            recent
                .get(&dedup_key)
                .filter(|(_, _, at)| at.elapsed() < DEDUP_WINDOW)
                .map(|(ns, name, _)| (ns.clone(), name.clone()))
        };
        if let Some((event_namespace, name)) = existing {
            let bumped = self
                .registry
                .write(
                    &kind::EVENT,
                    Some(&event_namespace),
                    &name,
                    Writer::main(self.component),
                    |current| {
                        let Some(Object::Event(event)) = current else {
                            return Err(crate::apiserver::ApiError::not_found(&kind::EVENT, &name));
                        };
                        let mut event = (**event).clone();
                        event.count = Some(event.count.unwrap_or(1) + 1);
                        event.last_timestamp = Some(now.clone());
                        event.metadata.resource_version = None;
                        Ok(Object::from(event))
                    },
                )
                .await;
            if bumped.is_ok() {
                return Ok(());
            }
        }
        let name = format!(
            "{}.{:x}",
            involved.name.as_deref().unwrap_or("object"),
            rand::random::<u64>()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: involved,
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(event_type.as_str().to_owned()),
            source: Some(EventSource {
                component: Some(self.component.to_owned()),
                host: None,
            }),
            reporting_component: Some(self.component.to_owned()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        self.registry
            .create(
                Object::from(event),
                Some(&namespace),
                Writer::main(self.component),
            )
            .await?;
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= REMEMBERED {
            recent.retain(|_, (_, _, at)| at.elapsed() < DEDUP_WINDOW);
            if recent.len() >= REMEMBERED {
                recent.clear();
            }
        }
        recent.insert(dedup_key, (namespace, name, Instant::now()));
        Ok(())
    }
}

/// An `ObjectReference` to `object`.
pub fn reference(object: &Object) -> ObjectReference {
    let metadata = object.metadata();
    ObjectReference {
        api_version: Some(object.kind().api_version.to_owned()),
        kind: Some(object.kind().kind.to_owned()),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        resource_version: metadata.resource_version.clone(),
        field_path: None,
    }
}
