//! Authentication and authorization, as kube-apiserver's chain in small.
//!
//! **Who** ([`UserInfo`]): a client certificate the cluster CA signed (CN is the user,
//! O the groups), else a bearer token (a kubeadm bootstrap token Secret
//! `kube-system/bootstrap-token-<id>`, or a service token Secret
//! `kube-system/api-token-<id>`), else anonymous.
//!
//! **May they** ([`authorize`]): `system:masters` may do anything; anonymous callers only
//! read health and version (everything else is 401); bootstrap tokens only join;
//! nodes (`system:node:<name>` in `system:nodes`) pass kube's Node authorizer and
//! NodeRestriction rules — read nodes, services, endpoints, namespaces and events, read
//! and update only the pods bound to them, write only their own Node; `skiff:view` may
//! read everything but Secrets. Everyone else gets 403.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::Method;
use skiff_api::Object;
use skiff_api::kind::{self, ResourceKind};

use super::error::ApiError;
use super::registry::Registry;
use super::request::{ResourceRequest, Route};
use crate::security::{
    AGENT_JOINERS, MASTERS_GROUP, NODE_USER_PREFIX, NODES_GROUP, SERVER_JOINERS,
};

/// Group of every bootstrap token.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// Group that may read everything except Secrets.
pub const VIEW_GROUP: &str = "skiff:view";
/// How long a checked bearer token is trusted before it is looked up again (kube's
/// token cache TTL is 10 s as well); a revocation takes effect within it.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// An authenticated (or anonymous) caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (`skiff-admin`, `system:node:a`, `system:anonymous`).
    pub name: String,
    /// The groups.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The caller without credentials.
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".to_owned(),
            groups: vec!["system:unauthenticated".to_owned()],
        }
    }

    /// Whether the caller presented no credentials.
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    /// Whether the caller is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node a node's credentials name (`system:node:<name>` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(NODES_GROUP) {
            return None;
        }
        self.name
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|n| !n.is_empty())
    }

    /// The user of a client certificate the TLS layer already verified.
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let identity = skiff_pki::identity_of(der).ok()?;
        Some(UserInfo {
            name: identity.user,
            groups: identity.groups,
        })
    }
}

/// Bearer-token authentication against the token Secrets, with a short cache.
pub struct TokenAuthenticator {
    registry: Registry,
    cache: Mutex<HashMap<String, (UserInfo, Instant)>>,
}

impl TokenAuthenticator {
    /// Authenticates tokens stored through `registry`.
    pub fn new(registry: Registry) -> Self {
        TokenAuthenticator {
            registry,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The user a bearer token stands for; 401 for any token that is not a live one.
    pub async fn authenticate(&self, bearer: &str) -> Result<UserInfo, ApiError> {
        if let Some(user) = self.cached(bearer) {
            return Ok(user);
        }
        let (id, secret) = bearer
            .split_once('.')
            .filter(|(id, secret)| is_token_part(id, 6) && is_token_part(secret, 16))
            .ok_or_else(invalid_token)?;
        let user = match self.lookup("bootstrap-token", id).await? {
            Some(data) => bootstrap_user(id, secret, &data)?,
            None => match self.lookup("api-token", id).await? {
                Some(data) => api_user(secret, &data)?,
                None => return Err(invalid_token()),
            },
        };
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(bearer.to_owned(), (user.clone(), Instant::now()));
        Ok(user)
    }

    fn cached(&self, bearer: &str) -> Option<UserInfo> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(bearer)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(user, _)| user.clone())
    }

    /// The decoded `data` of `kube-system/<prefix>-<id>`, if that Secret exists.
    async fn lookup(
        &self,
        prefix: &str,
        id: &str,
    ) -> Result<Option<HashMap<String, String>>, ApiError> {
        let name = format!("{prefix}-{id}");
        let secret = match self
            .registry
            .get(&kind::SECRET, Some("kube-system"), &name)
            .await
        {
            Ok(secret) => secret,
            Err(error) if error.code == 404 => return Ok(None),
            Err(error) => return Err(error),
        };
        Ok(Some(secret_fields(&secret.to_value())))
    }
}

/// A Secret's `data` (as JSON), base64-decoded, as text; entries that are not UTF-8
/// are left out.
pub fn secret_fields(value: &serde_json::Value) -> HashMap<String, String> {
    let mut data = HashMap::new();
    if let Some(map) = value["data"].as_object() {
        for (key, encoded) in map {
            let decoded = encoded
                .as_str()
                .and_then(|e| base64::engine::general_purpose::STANDARD.decode(e).ok())
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some(text) = decoded {
                data.insert(key.clone(), text);
            }
        }
    }
    data
}

