//! Handlers for resource requests: GET, LIST, WATCH, POST, PUT, PATCH, DELETE and
//! deletecollection on objects, and their `/status`, `/scale`, `/binding`, `/log`,
//! `/exec` and (namespaces) `/finalize` subresources.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use skiff_api::codec::{self, FieldValidation, Format, Limits};
use skiff_api::patch::PatchType;
use skiff_api::types::{Node, Pod};
use skiff_api::{FieldError, FieldPath, Object, ResourceKind, Selector, kind};
use skiff_proto::node::LogsRequest;
use skiff_proto::node::agent_client::AgentClient;
use std::time::Duration;

use super::error::ApiError;
use super::exec::ExecOptions;
use super::managed;
use super::protobuf;
use super::registry::{
    DeleteOptions, Deleted, ListOptions, Writer, forbidden, now_timestamp, supported_field,
};
use super::request::ResourceRequest;
use super::server::{Body, Context};
use super::strategy::Part;
use super::table::{self, IncludeObject};
use super::watch::{Watch, WatchParams};

/// Kubernetes' request body cap (CVE-2019-11253).
pub const MAX_BODY_BYTES: usize = Limits::REQUEST.max_bytes;

/// A parsed request: query parameters and negotiated response shape.
struct Call {
    params: HashMap<String, String>,
    /// The client asked for a `meta/v1 Table`.
    table: Option<IncludeObject>,
    /// `fieldManager`, or the user agent's product name as Kubernetes derives it.
    manager: String,
    /// `dryRun=All`: run everything but the store write.
    dry_run: bool,
}

impl Call {
    fn new(request: &Request<Incoming>) -> Result<Self, ApiError> {
        let params: HashMap<String, String> =
            form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let dry_run = match params.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: {other:?}: supported values: \"All\""
                )));
            }
        };
        let accept = header(request, ACCEPT.as_str());
        let table = accept
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
            .then(|| {
                params
                    .get("includeObject")
                    .and_then(|v| table::parse_include(v))
                    .unwrap_or(IncludeObject::Metadata)
            });
        let manager = match params.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(manager) => manager.clone(),
            None => header(request, USER_AGENT.as_str())
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        if manager.len() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be longer than 128 characters",
            ));
        }
        Ok(Self {
            params,
            table,
            manager,
            dry_run,
        })
    }

    /// The writer of a write through `part`.
    fn writer(&self, part: Part) -> Writer<'_> {
        Writer {
            manager: &self.manager,
            part,
            apply: false,
            dry_run: self.dry_run,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.param(name).is_some_and(|v| v == "1" || v == "true")
    }

    fn validation(&self) -> Result<FieldValidation, ApiError> {
        FieldValidation::parse(self.param("fieldValidation").unwrap_or_default()).ok_or_else(|| {
            ApiError::bad_request("fieldValidation must be one of Strict, Warn or Ignore")
        })
    }
}

