//! Skiff's control plane.
//!
//! - [`store`]: the Raft-replicated key-value store, the source of truth.
//! - [`apiserver`]: the Kubernetes-shaped REST API over the store (in progress).
//! - [`controllers`]: informers, work queues, the reconcile loops, and the Lease election
//!   that runs them (and the scheduler) on one member.
//! - [`scheduler`]: places pending pods on nodes (on the elected member).
//! - [`nodes`]: the gRPC `Node` service node agents call (served beside the API).
//! - [`network`]: [`NetworkSettings`], the cluster's pod, service and node port ranges.
//! - [`admin`]: operator commands against a running member (`member list|remove`).
//! - [`tokens`]: `token create|list|revoke` through a member's API.
//! - [`security`]: the cluster CA, this member's certificates, join tokens, joining.
//! - [`Config`] and [`run`]: what `skiff-control-plane` starts.

pub mod admin;
pub mod apiserver;
pub mod controllers;
pub mod network;
pub mod nodes;
pub mod scheduler;
pub mod security;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use skiff_api::Object;
use skiff_api::types::{Namespace, Service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use network::NetworkSettings;

/// What the `skiff-control-plane` process runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store member: data directory, peer address, cluster to join.
    pub store: store::Config,
    /// Address of the Kubernetes API (HTTPS).
    pub listen_api: SocketAddr,
    /// Names, addresses and the cluster to join, for certificates and tokens.
    pub security: SecurityConfig,
    /// The controllers' knobs.
    pub controllers: controllers::Settings,
    /// The pod, service and node port ranges and the cluster domain (shared by the
    /// API's allocators and what agents are told at registration).
    pub network: NetworkSettings,
}

/// How a member identifies itself and whom it joins.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// The member's name (default: the host name).
    pub member_name: Option<String>,
    /// The address clients and agents reach the API at (default: the listen address,
    /// or 127.0.0.1 when that is unspecified).
    pub advertise_address: Option<IpAddr>,
    /// Extra names and IPs for the API's certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// `https://HOST:PORT` of a member to join, with a server token.
    pub join: Option<Join>,
}

/// Joining an existing cluster.
#[derive(Clone, Debug)]
pub struct Join {
    /// The API URL of any member.
    pub server: String,
    /// The server token (`K10<ca-hash>::<id>.<secret>`).
    pub token: String,
}

/// Namespaces every cluster has, created at start as Kubernetes does.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Runs the control plane until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config
        .network
        .validate()
        .context("invalid network settings")?;
    let data_dir = config.store.data_dir.clone();
    let advertise = config
        .security
        .advertise_address
        .or_else(|| Some(config.listen_api.ip()).filter(|ip| !ip.is_unspecified()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let member = config
        .security
        .member_name
        .clone()
        .or_else(|| nix_hostname())
        .unwrap_or_else(|| "skiff".to_owned());
    let mut names = security::Names {
        member: member.clone(),
        ips: vec![advertise, config.listen_api.ip()],
        service_ip: Some(IpAddr::V4(config.network.kubernetes_service_ip())),
        cluster_domain: config.network.cluster_domain.clone(),
        ..Default::default()
    };
    for san in &config.security.tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => names.ips.push(ip),
            Err(_) => names.dns.push(san.clone()),
        }
    }
    let mut store_config = config.store.clone();
    let (pki, join_token) = match &config.security.join {
        Some(join) if !security::Pki::exists(&data_dir) => {
            let joined = security::join_cluster(&join.server, &join.token, &member).await?;
            let pki = security::Pki::load_or_create(&data_dir, &names, Some(joined.ca))?;
            store_config.join = joined.peers.first().cloned();
            let token = skiff_pki::Token::parse(&join.token).context("invalid --token")?;
            (pki, Some(token))
        }
        _ => (
            security::Pki::load_or_create(&data_dir, &names, None)?,
            None,
        ),
    };
    let tokens = security::Tokens::load_or_create(&data_dir, &pki.ca, join_token)?;
    let store = store::Store::open(store_config).await?;
    println!(
        "skiff-control-plane: member {} serving peers on {}",
        store.node_id(),
        store.address()
    );
    let listener = TcpListener::bind(config.listen_api)
        .await
        .with_context(|| format!("failed to listen for the API on {}", config.listen_api))?;
    let api_address = listener.local_addr()?;
    let registry = apiserver::Registry::new(store.clone()).with_network(config.network.clone());
    let server_url = format!("https://{}", SocketAddr::new(advertise, api_address.port()));
    // `skiff` fails over through every server the kubeconfig lists: this member, then
    // the one it joined through.
    let mut servers = vec![server_url.clone()];
    servers.extend(
        config
            .security
            .join
            .as_ref()
            .map(|j| j.server.trim_end_matches('/').to_owned()),
    );
    servers.dedup();
    let kubeconfig = pki.write_admin_kubeconfig(&data_dir, &servers)?;
    let api_security = apiserver::Security::new(pki, registry.clone())?;
    // The namespaces and the `kubernetes` Service need a leader, which a restarting
    // member may wait for: create them in the background and serve meanwhile.
    let tasks = TaskTracker::new();
    tasks.spawn({
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        async move {
            ensure_system_namespaces(registry.clone(), shutdown.clone()).await;
            ensure_token_secrets(&registry, &shutdown, &tokens).await;
            ensure_kubernetes_service(registry, shutdown, api_address.port()).await;
        }
    });
    let settings = config.controllers.clone();
    let identity = format!("{}_{}", hostname(), store.node_id());
    tasks.spawn(controllers::run_while_leader(
        registry.clone(),
        shutdown.clone(),
        identity,
        settings.leader_election,
        move |registry, cancel| controllers::start_all(registry, cancel, &settings),
    ));
    println!("skiff-control-plane: serving the API on https://{api_address} as {server_url}");
    println!(
        "skiff-control-plane: admin kubeconfig: {}",
        kubeconfig.display()
    );
    println!(
        "skiff-control-plane: join servers with --join {server_url} --token $(cat {})",
        data_dir.join("token").display()
    );
    if data_dir.join("agent-token").exists() {
        println!(
            "skiff-control-plane: join agents with --server {server_url} --token $(cat {})",
            data_dir.join("agent-token").display()
        );
    }
    // Heartbeats come four times per grace period, as kubelet's 10 s to the
    // controller manager's 40 s.
    let grace = config.controllers.node_lifecycle.grace.as_secs();
    let heartbeat = u32::try_from((grace / 4).clamp(1, 10)).unwrap_or(10);
    apiserver::serve_with(registry, listener, shutdown, heartbeat, Some(api_security)).await;
    tasks.close();
    tasks.wait().await;
    store.shutdown().await;
    Ok(())
}

