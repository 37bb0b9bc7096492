//! Skiff's node agent: registers its node with the control plane, runs the pods bound
//! to it as native containers (`runtime`), one worker per pod (`pods`), and serves their
//! logs and exec (`server`).

pub mod control;
pub mod network;
pub mod pods;
pub mod runtime;
pub mod server;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::pods::Backoff;

/// What `skiff-node-agent` is started with (DESIGN.md §10).
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory for images, container state and logs.
    pub data_dir: PathBuf,
    /// The control plane's URL.
    pub server: String,
    /// The join token.
    pub token: Option<String>,
    /// The node's name (default: the host name).
    pub node_name: Option<String>,
    /// The node's IP (default: the local address that reaches the control plane).
    pub node_ip: Option<IpAddr>,
    /// Where the agent serves logs and exec to the control plane.
    pub listen: SocketAddr,
    /// Labels for the Node object, beside the well-known ones.
    pub node_labels: BTreeMap<String, String>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Host directories hostPath volumes may use.
    pub allowed_host_paths: Vec<PathBuf>,
    /// The executable started for the agent's helper processes (shims, exec,
    /// sandboxes); default: this process's executable.
    pub helper_binary: Option<PathBuf>,
    /// The restart back-off (kubelet's 10 s doubling to 5 min by default).
    pub backoff: Backoff,
    /// The pod bridge's name (also the service proxy's nftables table).
    pub bridge: String,
}

impl Config {
    /// A configuration with Kubernetes' defaults for everything but the data
    /// directory and the control plane's URL.
    pub fn new(data_dir: PathBuf, server: String) -> Self {
        Self {
            data_dir,
            server,
            token: None,
            node_name: None,
            node_ip: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 10250)),
            node_labels: BTreeMap::new(),
            insecure_registries: Vec::new(),
            allowed_host_paths: Vec::new(),
            helper_binary: None,
            backoff: Backoff::default(),
            bridge: network::BRIDGE.to_owned(),
        }
    }
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory or the image store could not be opened.
    #[error("failed to open {what}: {message}")]
    Open {
        /// What could not be opened.
        what: String,
        /// Why.
        message: String,
    },
    /// The agent's own service could not listen.
    #[error("failed to listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` fires: opens the runtime and image store, serves
/// the `Agent` gRPC service, registers the Node (then prints `registered` on stdout),
/// heartbeats, adopts the containers already on disk and runs the pods bound to the
/// node. Containers outlive the agent: a restarted agent adopts them.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let open = |what: &str| {
        let what = what.to_owned();
        move |error: &dyn std::fmt::Display| Error::Open {
            what: what.clone(),
            message: error.to_string(),
        }
    };
    let runtime = runtime::container::RuntimeConfig::new(
        config.data_dir.clone(),
        config.helper_binary.clone(),
    )
    .map_err(|e| open("the data directory")(&e))?;
    let images = runtime::image::ImageStore::open(
        &runtime.data_dir.join("images"),
        runtime::image::RegistryConfig {
            insecure: config.insecure_registries.clone(),
        },
    )
    .map_err(|e| open("the image store")(&e))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            address: config.listen,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::Listen {
            address: config.listen,
            source,
        })?
        .port();
    let name = match &config.node_name {
        Some(name) => name.clone(),
        None => nix::unistd::gethostname()
            .map_err(|e| Error::Config(format!("reading the host name: {e}")))?
            .to_string_lossy()
            .to_lowercase(),
    };
    let ip = config
        .node_ip
        .or_else(|| control::local_ip_towards(&config.server))
        .ok_or_else(|| {
            Error::Config(format!(
                "cannot tell this node's IP towards {}; pass --node-ip",
                config.server
            ))
        })?;
    let control = control::ControlPlane::new(&config.server, &name)
        .map_err(|e| Error::Config(format!("--server {}: {e}", config.server)))?;

    let service = server::AgentService::new(runtime.clone());
    let serving = shutdown.clone();
    let server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(skiff_proto::node::agent_server::AgentServer::new(service))
            .serve_with_incoming_shutdown(incoming, serving.cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "the agent's gRPC service stopped");
        }
    });

    let identity = control::NodeIdentity {
        name: name.clone(),
        ip,
        port,
        labels: config.node_labels.clone(),
    };
    let node = control::node_object(&identity, &runtime.data_dir);
    let Some(registration) = control.register_until_done(&node, &shutdown).await else {
        return Ok(());
    };
    let interval = registration.heartbeat_interval;
    println!(
        "skiff-node-agent: node {name} registered with {} (agent service on {ip}:{port})",
        config.server
    );
    tracing::info!(node = %name, server = %config.server, "registered");
    let heartbeats = tokio::spawn({
        let control = control.clone();
        let shutdown = shutdown.clone();
        async move { control.heartbeats(node, interval, shutdown).await }
    });

    let settings = network_settings(&registration, ip, &config.bridge)?;
    let network = std::sync::Arc::new(
        network::NodeNetwork::start(settings, &runtime.data_dir)
            .await
            .map_err(|e| open("the pod network")(&e))?,
    );
    let networking = tokio::spawn(network::sync::run(
        network.clone(),
        control.clone(),
        shutdown.clone(),
    ));

    let context = std::sync::Arc::new(pods::NodeContext {
        runtime: runtime.clone(),
        images,
        backoff: config.backoff,
        node_ip: Some(ip),
        allowed_host_paths: config.allowed_host_paths.clone(),
        sink: std::sync::Arc::new(control.clone()),
        network,
    });
    let mut manager = pods::PodManager::new(context)
        .await
        .map_err(|e| open("the containers on disk")(&e))?;
    control.watch_pods(&mut manager, shutdown.clone()).await;
    let _ = heartbeats.await;
    let _ = networking.await;
    let _ = server.await;
    Ok(())
}

/// The node's network settings from the control plane's registration answer.
fn network_settings(
    registration: &control::Registration,
    node_ip: IpAddr,
    bridge: &str,
) -> Result<network::NetworkSettings, Error> {
    let cidr = |what: &str, text: &str| {
        text.parse::<ipnet::Ipv4Net>().map_err(|_| {
            Error::Config(format!(
                "the control plane gave an invalid {what} {text:?} (an IPv4 CIDR is required)"
            ))
        })
    };
    let pod_cidr = registration
        .node
        .spec
        .as_ref()
        .and_then(|spec| spec.pod_cidr.clone())
        .ok_or_else(|| {
            Error::Config("the control plane assigned this node no podCIDR".to_owned())
        })?;
    let IpAddr::V4(node_ip) = node_ip else {
        return Err(Error::Config(format!(
            "the node IP {node_ip} is not IPv4 (pod networking is IPv4 only)"
        )));
    };
    Ok(network::NetworkSettings {
        pod_cidr: cidr("podCIDR", &pod_cidr)?,
        cluster_cidr: cidr("cluster CIDR", &registration.cluster_cidr)?,
        service_cidr: cidr("service CIDR", &registration.service_cidr)?,
        cluster_domain: if registration.cluster_domain.is_empty() {
            "cluster.local".to_owned()
        } else {
            registration.cluster_domain.clone()
        },
        node_ip,
        bridge: bridge.to_owned(),
    })
}