fn header(request: &Request<Incoming>, name: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A JSON reply, with `Warning` headers for dropped fields.
fn reply(status: StatusCode, body: &Value, warnings: &[FieldError]) -> Response<Body> {
    let mut response = super::server::json_response(status, body, "application/json");
    for warning in warnings {
        let text = format!("299 - {:?}", warning.message());
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

/// One object, as JSON or as a one-row Table.
fn object_reply(call: &Call, status: StatusCode, object: &Object) -> Response<Body> {
    match call.table {
        Some(include) => {
            let mut rendered = table::render(
                object.kind(),
                std::slice::from_ref(object),
                now_timestamp(),
                include,
            );
            rendered
                .metadata
                .resource_version
                .clone_from(&object.metadata().resource_version);
            let body = serde_json::to_value(rendered).expect("a Table serializes");
            reply(status, &body, &[])
        }
        None => reply(status, &object.to_value(), &[]),
    }
}

/// Handles a request for objects of one kind.
pub async fn handle(
    ctx: &Context,
    resource: ResourceRequest,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let call = Call::new(&request)?;
    let method = request.method().clone();
    match resource.subresource.as_deref() {
        None => main_resource(ctx, &call, &resource, method, request).await,
        Some("status") => status(ctx, &call, &resource, method, request).await,
        Some("finalize") if resource.kind == &kind::NAMESPACE => {
            finalize(ctx, &call, &resource, method, request).await
        }
        Some("scale") if is_scalable(resource.kind) => {
            scale(ctx, &call, &resource, method, request).await
        }
        Some("binding") if resource.kind == &kind::POD && method == Method::POST => {
            bind(ctx, &call, &resource, request).await
        }
        Some("log") if resource.kind == &kind::POD && method == Method::GET => {
            log(ctx, &call, &resource).await
        }
        Some("exec")
            if resource.kind == &kind::POD && (method == Method::GET || method == Method::POST) =>
        {
            exec(ctx, &resource, request).await
        }
        Some(subresource) => Err(ApiError::no_route(&format!(
            "{}/{subresource}",
            resource.kind.plural
        ))),
    }
}

async fn main_resource(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
    method: Method,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let kind = resource.kind;
    let namespace = resource.namespace.as_deref();
    match (method, resource.name.as_deref()) {
        (Method::GET, name) if call.flag("watch") => {
            let mut options = list_options(kind, call)?;
            if let Some(name) = name {
                options
                    .fields
                    .push(("metadata.name".to_owned(), name.to_owned(), true));
            }
            watch(ctx, call, kind, namespace, options).await
        }
        (Method::GET, None) => list(ctx, call, kind, namespace).await,
        (Method::GET, Some(name)) => {
            let object = ctx.registry.get(kind, namespace, name).await?;
            Ok(object_reply(call, StatusCode::OK, &object))
        }
        (Method::POST, None) => {
            let (object, warnings) = decode_body(request, kind, call).await?;
            check_namespace(&object, namespace)?;
            if let Some(namespace) = namespace.filter(|_| kind.namespaced)
                && namespace_terminating(ctx, namespace).await?
            {
                return Err(terminating(kind, namespace, admission_name(&object)));
            }
            let created = ctx
                .registry
                .create(object, namespace, call.writer(Part::Main))
                .await?;
            Ok(reply(StatusCode::CREATED, &created.to_value(), &warnings))
        }
        (Method::PUT, Some(name)) => {
            let (object, warnings) = decode_body(request, kind, call).await?;
            check_namespace(&object, namespace)?;
            check_name(&object, name)?;
            let updated = ctx
                .registry
                .update(object, namespace, name, call.writer(Part::Main))
                .await?;
            Ok(reply(StatusCode::OK, &updated.to_value(), &warnings))
        }
        (Method::PATCH, Some(name)) => patch(ctx, call, resource, name, Part::Main, request).await,
        (Method::DELETE, Some(name)) => {
            let options = delete_options(call, request).await?;
            match ctx.registry.delete(kind, namespace, name, &options).await? {
                Deleted::Gone(object) => Ok(reply(StatusCode::OK, &object.to_value(), &[])),
                // Kubernetes answers 200 to a namespace it keeps terminating.
                Deleted::Pending(object) if kind == &kind::NAMESPACE => {
                    Ok(reply(StatusCode::OK, &object.to_value(), &[]))
                }
                Deleted::Pending(object) => {
                    Ok(reply(StatusCode::ACCEPTED, &object.to_value(), &[]))
                }
            }
        }
        (Method::DELETE, None) => delete_collection(ctx, call, kind, namespace, request).await,
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

async fn list(
    ctx: &Context,
    call: &Call,
    kind: &'static ResourceKind,
    namespace: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let options = list_options(kind, call)?;
    let page = ctx.registry.list(kind, namespace, &options).await?;
    let revision = page.revision.to_string();
    if let Some(include) = call.table {
        let mut rendered = table::render(kind, &page.items, now_timestamp(), include);
        rendered.metadata.resource_version = Some(revision);
        rendered.metadata.continue_ = page.continue_token;
        let body = serde_json::to_value(rendered).expect("a Table serializes");
        return Ok(reply(StatusCode::OK, &body, &[]));
    }
    let items: Vec<Value> = page.items.iter().map(Object::to_value).collect();
    let mut metadata = json!({"resourceVersion": revision});
    if let Some(token) = page.continue_token {
        metadata["continue"] = Value::String(token);
    }
    Ok(reply(
        StatusCode::OK,
        &json!({"apiVersion": kind.api_version, "kind": format!("{}List", kind.kind), "metadata": metadata, "items": items}),
        &[],
    ))
}

async fn watch(
    ctx: &Context,
    call: &Call,
    kind: &'static ResourceKind,
    namespace: Option<&str>,
    options: ListOptions,
) -> Result<Response<Body>, ApiError> {
    let resource_version = match call.param("resourceVersion").filter(|rv| !rv.is_empty()) {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
    };
    let timeout =
        match call.param("timeoutSeconds") {
            Some(seconds) => Duration::from_secs(seconds.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {seconds:?}"))
            })?),
            None => WatchParams::default_timeout(),
        };
    let params = WatchParams {
        resource_version,
        timeout,
        bookmarks: call.flag("allowWatchBookmarks"),
        send_initial_events: call.flag("sendInitialEvents"),
        table: call.table,
    };
    let watch = Watch::start(
        &ctx.registry,
        kind,
        namespace,
        options,
        params,
        ctx.cancel.clone(),
    )
    .await?;
    let guard = ctx.metrics.watch_started(kind);
    let chunks = futures_util::stream::unfold((watch, guard), |(mut watch, guard)| async move {
        let chunk = watch.next_chunk().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(chunk)),
            (watch, guard),
        ))
    });
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .header("Transfer-Encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(chunks)))
        .expect("static headers are valid");
    Ok(response)
}

/// PATCH of the main resource or `/status`.
async fn patch(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
    name: &str,
    part: Part,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let kind = resource.kind;
    let namespace = resource.namespace.as_deref();
    let validation = call.validation()?;
    let (content_type, body) = read_body(request).await?;
    let content_type = content_type.unwrap_or_default();
    let patch_type = PatchType::from_content_type(&content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
    if patch_type == PatchType::Apply {
        if part == Part::Status {
            return Err(ApiError::method_not_allowed(
                "server-side apply of the status subresource",
            ));
        }
        return apply(ctx, call, resource, name, &body, validation).await;
    }
    let patch_value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    // A resourceVersion in the patch is a precondition; otherwise the patch applies to
    // whatever is current, and a lost race is retried against the new state.
    let pinned = mentions_resource_version(&patch_value);
    let mut warnings = Vec::new();
    let written = ctx
        .registry
        .write(kind, namespace, name, call.writer(part), |current| {
            let current = current.ok_or_else(|| ApiError::not_found(kind, name))?;
            let patched =
                skiff_api::patch::patch(kind, &current.to_value(), &patch_value, patch_type)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut decoded =
                Object::decode(kind, patched, validation).map_err(|e| ApiError::decode(&e))?;
            if !pinned {
                decoded.object.metadata_mut().resource_version = None;
            }
            warnings = decoded.warnings;
            Ok(decoded.object)
        })
        .await?;
    Ok(reply(StatusCode::OK, &written.object.to_value(), &warnings))
}

/// Whether a patch or applied configuration sets `metadata.resourceVersion` (a merge
/// patch's key or a JSON patch's path), which makes it a precondition.
fn mentions_resource_version(patch: &Value) -> bool {
    match patch {
        Value::Object(map) => map
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .is_some_and(|rv| !rv.is_null()),
        Value::Array(operations) => operations.iter().any(|op| {
            op["path"] == "/metadata/resourceVersion" && op["op"] != "remove" && op["op"] != "test"
        }),
        _ => false,
    }
}

/// Server-side apply (`application/apply-patch+yaml`): creates or updates the object
/// with `fieldManager`'s ownership of the fields it applies.
async fn apply(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
    name: &str,
    body: &Bytes,
    validation: FieldValidation,
) -> Result<Response<Body>, ApiError> {
    let kind = resource.kind;
    let namespace = resource.namespace.as_deref();
    if call.param("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::invalid_other(
            "PatchOptions.meta.k8s.io",
            "",
            &[FieldError::required(
                &FieldPath::new("fieldManager"),
                "is required for apply patch",
            )],
        ));
    }
    let force = call.flag("force");
    let mut documents = codec::parse_documents(body, Format::Yaml, &Limits::REQUEST)
        .map_err(|e| ApiError::decode(&e))?;
    let Some(applied) = documents.pop().filter(|_| documents.is_empty()) else {
        return Err(ApiError::bad_request(
            "the apply patch must hold exactly one object",
        ));
    };
    check_body_kind(&applied, kind)?;
    // The applied configuration alone must be well-formed (its unknown fields are
    // reported with their paths), even though it need not be a whole object.
    let checked =
        Object::decode(kind, applied.clone(), validation).map_err(|e| ApiError::decode(&e))?;
    check_namespace(&checked.object, namespace)?;
    if applied["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        check_name(&checked.object, name)?;
    }
    if let Some(namespace) = namespace.filter(|_| kind.namespaced)
        && namespace_terminating(ctx, namespace).await?
    {
        // Applying to an existing object is an update, which Kubernetes allows.
        match ctx.registry.get(kind, Some(namespace), name).await {
            Ok(_) => {}
            Err(error) if error.code == 404 => {
                return Err(terminating(kind, namespace, name));
            }
            Err(error) => return Err(error),
        }
    }
    let manager = call.manager.clone();
    let applied_pins = mentions_resource_version(&applied);
    let written = ctx
        .registry
        .write(
            kind,
            namespace,
            name,
            Writer {
                manager: &manager,
                part: Part::Main,
                apply: true,
                dry_run: call.dry_run,
            },
            |current| {
                let live = current.map(Object::to_value);
                let merged = skiff_api::managed::apply(
                    kind,
                    live.as_ref(),
                    &applied,
                    &manager,
                    force,
                    &managed::timestamp(),
                )
                .map_err(|e| ApiError::apply_conflict(kind, name, &e))?;
                let mut decoded = Object::decode(kind, merged, FieldValidation::Ignore)
                    .map_err(|e| ApiError::decode(&e))?;
                if !applied_pins {
                    decoded.object.metadata_mut().resource_version = None;
                }
                Ok(decoded.object)
            },
        )
        .await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply(status, &written.object.to_value(), &checked.warnings))
}