/// The machine's host name, the first part of this member's Lease holder identity (as
/// kube-controller-manager's `<hostname>_<uuid>`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Creates the system namespaces that are missing, retrying while the store has no
/// leader, until done or `shutdown` fires.
async fn ensure_system_namespaces(registry: apiserver::Registry, shutdown: CancellationToken) {
    for name in SYSTEM_NAMESPACES {
        let namespace = Namespace {
            metadata: skiff_api::meta::ObjectMeta {
                name: Some((*name).to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = format!("namespace {name}");
        if !ensure(&registry, &shutdown, Object::from(namespace), None, &what).await {
            return;
        }
    }
}

/// The host name, for the member's default name.
fn nix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Stores this member's join tokens as bootstrap-token Secrets (kept if present).
async fn ensure_token_secrets(
    registry: &apiserver::Registry,
    shutdown: &CancellationToken,
    tokens: &security::Tokens,
) {
    let mut secrets = vec![security::bootstrap_token_secret(
        &tokens.server,
        security::SERVER_JOINERS,
        None,
        "joins control-plane members and agents",
    )];
    if let Some(agent) = &tokens.agent {
        secrets.push(security::bootstrap_token_secret(
            agent,
            security::AGENT_JOINERS,
            None,
            "joins agents",
        ));
    }
    for secret in secrets {
        let decoded =
            skiff_api::codec::decode_object(secret, skiff_api::codec::FieldValidation::Strict);
        let object = match decoded {
            Ok(decoded) => decoded.object,
            Err(error) => {
                tracing::error!(%error, "a token Secret does not decode");
                return;
            }
        };
        let what = format!(
            "secret kube-system/{}",
            object.metadata().name.clone().unwrap_or_default()
        );
        if !ensure(registry, shutdown, object, Some("kube-system"), &what).await {
            return;
        }
    }
}

/// Creates the `default/kubernetes` Service as kube-apiserver does: the first IP of
/// the service range, port 443 (`https`) to the API's port, no selector (its
/// endpoints are the API servers', which Skiff does not publish yet).
async fn ensure_kubernetes_service(
    registry: apiserver::Registry,
    shutdown: CancellationToken,
    api_port: u16,
) {
    let cluster_ip = registry.network().kubernetes_service_ip().to_string();
    let service: Service = match serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "kubernetes",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
            "sessionAffinity": "None",
        },
    })) {
        Ok(service) => service,
        Err(error) => {
            tracing::error!(%error, "the kubernetes Service does not decode");
            return;
        }
    };
    let what = "service default/kubernetes";
    ensure(
        &registry,
        &shutdown,
        Object::from(service),
        Some("default"),
        what,
    )
    .await;
}

/// Creates `object` unless it exists, retrying while the store has no leader; false
/// when `shutdown` fired first.
async fn ensure(
    registry: &apiserver::Registry,
    shutdown: &CancellationToken,
    object: Object,
    namespace: Option<&str>,
    what: &str,
) -> bool {
    loop {
        let writer = apiserver::Writer::main("skiff-control-plane");
        let created = tokio::select! {
            () = shutdown.cancelled() => return false,
            created = registry.create(object.clone(), namespace, writer) => created,
        };
        match created {
            Ok(_) => return true,
            Err(error) if error.code == 409 => return true,
            Err(error) if error.code == 503 || error.code == 504 => {
                tracing::debug!(object = %what, %error, "no leader yet to create a system object");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            Err(error) => {
                tracing::warn!(object = %what, %error, "could not create a system object");
                return true;
            }
        }
    }
}