fn is_token_part(part: &str, length: usize) -> bool {
    part.len() == length
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn invalid_token() -> ApiError {
    ApiError::unauthorized("invalid bearer token")
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn expired(data: &HashMap<String, String>) -> bool {
    let Some(expiration) = data.get("expiration").filter(|e| !e.is_empty()) else {
        return false;
    };
    match expiration.parse::<skiff_api::meta::jiff::Timestamp>() {
        Ok(at) => at <= super::now_timestamp(),
        // An unreadable expiration is treated as expired, as kube does.
        Err(_) => true,
    }
}

/// kube's bootstrap token authenticator: `system:bootstrap:<id>` in
/// `system:bootstrappers` plus the token's extra groups.
fn bootstrap_user(
    id: &str,
    secret: &str,
    data: &HashMap<String, String>,
) -> Result<UserInfo, ApiError> {
    let stored = data
        .get("token-secret")
        .map(String::as_str)
        .unwrap_or_default();
    let usable = data
        .get("usage-bootstrap-authentication")
        .map(String::as_str)
        == Some("true");
    if !usable || !same_secret(stored, secret) || expired(data) {
        return Err(invalid_token());
    }
    let mut groups = vec![BOOTSTRAPPERS.to_owned()];
    groups.extend(
        data.get("auth-extra-groups")
            .into_iter()
            .flat_map(|g| g.split(','))
            .map(str::trim)
            .filter(|g| g.starts_with("system:bootstrappers:"))
            .map(str::to_owned),
    );
    Ok(UserInfo {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// A service token: the user and groups its Secret names.
fn api_user(secret: &str, data: &HashMap<String, String>) -> Result<UserInfo, ApiError> {
    let stored = data
        .get("token-secret")
        .map(String::as_str)
        .unwrap_or_default();
    let user = data.get("user").map(String::as_str).unwrap_or_default();
    if user.is_empty() || !same_secret(stored, secret) || expired(data) {
        return Err(invalid_token());
    }
    let mut groups: Vec<String> = data
        .get("groups")
        .into_iter()
        .flat_map(|g| g.split(','))
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    groups.push("system:authenticated".to_owned());
    Ok(UserInfo {
        name: user.to_owned(),
        groups,
    })
}

/// What a request asks to do, as kube's RequestInfo verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// Watch a collection or object.
    Watch,
    /// Create.
    Create,
    /// Replace.
    Update,
    /// Patch.
    Patch,
    /// Delete one object.
    Delete,
    /// Delete a collection.
    DeleteCollection,
}

impl Verb {
    /// The verb of a request for objects.
    pub fn of(method: &Method, has_name: bool, watch: bool) -> Option<Verb> {
        Some(match *method {
            Method::GET | Method::HEAD if watch => Verb::Watch,
            Method::GET | Method::HEAD if has_name => Verb::Get,
            Method::GET | Method::HEAD => Verb::List,
            Method::POST => Verb::Create,
            Method::PUT => Verb::Update,
            Method::PATCH => Verb::Patch,
            Method::DELETE if has_name => Verb::Delete,
            Method::DELETE => Verb::DeleteCollection,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// Paths outside the Kubernetes API that Skiff serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `GET /cacerts`: the cluster CA, for anyone (it is public).
    CaCerts,
    /// `POST /skiff/v1/join/agent`.
    JoinAgent,
    /// `POST /skiff/v1/join/server`.
    JoinServer,
}

impl Special {
    /// The special path `path` names, if any.
    pub fn of(path: &str) -> Option<Special> {
        match path.trim_end_matches('/') {
            "/cacerts" => Some(Special::CaCerts),
            "/skiff/v1/join/agent" => Some(Special::JoinAgent),
            "/skiff/v1/join/server" => Some(Special::JoinServer),
            _ => None,
        }
    }
}

/// Decides whether `user` may call a special path.
pub fn authorize_special(user: &UserInfo, special: Special) -> Result<(), ApiError> {
    let allowed = match special {
        Special::CaCerts => true,
        Special::JoinAgent => {
            user.in_group(MASTERS_GROUP)
                || user.in_group(AGENT_JOINERS)
                || user.in_group(SERVER_JOINERS)
        }
        Special::JoinServer => user.in_group(MASTERS_GROUP) || user.in_group(SERVER_JOINERS),
    };
    if allowed {
        Ok(())
    } else if user.is_anonymous() {
        Err(ApiError::unauthorized("Unauthorized"))
    } else {
        Err(ApiError::forbidden(format!(
            "User \"{}\" may not join the cluster with these credentials",
            user.name
        )))
    }
}

/// Decides whether `user` may make a request the router understood. `field_selector`
/// is the request's, `pod_node` looks up the node a pod is bound to (only nodes'
/// requests for single pods need it).
pub async fn authorize(
    registry: &Registry,
    user: &UserInfo,
    method: &Method,
    route: &Route,
    watch: bool,
    field_selector: Option<&str>,
) -> Result<(), ApiError> {
    if user.in_group(MASTERS_GROUP) {
        return Ok(());
    }
    let resource = match route {
        Route::Version | Route::Health => return Ok(()),
        _ if user.is_anonymous() => return Err(ApiError::unauthorized("Unauthorized")),
        Route::Metrics => {
            return Err(ApiError::forbidden(format!(
                "forbidden: User \"{}\" cannot get path \"/metrics\"",
                user.name
            )));
        }
        // Discovery and OpenAPI are for every authenticated caller (system:discovery).
        Route::Resource(resource) => resource,
        _ => return Ok(()),
    };
    let has_name = resource.name.is_some();
    let Some(verb) = Verb::of(method, has_name, watch) else {
        return Err(forbidden(user, "use", resource));
    };
    if user.in_group(VIEW_GROUP) && verb.reads() && resource.kind != &kind::SECRET {
        return Ok(());
    }
    if let Some(node) = user.node_name() {
        return authorize_node(registry, user, node, verb, resource, field_selector).await;
    }
    Err(forbidden(user, verb.as_str(), resource))
}

/// kube's Node authorizer and NodeRestriction admission, for the requests an agent
/// (or a node's credentials in kubectl) makes over REST.
async fn authorize_node(
    registry: &Registry,
    user: &UserInfo,
    node: &str,
    verb: Verb,
    resource: &ResourceRequest,
    field_selector: Option<&str>,
) -> Result<(), ApiError> {
    let kind = resource.kind;
    let sub = resource.subresource.as_deref();
    let name = resource.name.as_deref();
    let readable = [
        &kind::NODE,
        &kind::SERVICE,
        &kind::ENDPOINTS,
        &kind::NAMESPACE,
        &kind::EVENT,
    ];
    if verb.reads() && sub.is_none() && readable.contains(&kind) {
        return Ok(());
    }
    if kind == &kind::EVENT && matches!(verb, Verb::Create | Verb::Patch | Verb::Update) {
        return Ok(());
    }
    if kind == &kind::NODE && matches!(verb, Verb::Update | Verb::Patch) && name == Some(node) {
        return Ok(());
    }
    if kind == &kind::POD {
        match (verb, name, sub) {
            (Verb::List | Verb::Watch, None, None) => {
                if selects_node(field_selector, node) {
                    return Ok(());
                }
                return Err(forbidden_because(
                    user,
                    verb.as_str(),
                    resource,
                    &format!(
                        "node \"{node}\" may only list pods with fieldSelector spec.nodeName={node}"
                    ),
                ));
            }
            (Verb::Get, Some(pod), None)
            | (Verb::Update | Verb::Patch, Some(pod), Some("status"))
            | (Verb::Delete, Some(pod), None) => {
                let namespace = resource.namespace.as_deref();
                let bound = match registry.get(&kind::POD, namespace, pod).await {
                    Ok(Object::Pod(found)) => found.spec.as_ref().and_then(|s| s.node_name.clone()),
                    // A missing pod is a missing pod whoever asks (kube answers 403;
                    // a 404 leaks nothing a node cannot learn from its own watch).
                    Ok(_) | Err(_) => None,
                };
                if bound.as_deref() == Some(node) {
                    return Ok(());
                }
                return Err(forbidden_because(
                    user,
                    verb.as_str(),
                    resource,
                    &format!("no relationship found between node '{node}' and this object"),
                ));
            }
            _ => {}
        }
    }
    Err(forbidden(user, verb.as_str(), resource))
}

/// Whether a field selector pins `spec.nodeName` to `node`.
fn selects_node(field_selector: Option<&str>, node: &str) -> bool {
    field_selector.is_some_and(|selector| {
        selector.split(',').any(|term| {
            let term = term.trim();
            let value = term
                .strip_prefix("spec.nodeName==")
                .or_else(|| term.strip_prefix("spec.nodeName="));
            value == Some(node)
        })
    })
}

/// kube's Forbidden message: `pods is forbidden: User "u" cannot list resource "pods"
/// in API group "" in the namespace "demo"`.
fn forbidden(user: &UserInfo, verb: &str, resource: &ResourceRequest) -> ApiError {
    ApiError::forbidden(forbidden_message(user, verb, resource))
}

fn forbidden_because(
    user: &UserInfo,
    verb: &str,
    resource: &ResourceRequest,
    why: &str,
) -> ApiError {
    ApiError::forbidden(format!(
        "{}: {why}",
        forbidden_message(user, verb, resource)
    ))
}

fn forbidden_message(user: &UserInfo, verb: &str, resource: &ResourceRequest) -> String {
    let kind: &ResourceKind = resource.kind;
    let plural = match &resource.subresource {
        Some(sub) => format!("{}/{sub}", kind.plural),
        None => kind.plural.to_owned(),
    };
    let subject = match &resource.name {
        Some(name) => format!("{plural} \"{name}\" is forbidden"),
        None => format!("{plural} is forbidden"),
    };
    let scope = match &resource.namespace {
        Some(namespace) => format!(" in the namespace \"{namespace}\""),
        None if kind.namespaced => String::new(),
        None => " at the cluster scope".to_owned(),
    };
    format!(
        "{subject}: User \"{}\" cannot {verb} resource \"{plural}\" in API group \"{}\"{scope}",
        user.name, kind.group
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            groups: vec![NODES_GROUP.to_owned()],
        }
    }

    #[test]
    fn node_names_come_only_from_node_credentials() {
        assert_eq!(node("a").node_name(), Some("a"));
        let impostor = UserInfo {
            name: "system:node:a".to_owned(),
            groups: vec![],
        };
        assert_eq!(impostor.node_name(), None);
        assert_eq!(UserInfo::anonymous().node_name(), None);
    }

    #[test]
    fn field_selectors_must_pin_the_nodes_own_name() {
        assert!(selects_node(Some("spec.nodeName=a"), "a"));
        assert!(selects_node(
            Some("status.phase!=Failed,spec.nodeName==a"),
            "a"
        ));
        assert!(!selects_node(Some("spec.nodeName=b"), "a"));
        assert!(!selects_node(Some("spec.nodeName!=a"), "a"));
        assert!(!selects_node(None, "a"));
    }

    #[test]
    fn bootstrap_tokens_check_secret_usage_and_expiry() {
        let mut data: HashMap<String, String> = [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            (
                "auth-extra-groups",
                "system:bootstrappers:skiff:agent,system:masters",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let user = bootstrap_user("abcdef", "0123456789abcdef", &data).expect("valid");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        // Only system:bootstrappers:* extra groups are honoured, as in kube.
        assert_eq!(
            user.groups,
            vec![BOOTSTRAPPERS.to_owned(), AGENT_JOINERS.to_owned()]
        );
        assert!(bootstrap_user("abcdef", "0123456789abcdeX", &data).is_err());
        data.insert("expiration".to_owned(), "2001-01-01T00:00:00Z".to_owned());
        assert_eq!(
            bootstrap_user("abcdef", "0123456789abcdef", &data)
                .expect_err("expired")
                .code,
            401
        );
        data.insert("expiration".to_owned(), "2999-01-01T00:00:00Z".to_owned());
        assert!(bootstrap_user("abcdef", "0123456789abcdef", &data).is_ok());
        data.insert(
            "usage-bootstrap-authentication".to_owned(),
            "false".to_owned(),
        );
        assert!(bootstrap_user("abcdef", "0123456789abcdef", &data).is_err());
    }

    #[test]
    fn special_paths_admit_only_their_joiners() {
        let agent_joiner = UserInfo {
            name: "system:bootstrap:abcdef".to_owned(),
            groups: vec![BOOTSTRAPPERS.to_owned(), AGENT_JOINERS.to_owned()],
        };
        assert!(authorize_special(&agent_joiner, Special::JoinAgent).is_ok());
        assert_eq!(
            authorize_special(&agent_joiner, Special::JoinServer)
                .expect_err("agents cannot join servers")
                .code,
            403
        );
        assert_eq!(
            authorize_special(&UserInfo::anonymous(), Special::JoinAgent)
                .expect_err("anonymous")
                .code,
            401
        );
        assert!(authorize_special(&UserInfo::anonymous(), Special::CaCerts).is_ok());
        assert_eq!(
            Special::of("/skiff/v1/join/agent/"),
            Some(Special::JoinAgent)
        );
    }

    #[test]
    fn forbidden_messages_read_like_kubes() {
        let request = ResourceRequest {
            kind: &kind::POD,
            namespace: Some("demo".to_owned()),
            name: None,
            subresource: None,
        };
        assert_eq!(
            forbidden_message(&node("a"), "list", &request),
            "pods is forbidden: User \"system:node:a\" cannot list resource \"pods\" in API group \"\" in the namespace \"demo\""
        );
    }
}