/// The `/status` subresource.
async fn status(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
    method: Method,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let kind = resource.kind;
    let namespace = resource.namespace.as_deref();
    let Some(name) = resource.name.as_deref() else {
        return Err(ApiError::no_route(&format!("{}/status", kind.plural)));
    };
    if !kind.has_status() {
        return Err(ApiError::no_route(&format!("{}/status", kind.plural)));
    }
    match method {
        Method::GET => {
            let object = ctx.registry.get(kind, namespace, name).await?;
            Ok(object_reply(call, StatusCode::OK, &object))
        }
        Method::PUT => {
            let (object, warnings) = decode_body(request, kind, call).await?;
            check_namespace(&object, namespace)?;
            check_name(&object, name)?;
            let updated = ctx
                .registry
                .update(object, namespace, name, call.writer(Part::Status))
                .await?;
            Ok(reply(StatusCode::OK, &updated.to_value(), &warnings))
        }
        Method::PATCH => patch(ctx, call, resource, name, Part::Status, request).await,
        other => Err(ApiError::method_not_allowed(other.as_str())),
    }
}

/// The `namespaces/{name}/finalize` subresource: a PUT of the Namespace that changes
/// only its `spec.finalizers`; removing the last finalizer of a namespace being
/// deleted deletes it.
async fn finalize(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
    method: Method,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let kind = resource.kind;
    let Some(name) = resource.name.as_deref() else {
        return Err(ApiError::no_route(&format!("{}/finalize", kind.plural)));
    };
    if method != Method::PUT {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let (object, warnings) = decode_body(request, kind, call).await?;
    check_name(&object, name)?;
    let updated = ctx
        .registry
        .update(object, None, name, call.writer(Part::Finalize))
        .await?;
    Ok(reply(StatusCode::OK, &updated.to_value(), &warnings))
}

fn is_scalable(kind: &ResourceKind) -> bool {
    kind == &kind::DEPLOYMENT || kind == &kind::REPLICA_SET
}

/// The `autoscaling/v1 Scale` view of a Deployment or ReplicaSet.
fn scale_of(object: &Object) -> Value {
    let (spec_replicas, status_replicas, selector) = match object {
        Object::Deployment(d) => (
            d.spec.as_ref().and_then(|s| s.replicas),
            d.status.as_ref().and_then(|s| s.replicas),
            d.spec.as_ref().map(|s| s.selector.clone()),
        ),
        Object::ReplicaSet(r) => (
            r.spec.as_ref().and_then(|s| s.replicas),
            r.status.as_ref().map(|s| s.replicas),
            r.spec.as_ref().map(|s| s.selector.clone()),
        ),
        _ => (None, None, None),
    };
    let selector = Selector::from_label_selector(selector.as_ref())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let metadata = object.metadata();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata.name,
            "namespace": metadata.namespace,
            "uid": metadata.uid,
            "resourceVersion": metadata.resource_version,
            "creationTimestamp": metadata.creation_timestamp,
        },
        "spec": {"replicas": spec_replicas.unwrap_or(0)},
        "status": {"replicas": status_replicas.unwrap_or(0), "selector": selector},
    })
}

