//! Skiff's node agent: joins the cluster (`bootstrap`: a client certificate for a
//! token), registers its node with the control plane over mTLS with failover between
//! servers (`control`), runs the pods bound to it as native containers (`runtime`), one
//! worker per pod (`pods`), wires them into the pod network (`network`), and serves
//! their logs and exec over TLS (`server`).

pub mod bootstrap;
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
    /// The control plane's URLs in failover order: `https://HOST:PORT` in production
    /// (mTLS with the node certificate from `data_dir/pki/`), or `http://HOST:PORT`
    /// without TLS (in-process tests; no token needed then).
    pub servers: Vec<String>,
    /// The bootstrap token (`K10<ca hash>::<id>.<secret>`): needed to join over
    /// `https://` the first time; later checked against the stored CA when given.
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
    /// directory and the control plane's URL (add more to `servers` for failover).
    pub fn new(data_dir: PathBuf, server: String) -> Self {
        Self {
            data_dir,
            servers: vec![server],
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
    /// The `--server` list or the TLS settings are unusable.
    #[error(transparent)]
    Control(#[from] control::Error),
    /// The node could not get its credentials (joining failed).
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::Error),
    /// The agent's own TLS configuration could not be built.
    #[error("the agent's TLS configuration: {0}")]
    Tls(#[source] skiff_pki::Error),
    /// The agent's own service could not listen.
    #[error("failed to listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` fires: opens the runtime and image store, gets the
/// node's credentials (joining with the token the first time, for `https://` servers),
/// serves the `Agent` gRPC service, registers the Node (then prints `registered` on stdout),
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
    let servers = control::parse_servers(&config.servers)?;
    let ip = config
        .node_ip
        .or_else(|| {
            servers
                .iter()
                .find_map(|server| control::local_ip_towards(server))
        })
        .ok_or_else(|| {
            Error::Config(format!(
                "cannot tell this node's IP towards {}; pass --node-ip",
                servers.join(", ")
            ))
        })?;
    let credentials = if servers.iter().all(|server| control::is_https(server)) {
        let join = bootstrap::JoinConfig {
            pki_dir: runtime.data_dir.join("pki"),
            servers: servers.clone(),
            token: config.token.clone(),
            node_name: name.clone(),
            addresses: vec![ip],
        };
        let Some(credentials) = bootstrap::credentials(&join, &shutdown).await? else {
            return Ok(());
        };
        Some(credentials)
    } else {
        if config.token.is_some() {
            tracing::warn!("--token is ignored: the control plane is reached over http://");
        }
        None
    };
    let control = control::ControlPlane::try_new(&servers, &name, credentials.as_ref())?;

    let service = server::AgentService::new(runtime.clone());
    let tls = credentials
        .as_ref()
        .map(|credentials| {
            skiff_pki::server_config(
                &credentials.ca_pem,
                &credentials.node,
                skiff_pki::ClientAuth::Required,
            )
        })
        .transpose()
        .map_err(Error::Tls)?;
    let server = tokio::spawn(server::serve(listener, service, tls, shutdown.clone()));
    let server = async move {
        match server.await {
            Ok(Err(error)) => tracing::error!(%error, "the agent's gRPC service stopped"),
            Err(error) => tracing::error!(%error, "the agent's gRPC service panicked"),
            Ok(Ok(())) => {}
        }
    };

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
    let registered_with = control.server();
    println!(
        "skiff-node-agent: node {name} registered with {registered_with} (agent service on {ip}:{port})"
    );
    tracing::info!(node = %name, server = %registered_with, "registered");
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
    server.await;
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
