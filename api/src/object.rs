//! [`Object`]: one value of any stored kind, with the operations every kind shares.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::codec::{self, Decoded, FieldValidation};
use crate::error::FieldError;
use crate::kind::{self, ResourceKind};
use crate::{defaults, validation};

macro_rules! objects {
    ($($variant:ident($ty:ty) = $kind:path),* $(,)?) => {
        /// One object of a stored kind. Variants are boxed: the types are large.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object {
            $(
                #[doc = concat!("A `", stringify!($variant), "`.")]
                $variant(Box<$ty>),
            )*
        }

        impl Object {
            /// The kind of this object.
            pub fn kind(&self) -> &'static ResourceKind {
                match self {
                    $(Self::$variant(_) => &$kind,)*
                }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Self::$variant(object) => &object.metadata,)*
                }
            }

            /// The object's metadata, for changes.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Self::$variant(object) => &mut object.metadata,)*
                }
            }

            /// Serializes to JSON, with `apiVersion` and `kind` set.
            pub fn to_value(&self) -> Value {
                let value = match self {
                    $(Self::$variant(object) => serde_json::to_value(object),)*
                };
                value.expect("k8s-openapi types always serialize to JSON")
            }

            /// Decodes JSON this server stored itself, without the strict field walk
            /// that client input gets (it was checked when it was written).
            pub fn from_stored_json(kind: &'static ResourceKind, bytes: &[u8]) -> Result<Self, serde_json::Error> {
                $(
                    if kind == &$kind {
                        return serde_json::from_slice::<$ty>(bytes).map(|o| Self::$variant(Box::new(o)));
                    }
                )*
                Err(<serde_json::Error as serde::de::Error>::custom(format!("unknown kind {}", kind.kind)))
            }

            /// [`Object::from_stored_json`] from an already parsed value.
            pub fn from_stored_value(kind: &'static ResourceKind, value: Value) -> Result<Self, serde_json::Error> {
                $(
                    if kind == &$kind {
                        return serde_json::from_value::<$ty>(value).map(|o| Self::$variant(Box::new(o)));
                    }
                )*
                Err(<serde_json::Error as serde::de::Error>::custom(format!("unknown kind {}", kind.kind)))
            }

            /// Decodes `value` as `kind` (see [`codec::decode`]).
            pub fn decode(kind: &'static ResourceKind, value: Value, validation: FieldValidation) -> Result<Decoded<Self>, codec::Error> {
                $(
                    if kind == &$kind {
                        let decoded = codec::decode::<$ty>(value, validation)?;
                        return Ok(Decoded { object: Self::$variant(Box::new(decoded.object)), warnings: decoded.warnings });
                    }
                )*
                Err(codec::Error::UnknownKind { api_version: kind.api_version.to_owned(), kind: kind.kind.to_owned() })
            }
        }

        $(
            impl From<$ty> for Object {
                fn from(object: $ty) -> Self {
                    Self::$variant(Box::new(object))
                }
            }
        )*
    };
}

objects! {
    Namespace(Namespace) = kind::NAMESPACE,
    Pod(Pod) = kind::POD,
    Service(Service) = kind::SERVICE,
    Endpoints(Endpoints) = kind::ENDPOINTS,
    Node(Node) = kind::NODE,
    Event(Event) = kind::EVENT,
    Secret(Secret) = kind::SECRET,
    Deployment(Deployment) = kind::DEPLOYMENT,
    ReplicaSet(ReplicaSet) = kind::REPLICA_SET,
    Lease(Lease) = kind::LEASE,
}

impl Object {
    /// The object's name, or its `generateName` prefix, or empty.
    pub fn name(&self) -> &str {
        let metadata = self.metadata();
        metadata
            .name
            .as_deref()
            .or(metadata.generate_name.as_deref())
            .unwrap_or_default()
    }

    /// The object's namespace, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// Fills in defaults as Kubernetes does on create (see [`defaults`]).
    pub fn apply_defaults(&mut self) {
        defaults::apply(self);
    }

    /// Checks every validation rule for a create, returning all problems found.
    pub fn validate(&self) -> Vec<FieldError> {
        validation::validate(self)
    }

    /// Checks the rules for replacing `old` with `self`: the create rules plus
    /// immutable fields.
    pub fn validate_update(&self, old: &Object) -> Vec<FieldError> {
        let mut errors = validation::validate(self);
        errors.extend(validation::validate_immutable(old, self));
        errors
    }
}