/// How a PUT or PATCH turns the current Scale into the new one.
type ScaleChange = dyn Fn(&Value) -> Result<Value, ApiError> + Send + Sync;

/// The `/scale` subresource: GET, PUT and PATCH of a Scale that reads and writes the
/// object's `spec.replicas`.
async fn scale(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
    method: Method,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let kind = resource.kind;
    let namespace = resource.namespace.as_deref();
    let Some(name) = resource.name.as_deref() else {
        return Err(ApiError::no_route(&format!("{}/scale", kind.plural)));
    };
    let change: Box<ScaleChange> = match method {
        Method::GET => {
            let object = ctx.registry.get(kind, namespace, name).await?;
            return Ok(reply(StatusCode::OK, &scale_of(&object), &[]));
        }
        Method::PUT => {
            let (_, body) = read_body(request).await?;
            let new: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the Scale is not valid JSON: {e}")))?;
            Box::new(move |_| Ok(new.clone()))
        }
        Method::PATCH => {
            let (content_type, body) = read_body(request).await?;
            let content_type = content_type.unwrap_or_default();
            let patch_type = PatchType::from_content_type(&content_type)
                .filter(|t| *t != PatchType::Apply)
                .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
            // As for objects: a resourceVersion in the patch is a precondition, else
            // the patch applies to whatever is current.
            let pinned = mentions_resource_version(&patch);
            Box::new(move |current| {
                let mut scale = skiff_api::patch::patch(kind, current, &patch, patch_type)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                if !pinned && let Some(metadata) = scale["metadata"].as_object_mut() {
                    metadata.remove("resourceVersion");
                }
                Ok(scale)
            })
        }
        other => return Err(ApiError::method_not_allowed(other.as_str())),
    };
    let written = ctx
        .registry
        .write(kind, namespace, name, call.writer(Part::Main), |current| {
            let current = current.ok_or_else(|| ApiError::not_found(kind, name))?;
            let new_scale = change(&scale_of(current))?;
            let replicas = new_scale["spec"]["replicas"].as_i64().unwrap_or(0);
            let invalid = |detail: &str| {
                ApiError::invalid_other(
                    "Scale.autoscaling",
                    name,
                    &[FieldError::invalid(
                        &FieldPath::new("spec").child("replicas"),
                        replicas,
                        detail,
                    )],
                )
            };
            if replicas < 0 {
                return Err(invalid("must be greater than or equal to 0"));
            }
            let replicas = i32::try_from(replicas)
                .map_err(|_| invalid("must be less than or equal to 2147483647"))?;
            let mut object = current.clone();
            object.metadata_mut().resource_version = new_scale["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_owned);
            match &mut object {
                Object::Deployment(d) => d.spec.get_or_insert_default().replicas = Some(replicas),
                Object::ReplicaSet(r) => r.spec.get_or_insert_default().replicas = Some(replicas),
                _ => {}
            }
            Ok(object)
        })
        .await?;
    Ok(reply(StatusCode::OK, &scale_of(&written.object), &[]))
}

/// `POST pods/{name}/binding`: assigns a pod to a node, once.
async fn bind(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let namespace = resource.namespace.as_deref();
    let name = resource.name.as_deref().unwrap_or_default();
    let (_, body) = read_body(request).await?;
    let binding: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the Binding is not valid JSON: {e}")))?;
    let node = binding["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("a Binding needs target.name"))?
        .to_owned();
    ctx.registry
        .write(
            &kind::POD,
            namespace,
            name,
            call.writer(Part::Binding),
            |current| {
                let Some(Object::Pod(pod)) = current else {
                    return Err(ApiError::not_found(&kind::POD, name));
                };
                let mut pod = pod.clone();
                let spec = pod.spec.get_or_insert_default();
                if let Some(bound) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
                    return Err(ApiError::conflict_with(
                        &kind::POD,
                        name,
                        &format!("pod {name} is already assigned to node \"{bound}\""),
                    ));
                }
                if pod.metadata.deletion_timestamp.is_some() {
                    return Err(ApiError::conflict_with(
                        &kind::POD,
                        name,
                        &format!("pod {name} is being deleted, cannot be assigned to a host"),
                    ));
                }
                spec.node_name = Some(node.clone());
                Ok(Object::Pod(pod))
            },
        )
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}),
        &[],
    ))
}

