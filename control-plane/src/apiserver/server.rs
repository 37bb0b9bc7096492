//! The HTTP server: hyper (HTTP/1.1 and HTTP/2), routing, body limits, and the
//! handlers for discovery, version, health and object CRUD.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use skiff_api::codec::{self, FieldValidation, Format, Limits};
use skiff_api::{Object, Selector, kind};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::discovery;
use super::error::ApiError;
use super::registry::{ListOptions, Registry};
use super::request::{ResourceRequest, Route, route};

/// Kubernetes' request body cap (CVE-2019-11253).
pub const MAX_BODY_BYTES: usize = Limits::REQUEST.max_bytes;

/// What `/version` reports: kubectl's dispatcher picks the kubectl matching `minor`.
fn version_info() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": concat!("v1.32.0-skiff.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}

/// Serves the API on `listener` until `cancel` fires; connections in flight finish.
pub async fn serve(registry: Registry, listener: TcpListener, cancel: CancellationToken) {
    let registry = Arc::new(registry);
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an API connection failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(handle(&registry, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "API connection ended with an error");
                    }
                }
                () = cancel.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
    connections.close();
    connections.wait().await;
}

fn json_response(status: StatusCode, body: &Value, content_type: &str) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(bytes)))
        .expect("static headers are valid")
}

fn ok(body: &Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, body, "application/json")
}

fn error_response(error: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_value(error.to_status()).expect("Status serializes");
    json_response(status, &body, "application/json")
}

/// Handles one request; every failure becomes a `Status` reply.
pub async fn handle(registry: &Registry, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let result = dispatch(registry, request).await;
    let response = result.unwrap_or_else(|error| error_response(&error));
    tracing::debug!(%method, %path, status = response.status().as_u16(), "api request");
    response
}

