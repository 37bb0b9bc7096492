//! The paths that let machines join the cluster (k3s's `/cacerts` and join handshake):
//! `GET /cacerts` returns the CA (a joiner checks it against its token's hash);
//! `POST /skiff/v1/join/agent` signs a node's certificate request; `POST
//! /skiff/v1/join/server` hands a new control-plane member the CA and the peers to join.

use std::net::IpAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use skiff_pki::{Issue, Usage};

use super::auth::Special;
use super::error::ApiError;
use super::objects::read_body;
use super::server::{Body, Context, json_response};
use crate::security::{NODE_USER_PREFIX, NODES_GROUP};

/// Days a node's certificate is valid.
const NODE_CERT_DAYS: u32 = 365;

/// What an agent sends to join.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinAgent {
    node_name: String,
    csr: String,
    #[serde(default)]
    addresses: Vec<String>,
}

/// Serves one special path (already authorized).
pub async fn handle(
    context: &Context,
    special: Special,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(security) = context.security.as_ref() else {
        return Err(ApiError::no_route(request.uri().path()));
    };
    let method = request.method().clone();
    match special {
        Special::CaCerts if method == http::Method::GET => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/x-pem-file")
            .body(super::server::full(Bytes::from(
                security.pki.ca.cert_pem.clone(),
            )))
            .expect("static headers are valid")),
        Special::JoinAgent if method == http::Method::POST => {
            let (_, body) = read_body(request).await?;
            let join: JoinAgent = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid join request: {e}")))?;
            let certificate = sign_node(&security.pki.ca, &join)?;
            tracing::info!(node = %join.node_name, "signed a node certificate");
            Ok(json_response(
                StatusCode::OK,
                &json!({"certificate": certificate, "ca": security.pki.ca.cert_pem}),
                "application/json",
            ))
        }
        Special::JoinServer if method == http::Method::POST => {
            let store = context.registry.store();
            let leader = store.leader();
            let mut members = store.members();
            members.sort_by_key(|m| (Some(m.node_id) != leader, m.node_id));
            let peers: Vec<String> = members.into_iter().map(|m| m.address).collect();
            tracing::info!(?peers, "a control-plane member is joining");
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "ca": security.pki.ca.cert_pem,
                    "caKey": security.pki.ca.key_pem,
                    "peers": peers,
                }),
                "application/json",
            ))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// Signs a node's certificate: the subject and names are the server's choice, only the
/// public key comes from the request.
fn sign_node(ca: &skiff_pki::Ca, join: &JoinAgent) -> Result<String, ApiError> {
    let problems = skiff_api::validation::names::dns1123_subdomain(&join.node_name);
    if let Some(problem) = problems.first() {
        return Err(ApiError::bad_request(format!(
            "invalid nodeName {:?}: {problem}",
            join.node_name
        )));
    }
    let mut ips = Vec::new();
    for address in &join.addresses {
        let ip: IpAddr = address.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid address {address:?}: not an IP"))
        })?;
        ips.push(ip);
    }
    let issue = Issue {
        common_name: format!("{NODE_USER_PREFIX}{}", join.node_name),
        organizations: vec![NODES_GROUP.to_owned()],
        dns_names: vec![join.node_name.clone()],
        ips,
        usage: Usage::ServerAndClient,
        validity_days: NODE_CERT_DAYS,
    };
    ca.sign_csr(&join.csr, &issue)
        .map_err(|e| ApiError::bad_request(format!("invalid certificate request: {e}")))
}