/// The annotation naming the container `logs` and `exec` default to.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// How long connecting to a node's agent may take.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Log chunks buffered between the node and the client.
const LOG_BUFFER: usize = 16;

/// `GET pods/{name}/log`: the node that runs the pod serves its logs; they are
/// streamed through as they come (`follow=true` keeps the stream open).
async fn log(
    ctx: &Context,
    call: &Call,
    resource: &ResourceRequest,
) -> Result<Response<Body>, ApiError> {
    let namespace = resource.namespace.as_deref();
    let name = resource.name.as_deref().unwrap_or_default();
    let Object::Pod(pod) = ctx.registry.get(&kind::POD, namespace, name).await? else {
        return Err(ApiError::not_found(&kind::POD, name));
    };
    let container = log_container(&pod, call.param("container"))?;
    let request = logs_request(call, &pod, container)?;
    let mut client = agent_client(ctx, &pod, "to read the logs of").await?;
    let mut stream = client
        .logs(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                ApiError::bad_request(status.message())
            }
            tonic::Code::Unavailable => ApiError::unavailable(format!(
                "no connection to node {} to read the logs of pod {name}: {}",
                pod.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or_default(),
                status.message()
            )),
            _ => ApiError::internal(status.message()),
        })?
        .into_inner();
    // The gRPC stream is not `Sync`, as response bodies must be: a task forwards it,
    // and stops when the client hangs up or the server shuts down.
    let (sender, receiver) = tokio::sync::mpsc::channel(LOG_BUFFER);
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = cancel.cancelled() => return,
                () = sender.closed() => return,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(chunk)) if chunk.data.is_empty() => {}
                Ok(Some(chunk)) => {
                    let frame = Frame::data(Bytes::from(chunk.data));
                    if sender
                        .send(Ok::<_, std::convert::Infallible>(frame))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(%status, "a log stream from a node failed");
                    return;
                }
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/plain")
        .header("Transfer-Encoding", "chunked")
        .body(BodyExt::boxed(body))
        .expect("static headers are valid"))
}

/// `GET|POST pods/{name}/exec`: runs a command in a container of the pod, on the
/// node that runs it, over a WebSocket (see the `exec` module). The pod, container
/// and node are checked before the upgrade, so failures are plain HTTP errors (which
/// is also what kubectl's SPDY fallback then reports).
async fn exec(
    ctx: &Context,
    resource: &ResourceRequest,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let options = ExecOptions::parse(request.uri().query().unwrap_or_default())?;
    let namespace = resource.namespace.as_deref();
    let name = resource.name.as_deref().unwrap_or_default();
    let Object::Pod(pod) = ctx.registry.get(&kind::POD, namespace, name).await? else {
        return Err(ApiError::not_found(&kind::POD, name));
    };
    let container = log_container(&pod, options.container.as_deref())?;
    let client = agent_client(ctx, &pod, "to run a command in").await?;
    let start = options.start(pod.metadata.uid.clone().unwrap_or_default(), container);
    super::exec::serve(request, client, start, &options, ctx.cancel.clone())
}

/// A connection to the agent of the node the pod is bound to; `action` completes
/// "no connection to node N … pod P" in errors.
async fn agent_client(
    ctx: &Context,
    pod: &Pod,
    action: &str,
) -> Result<AgentClient<tonic::transport::Channel>, ApiError> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let Some(node_name) = node_name.filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let unreachable = |why: &str| {
        ApiError::unavailable(format!(
            "no connection to node {node_name} {action} pod {name}: {why}"
        ))
    };
    let Object::Node(node) = ctx.registry.get(&kind::NODE, None, node_name).await? else {
        return Err(ApiError::not_found(&kind::NODE, node_name));
    };
    let endpoint = agent_endpoint(&node).ok_or_else(|| {
        unreachable("the node has no InternalIP address or kubelet endpoint port")
    })?;
    let mut endpoint = tonic::transport::Endpoint::from_shared(endpoint)
        .map_err(|e| unreachable(&e.to_string()))?;
    if let Some(security) = &ctx.security {
        // Agents serve TLS with their node certificate; we call with ours.
        let https = endpoint
            .uri()
            .to_string()
            .replacen("http://", "https://", 1);
        endpoint = tonic::transport::Endpoint::from_shared(https)
            .and_then(|e| e.tls_config(security.agent_tls.clone()))
            .map_err(|e| unreachable(&e.to_string()))?;
    }
    let channel = endpoint
        .connect_timeout(AGENT_CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| unreachable(&e.to_string()))?;
    Ok(AgentClient::new(channel))
}