async fn dispatch(
    registry: &Registry,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = request.uri().path().to_owned();
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(route) = route(&path) else {
        return Err(ApiError::no_route(&path));
    };
    let is_get = request.method() == Method::GET;
    match route {
        Route::Version if is_get => Ok(ok(&version_info())),
        Route::Health if is_get => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
        Route::CoreVersions if is_get && discovery::wants_aggregated(&accept) => Ok(json_response(
            StatusCode::OK,
            &discovery::aggregated(true),
            discovery::AGGREGATED_CONTENT_TYPE,
        )),
        Route::Groups if is_get && discovery::wants_aggregated(&accept) => Ok(json_response(
            StatusCode::OK,
            &discovery::aggregated(false),
            discovery::AGGREGATED_CONTENT_TYPE,
        )),
        Route::CoreVersions if is_get => Ok(ok(&discovery::core_versions())),
        Route::Groups if is_get => Ok(ok(&discovery::group_list())),
        Route::GroupVersion { group, version } if is_get => {
            discovery::resource_list(&group, &version)
                .map(|body| ok(&body))
                .ok_or_else(|| ApiError::no_route(&path))
        }
        Route::Resource(resource) => resource_request(registry, resource, request).await,
        _ => Err(ApiError::method_not_allowed(request.method().as_str())),
    }
}

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn resource_request(
    registry: &Registry,
    resource: ResourceRequest,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if let Some(subresource) = &resource.subresource {
        // Only the namespace's own subresources and status/scale exist in Kubernetes;
        // none is served yet.
        return Err(ApiError::no_route(&format!(
            "{}/{subresource}",
            resource.kind.plural
        )));
    }
    let params = query(&request);
    let kind = resource.kind;
    let namespace = resource.namespace.as_deref();
    match (request.method().clone(), resource.name.as_deref()) {
        (Method::GET, None) if params.get("watch").is_some_and(|w| w == "1" || w == "true") => {
            Err(ApiError::method_not_allowed("watch (not implemented yet)"))
        }
        (Method::GET, None) => {
            let options = list_options(&params)?;
            let page = registry.list(kind, namespace, &options).await?;
            let items: Vec<Value> = page.items.iter().map(Object::to_value).collect();
            let mut metadata = json!({"resourceVersion": page.revision.to_string()});
            if let Some(token) = page.continue_token {
                metadata["continue"] = Value::String(token);
            }
            Ok(ok(
                &json!({"apiVersion": kind.api_version, "kind": format!("{}List", kind.kind), "metadata": metadata, "items": items}),
            ))
        }
        (Method::GET, Some(name)) => Ok(ok(&registry.get(kind, namespace, name).await?.to_value())),
        (Method::POST, None) => {
            let object = decode_body(request, kind, &params).await?;
            check_namespace(&object, namespace)?;
            if let Some(namespace) = namespace.filter(|_| kind.namespaced) {
                admit_namespace(registry, namespace).await?;
            }
            let created = registry.create(object, namespace).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &created.to_value(),
                "application/json",
            ))
        }
        (Method::PUT, Some(name)) => {
            let object = decode_body(request, kind, &params).await?;
            check_namespace(&object, namespace)?;
            if object.name() != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    object.name()
                )));
            }
            Ok(ok(&registry
                .update(object, namespace, name)
                .await?
                .to_value()))
        }
        (Method::DELETE, Some(name)) => {
            let (uid, resource_version) = delete_preconditions(request).await?;
            let deleted = registry
                .delete(
                    kind,
                    namespace,
                    name,
                    uid.as_deref(),
                    resource_version.as_deref(),
                )
                .await?;
            Ok(ok(&deleted.to_value()))
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

fn list_options(params: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let labels = match params.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(text) => {
            Some(Selector::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?)
        }
        None => None,
    };
    let mut fields = Vec::new();
    for requirement in params
        .get("fieldSelector")
        .map(String::as_str)
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
                "invalid field selector: {requirement:?}: expected field=value or field!=value"
            )));
        };
        fields.push((field.trim().to_owned(), value.trim().to_owned(), equal));
    }
    let limit = match params.get("limit") {
        Some(limit) => limit
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        None => 0,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: params.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

/// Reads a body within the size cap.
async fn read_body(request: Request<Incoming>) -> Result<(Option<String>, Bytes), ApiError> {
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

/// Decodes a body into an object of `kind`, honouring `fieldValidation`.
async fn decode_body(
    request: Request<Incoming>,
    kind: &'static skiff_api::ResourceKind,
    params: &HashMap<String, String>,
) -> Result<Object, ApiError> {
    let validation = FieldValidation::parse(
        params
            .get("fieldValidation")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .ok_or_else(|| {
        ApiError::bad_request("fieldValidation must be one of Strict, Warn or Ignore")
    })?;
    let (content_type, body) = read_body(request).await?;
    let format = match content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or_default().trim())
    {
        Some("application/json") | None => Format::Json,
        Some("application/yaml" | "application/x-yaml" | "text/yaml") => Format::Yaml,
        Some(other) => return Err(ApiError::unsupported_media_type(other)),
    };
    let mut documents = codec::parse_documents(&body, format, &Limits::REQUEST)
        .map_err(|e| ApiError::decode(&e))?;
    let Some(value) = documents.pop().filter(|_| documents.is_empty()) else {
        return Err(ApiError::bad_request(
            "the request body must hold exactly one object",
        ));
    };
    match codec::kind_of(&value) {
        Some(body_kind) if body_kind == kind => {}
        _ => {
            let (api_version, body_kind) = (
                value
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                value
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) and kind ({body_kind}) do not match the requested {} {}",
                kind.api_version, kind.kind
            )));
        }
    }
    let decoded = Object::decode(kind, value, validation).map_err(|e| ApiError::decode(&e))?;
    Ok(decoded.object)
}

fn check_namespace(object: &Object, namespace: Option<&str>) -> Result<(), ApiError> {
    match (object.namespace().filter(|n| !n.is_empty()), namespace) {
        (Some(body), Some(url)) if body != url => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

/// Admission: new objects go only into namespaces that exist and are not terminating.
async fn admit_namespace(registry: &Registry, namespace: &str) -> Result<(), ApiError> {
    let object = registry
        .get(&kind::NAMESPACE, None, namespace)
        .await
        .map_err(|e| {
            if e.code == 404 {
                ApiError::namespace_not_found(namespace)
            } else {
                e
            }
        })?;
    let terminating = object.metadata().deletion_timestamp.is_some()
        || object.to_value()["status"]["phase"] == "Terminating";
    if terminating {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
            details: None,
        });
    }
    Ok(())
}

/// `DeleteOptions.preconditions` from an optional body.
async fn delete_preconditions(
    request: Request<Incoming>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let (_, body) = read_body(request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let options: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
    let text = |field: &str| options["preconditions"][field].as_str().map(str::to_owned);
    Ok((text("uid"), text("resourceVersion")))
}
