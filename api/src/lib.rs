//! Skiff's resource object model, shared by the control plane, the node agent and the
//! CLI. It does no I/O.
//!
//! - [`kind`]: the registry of served kinds (names, group/version, scope, short names).
//! - [`object`]: [`Object`], one value of any stored kind.
//! - [`codec`]: YAML/JSON decoding with budgets, `List` expansion, strict fields.
//! - [`validation`]: Kubernetes' validation rules with field paths.
//! - [`defaults`]: Kubernetes' defaulting.
//! - [`selector`]: label selectors; [`quantity`]: resource quantities.
//! - [`patch`]: JSON, merge and strategic merge patches, as kube-apiserver applies them.
//! - [`managed`]: `managedFields` and server-side apply.
//! - [`schema`]: JSON schemas of every type, for strictness, explain and OpenAPI.
//! - [`meta`]: meta/v1 types (`ObjectMeta`, `Status`, `Table`, …).
//! - [`error`], [`path`]: field errors and field paths.
//!
//! Wire types come from `k8s-openapi`; see ARCHITECTURE.md for why.

pub mod codec;
pub mod defaults;
pub mod error;
pub mod kind;
pub mod managed;
pub mod meta;
pub mod object;
pub mod patch;
pub mod path;
pub mod quantity;
pub mod schema;
pub mod selector;
mod strict;
pub mod validation;

pub use codec::{Decoded, FieldValidation, Format, Limits, Manifest};
pub use error::{ErrorType, FieldError};
pub use kind::ResourceKind;
pub use object::Object;
pub use path::FieldPath;
pub use quantity::Quantity;
pub use selector::Selector;

/// The Kubernetes types Skiff serves, re-exported so other crates name one source.
pub mod types {
    pub use k8s_openapi::ByteString;
    pub use k8s_openapi::api::apps::v1::{
        Deployment, DeploymentSpec, DeploymentStatus, DeploymentStrategy, ReplicaSet,
        ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
    };
    pub use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
    pub use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    pub use k8s_openapi::api::core::v1::{
        Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, EnvVar,
        Event, Namespace, Node, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus, PodTemplateSpec,
        Probe, ResourceRequirements, Secret, Service, ServicePort, ServiceSpec, Toleration, Volume,
        VolumeMount,
    };
    pub use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityString;
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
}