/// The container whose log a request reads, defaulted as Kubernetes does: the only
/// container, else the one the `kubectl.kubernetes.io/default-container` annotation
/// names; any container (init and ephemeral ones included) may be named.
fn log_container(pod: &Pod, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let containers: Vec<&str> = spec
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let init_containers: Vec<&str> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let ephemeral_containers: Vec<&str> = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let exists = |container: &str| {
        containers
            .iter()
            .chain(&init_containers)
            .chain(&ephemeral_containers)
            .any(|c| *c == container)
    };
    if let Some(container) = requested.filter(|c| !c.is_empty()) {
        if !exists(container) {
            return Err(ApiError::bad_request(format!(
                "container {container} is not valid for pod {name}"
            )));
        }
        return Ok(container.to_owned());
    }
    if let [only] = containers.as_slice() {
        return Ok((*only).to_owned());
    }
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER))
        .filter(|c| exists(c));
    if let Some(container) = annotated {
        return Ok(container.clone());
    }
    let mut message = format!(
        "a container name must be specified for pod {name}, choose one of: [{}]",
        containers.join(" ")
    );
    if !init_containers.is_empty() {
        message.push_str(&format!(
            " or one of the init containers: [{}]",
            init_containers.join(" ")
        ));
    }
    Err(ApiError::bad_request(message))
}

/// The agent's `Logs` request from the query (`follow`, `tailLines`, `sinceSeconds`
/// or `sinceTime`, `timestamps`, `previous`, `limitBytes`), checked as Kubernetes
/// checks `PodLogOptions`.
fn logs_request(call: &Call, pod: &Pod, container: String) -> Result<LogsRequest, ApiError> {
    let number = |name: &str, minimum: i64| -> Result<Option<i64>, ApiError> {
        let Some(text) = call.param(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let value: i64 = text
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid {name} {text:?}")))?;
        if value < minimum {
            return Err(ApiError::bad_request(format!(
                "{name}: Invalid value: {value}: must be greater than or equal to {minimum}"
            )));
        }
        Ok(Some(value))
    };
    let tail_lines = number("tailLines", 0)?;
    let since_seconds = number("sinceSeconds", 1)?;
    let limit_bytes = number("limitBytes", 1)?;
    let since_time = match call.param("sinceTime").filter(|v| !v.is_empty()) {
        Some(text) => Some(
            text.parse::<skiff_api::meta::jiff::Timestamp>()
                .map_err(|e| ApiError::bad_request(format!("invalid sinceTime {text:?}: {e}")))?
                .as_second(),
        ),
        None => None,
    };
    let since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        // The agent takes a point in time: seconds since the epoch.
        (Some(seconds), None) => now_timestamp().as_second().saturating_sub(seconds).max(1),
        (None, Some(time)) => time.max(1),
        (None, None) => 0,
    };
    Ok(LogsRequest {
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        container,
        follow: call.flag("follow"),
        tail_lines: tail_lines.unwrap_or(-1),
        since_seconds: since,
        timestamps: call.flag("timestamps"),
        previous: call.flag("previous"),
        limit_bytes: limit_bytes.unwrap_or(0),
    })
}

/// Where a node's agent serves: `http://<InternalIP>:<kubelet endpoint port>`.
fn agent_endpoint(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let address = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    let port = status
        .daemon_endpoints
        .as_ref()?
        .kubelet_endpoint
        .as_ref()?
        .port;
    if port <= 0 {
        return None;
    }
    let host = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address,
    };
    Some(format!("http://{host}:{port}"))
}

/// DELETE of a collection: every object that matches the selectors, as a list.
async fn delete_collection(
    ctx: &Context,
    call: &Call,
    kind: &'static ResourceKind,
    namespace: Option<&str>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let options = delete_options(call, request).await?;
    let list_options = list_options(kind, call)?;
    let page = ctx.registry.list(kind, namespace, &list_options).await?;
    let mut deleted = Vec::new();
    for object in page.items {
        let object_namespace = object.namespace().map(str::to_owned);
        match ctx
            .registry
            .delete(kind, object_namespace.as_deref(), object.name(), &options)
            .await
        {
            Ok(Deleted::Gone(object) | Deleted::Pending(object)) => {
                deleted.push(object.to_value());
            }
            // Deleted by someone else meanwhile.
            Err(error) if error.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(reply(
        StatusCode::OK,
        &json!({"apiVersion": kind.api_version, "kind": format!("{}List", kind.kind), "metadata": {"resourceVersion": page.revision.to_string()}, "items": deleted}),
        &[],
    ))
}

/// List options from the query: selectors (checked against the kind's selectable
/// fields), limit and continue.
fn list_options(kind: &ResourceKind, call: &Call) -> Result<ListOptions, ApiError> {
    let labels = match call.param("labelSelector").filter(|s| !s.is_empty()) {
        Some(text) => Some(
            Selector::parse(text)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        ),
        None => None,
    };
    let mut fields = Vec::new();
    for requirement in call
        .param("fieldSelector")
        .unwrap_or_default()
        .split(',')
        .filter(|r| !r.is_empty())
    {
        let (field, value, equal) = if let Some((field, value)) = requirement.split_once("!=") {
            (field, value, false)
        } else if let Some((field, value)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            (field, value, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: '{requirement}'; can't understand '{requirement}'"
            )));
        };
        let field = field.trim();
        if !supported_field(kind, field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
        fields.push((field.to_owned(), value.trim().to_owned(), equal));
    }
    let limit = match call.param("limit") {
        Some(limit) => limit
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        None => 0,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: call
            .param("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
    })
}

/// Reads a body within the size cap.
pub async fn read_body(request: Request<Incoming>) -> Result<(Option<String>, Bytes), ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ApiError::too_large(MAX_BODY_BYTES)
            } else {
                ApiError::bad_request(format!("reading the request body failed: {error}"))
            }
        })?;
    Ok((content_type, body.to_bytes()))
}

/// The object in a body's JSON must be of the kind the URL names.
fn check_body_kind(value: &Value, kind: &'static ResourceKind) -> Result<(), ApiError> {
    if codec::kind_of(value) == Some(kind) {
        return Ok(());
    }
    let text = |field: &str| value.get(field).and_then(Value::as_str).unwrap_or_default();
    Err(ApiError::bad_request(format!(
        "the API version in the data ({}) and kind ({}) do not match the requested {} {}",
        text("apiVersion"),
        text("kind"),
        kind.api_version,
        kind.kind
    )))
}

/// Decodes a body (JSON, YAML or Kubernetes protobuf) into an object of `kind`,
/// honouring `fieldValidation`; returns the warnings for dropped fields.
async fn decode_body(
    request: Request<Incoming>,
    kind: &'static ResourceKind,
    call: &Call,
) -> Result<(Object, Vec<FieldError>), ApiError> {
    let validation = call.validation()?;
    let (content_type, body) = read_body(request).await?;
    let media_type = content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or_default().trim().to_owned());
    let value = match media_type.as_deref() {
        Some("application/vnd.kubernetes.protobuf") => protobuf::decode(&body, kind)?,
        Some(media_type) if !is_json_or_yaml(media_type) => {
            return Err(ApiError::unsupported_media_type(media_type));
        }
        _ => {
            let format = match media_type.as_deref() {
                Some("application/yaml" | "application/x-yaml" | "text/yaml") => Format::Yaml,
                _ => Format::Json,
            };
            let mut documents = codec::parse_documents(&body, format, &Limits::REQUEST)
                .map_err(|e| ApiError::decode(&e))?;
            let Some(value) = documents.pop().filter(|_| documents.is_empty()) else {
                return Err(ApiError::bad_request(
                    "the request body must hold exactly one object",
                ));
            };
            value
        }
    };
    check_body_kind(&value, kind)?;
    let decoded = Object::decode(kind, value, validation).map_err(|e| ApiError::decode(&e))?;
    Ok((decoded.object, decoded.warnings))
}

fn is_json_or_yaml(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml" | ""
    )
}

fn check_namespace(object: &Object, namespace: Option<&str>) -> Result<(), ApiError> {
    match (object.namespace().filter(|n| !n.is_empty()), namespace) {
        (Some(body), Some(url)) if body != url && object.kind().namespaced => {
            Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        _ => Ok(()),
    }
}

fn check_name(object: &Object, name: &str) -> Result<(), ApiError> {
    if object.name() != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object.name()
        )));
    }
    Ok(())
}

/// Admission (kube's NamespaceLifecycle): objects go only into namespaces that exist
/// (404 otherwise); whether `namespace` is being terminated, when new objects may not
/// go into it.
async fn namespace_terminating(ctx: &Context, namespace: &str) -> Result<bool, ApiError> {
    let object = ctx
        .registry
        .get(&kind::NAMESPACE, None, namespace)
        .await
        .map_err(|e| {
            if e.code == 404 {
                ApiError::namespace_not_found(namespace)
            } else {
                e
            }
        })?;
    Ok(object.metadata().deletion_timestamp.is_some()
        || object.to_value()["status"]["phase"] == "Terminating")
}

/// The name kube's admission errors give an object being created: its name, else
/// its generateName, else `Unknown`.
fn admission_name(object: &Object) -> &str {
    let metadata = object.metadata();
    [&metadata.name, &metadata.generate_name]
        .into_iter()
        .filter_map(|n| n.as_deref())
        .find(|n| !n.is_empty())
        .unwrap_or("Unknown")
}

/// 403 for a new object in a namespace being terminated, as kube's NamespaceLifecycle
/// admission words it (with its `NamespaceTerminating` cause).
fn terminating(kind: &ResourceKind, namespace: &str, name: &str) -> ApiError {
    let cause = skiff_api::meta::StatusCause {
        reason: Some("NamespaceTerminating".to_owned()),
        message: Some(format!("namespace {namespace} is being terminated")),
        field: Some("metadata.namespace".to_owned()),
    };
    forbidden(
        kind,
        name,
        &format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        ),
        vec![cause],
    )
}

/// `DeleteOptions` from the body (if any) and the query, as Kubernetes merges them.
async fn delete_options(
    call: &Call,
    request: Request<Incoming>,
) -> Result<DeleteOptions, ApiError> {
    let (_, body) = read_body(request).await?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let grace_period_seconds = match call.param("gracePeriodSeconds") {
        Some(seconds) => Some(seconds.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid gracePeriodSeconds {seconds:?}"))
        })?),
        None => body["gracePeriodSeconds"].as_i64(),
    };
    let orphan = call
        .param("orphanDependents")
        .map(|v| v == "true")
        .or_else(|| body["orphanDependents"].as_bool());
    let propagation_policy = call
        .param("propagationPolicy")
        .map(str::to_owned)
        .or_else(|| text(&body["propagationPolicy"]))
        .or_else(|| orphan.map(|o| if o { "Orphan" } else { "Background" }.to_owned()));
    Ok(DeleteOptions {
        uid: text(&body["preconditions"]["uid"]),
        resource_version: text(&body["preconditions"]["resourceVersion"]),
        grace_period_seconds,
        propagation_policy,
        // kubectl puts dryRun in the DeleteOptions body.
        dry_run: call.dry_run
            || body["dryRun"]
                .as_array()
                .is_some_and(|modes| modes.iter().any(|m| m == "All")),
    })
}

#[cfg(test)]
mod log_tests {
    use serde_json::json;

    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn two_containers(annotations: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "web", "uid": "u1", "annotations": annotations},
            "spec": {
                "initContainers": [{"name": "init"}],
                "containers": [{"name": "a"}, {"name": "b"}],
            },
        }))
    }

    fn call(params: &[(&str, &str)]) -> Call {
        Call {
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            table: None,
            manager: String::new(),
            dry_run: false,
        }
    }

    #[test]
    fn the_only_container_is_the_default() {
        let single =
            pod(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app"}]}}));
        assert_eq!(log_container(&single, None).unwrap(), "app");
        assert_eq!(log_container(&single, Some("")).unwrap(), "app");
        assert_eq!(log_container(&single, Some("app")).unwrap(), "app");
        let error = log_container(&single, Some("nope")).unwrap_err();
        assert_eq!(
            (error.code, error.message.as_str()),
            (400, "container nope is not valid for pod web")
        );
    }

    #[test]
    fn several_containers_need_a_name_or_the_default_annotation() {
        let error = log_container(&two_containers(json!({})), None).unwrap_err();
        assert_eq!(error.code, 400);
        assert_eq!(
            error.message,
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [init]"
        );
        let annotated = two_containers(json!({DEFAULT_CONTAINER: "b"}));
        assert_eq!(log_container(&annotated, None).unwrap(), "b");
        assert_eq!(log_container(&annotated, Some("a")).unwrap(), "a");
        assert_eq!(
            log_container(&annotated, Some("init")).unwrap(),
            "init",
            "init containers have logs too"
        );
        let stale = two_containers(json!({DEFAULT_CONTAINER: "gone"}));
        assert!(
            log_container(&stale, None).is_err(),
            "an annotation naming no container does not count"
        );
        let no_init = pod(
            json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
        );
        assert_eq!(
            log_container(&no_init, None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [a b]"
        );
    }

    #[test]
    fn log_requests_follow_the_query() {
        let web = two_containers(json!({}));
        let plain = logs_request(&call(&[]), &web, "a".into()).unwrap();
        assert_eq!(
            plain,
            LogsRequest {
                pod_uid: "u1".into(),
                container: "a".into(),
                follow: false,
                tail_lines: -1,
                since_seconds: 0,
                timestamps: false,
                previous: false,
                limit_bytes: 0,
            }
        );
        let full = logs_request(
            &call(&[
                ("follow", "true"),
                ("tailLines", "10"),
                ("sinceSeconds", "60"),
                ("timestamps", "true"),
                ("previous", "true"),
                ("limitBytes", "4096"),
            ]),
            &web,
            "b".into(),
        )
        .unwrap();
        let since = now_timestamp().as_second() - 60;
        assert!(
            (since - 2..=since).contains(&full.since_seconds),
            "{full:?}"
        );
        assert_eq!(
            (full.follow, full.tail_lines, full.timestamps, full.previous),
            (true, 10, true, true)
        );
        assert_eq!(full.limit_bytes, 4096);
        let at = logs_request(
            &call(&[("sinceTime", "2024-05-01T10:00:00Z")]),
            &web,
            "a".into(),
        )
        .unwrap();
        assert_eq!(at.since_seconds, 1_714_557_600);
        for bad in [
            ("tailLines", "-1"),
            ("tailLines", "x"),
            ("sinceSeconds", "0"),
            ("limitBytes", "0"),
            ("sinceTime", "yesterday"),
        ] {
            let error = logs_request(&call(&[bad]), &web, "a".into()).unwrap_err();
            assert_eq!(error.code, 400, "{bad:?}");
        }
        let both = logs_request(
            &call(&[("sinceSeconds", "5"), ("sinceTime", "2024-05-01T10:00:00Z")]),
            &web,
            "a".into(),
        );
        assert!(both.is_err());
    }

    #[test]
    fn agents_serve_on_the_internal_ip_and_kubelet_port() {
        let node = |status: Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": status})).unwrap()
        };
        let endpoint = agent_endpoint(&node(json!({
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })));
        assert_eq!(endpoint.as_deref(), Some("http://10.0.0.7:10250"));
        let v6 = agent_endpoint(&node(json!({
            "addresses": [{"type": "InternalIP", "address": "fd00::7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })));
        assert_eq!(v6.as_deref(), Some("http://[fd00::7]:10250"));
        assert_eq!(
            agent_endpoint(&node(
                json!({"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]})
            )),
            None
        );
        assert_eq!(
            agent_endpoint(&node(
                json!({"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}})
            )),
            None
        );
    }
}
