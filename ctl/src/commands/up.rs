//! `skiff up`: a whole single-node cluster in this one process — a control plane with a
//! one-member store (API, scheduler, controllers) and a node agent running the pods —
//! with the demo image imported, a kubeconfig written, and everything (containers
//! included) stopped on Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use skiff_node_agent::runtime::image::{ImageConfig, ImageStore, RegistryConfig, import};
use tokio_util::sync::CancellationToken;

use crate::UpArgs;

/// The demo image every manifest in `manifests/` runs.
pub(crate) const DEMO_IMAGE: &str = "skiff.local/httpd:1";
/// The page the demo image serves.
const DEMO_PAGE: &str = "hello from skiff\n";

/// Runs the cluster until Ctrl-C or SIGTERM.
pub(crate) fn run(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?)
                .join(".skiff")
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let log = std::fs::File::create(data_dir.join("skiff-up.log"))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(up(args, &data_dir))?;
    Ok(ExitCode::SUCCESS)
}

async fn up(args: &UpArgs, data_dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let agent_dir = data_dir.join("agent");
    if !args.no_demo_image {
        let image = prepare_demo_image(data_dir, &agent_dir).await?;
        println!("skiff up: demo image {DEMO_IMAGE} ready ({image})");
    }
    let shutdown = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();

    let plane_dir = data_dir.join("control-plane");
    let store = skiff_control_plane::store::Config {
        data_dir: plane_dir.clone(),
        listen_peer: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise_peer: None,
        join: Vec::new(),
        tls: None,
        tuning: skiff_control_plane::store::Tuning::default(),
    };
    let plane = skiff_control_plane::Config {
        store,
        listen_api: args.listen,
        security: skiff_control_plane::SecurityConfig::default(),
        controllers: skiff_control_plane::controllers::Settings::default(),
        network: skiff_control_plane::NetworkSettings::default(),
    };
    let plane_task = tasks.spawn({
        let shutdown = shutdown.clone();
        async move { skiff_control_plane::run(plane, shutdown).await }
    });
    // The control plane advertises the listen IP, or 127.0.0.1 when that is
    // unspecified; its certificate names both.
    let ip = Some(args.listen.ip())
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let server = format!("https://{}", SocketAddr::new(ip, args.listen.port()));
    let agent_token = wait_for_api(&server, &plane_dir, &plane_task).await?;

    let mut agent = skiff_node_agent::Config::new(agent_dir.clone(), server.clone());
    agent.token = Some(agent_token);
    agent.node_ip = Some(ip);
    agent.listen = SocketAddr::new(args.listen.ip(), 0);
    let mut agent_task = tasks.spawn({
        let shutdown = shutdown.clone();
        async move { skiff_node_agent::run(agent, shutdown).await }
    });
    tasks.close();

    // The user's kubeconfig is the control plane's admin kubeconfig (client certificate
    // included; the copy keeps its 0600 mode).
    let kubeconfig = data_dir.join("kubeconfig");
    let admin_kubeconfig = plane_dir.join("admin.kubeconfig");
    std::fs::copy(&admin_kubeconfig, &kubeconfig).with_context(|| {
        format!(
            "copying {} to {}",
            admin_kubeconfig.display(),
            kubeconfig.display()
        )
    })?;
    println!(
        "skiff up: a one-node cluster is running at {server} (ready in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  skiff get nodes; skiff apply -f manifests/; kubectl get pods -A");
    println!(
        "  Ctrl-C stops the cluster and its containers. Logs: {}",
        data_dir.join("skiff-up.log").display()
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        stopped = &mut agent_task => match stopped {
            Ok(Err(error)) => eprintln!("skiff up: the node agent failed: {:#}", anyhow::Error::from(error)),
            _ => eprintln!("skiff up: the node agent stopped; see the log"),
        },
    }
    println!("skiff up: stopping");
    shutdown.cancel();
    tasks.wait().await;
    // The containers outlive the agent by design; `skiff up` owns them, so they go too.
    let runtime = skiff_node_agent::runtime::container::RuntimeConfig::new(agent_dir, None)?;
    skiff_node_agent::runtime::reset(&runtime).await?;
    skiff_node_agent::network::reset(&runtime.data_dir, skiff_node_agent::network::BRIDGE).await?;
    println!(
        "skiff up: stopped; the cluster's state stays in {}",
        data_dir.display()
    );
    Ok(())
}

/// Waits until the API serves the agent token's Secret to the admin (the control plane
/// stores it just after the system namespaces, once it serves) or the control plane
/// failed; returns the agent token. The CA, the admin's certificate and the token come
/// from `plane_dir` once the control plane has written them.
async fn wait_for_api(
    server: &str,
    plane_dir: &Path,
    plane: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = None;
    let mut agent_token = None;
    loop {
        if plane.is_finished() {
            bail!("the control plane stopped while starting; see skiff-up.log in the data dir");
        }
        if client.is_none() {
            client = admin_client(plane_dir).ok();
        }
        if agent_token.is_none() {
            agent_token = std::fs::read_to_string(plane_dir.join("agent-token"))
                .ok()
                .map(|token| token.trim().to_owned());
        }
        if let (Some(client), Some(token)) = (&client, &agent_token) {
            let id = skiff_pki::Token::parse(token)
                .context("the control plane's agent-token is unreadable")?
                .id;
            let url =
                format!("{server}/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}");
            if let Ok(reply) = client.get(&url).send().await
                && reply.status().is_success()
            {
                return Ok(token.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("the API at {server} did not come up within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds the demo image from this machine's busybox (once) and imports it into the
/// node's image store.
async fn prepare_demo_image(data_dir: &Path, agent_dir: &Path) -> anyhow::Result<String> {
    let archive = data_dir.join("demo-httpd.oci.tar");
    if !archive.is_file() {
        write_demo_archive(&archive, DEMO_IMAGE)?;
    }
    let store = ImageStore::open(&agent_dir.join("images"), RegistryConfig::default())?;
    if let Some(image) = store.get(DEMO_IMAGE) {
        return Ok(image.id);
    }
    let images = store.import_archive(&archive).await?;
    Ok(images.first().map(|i| i.id.clone()).unwrap_or_default())
}

/// Writes the demo image, named `name`: busybox-static with its applets,
/// `/www/index.html`, and `httpd -f -v -p 80 -h /www` as its entrypoint.
pub(crate) fn write_demo_archive(path: &Path, name: &str) -> anyhow::Result<()> {
    let busybox_path = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox is not installed (Debian: apt-get install busybox-static)")?;
    let busybox = std::fs::read(busybox_path)?;
    let listed = std::process::Command::new(busybox_path)
        .arg("--list")
        .output()?;
    let applets: Vec<(String, String)> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(|applet| (format!("bin/{applet}"), "busybox".to_owned()))
        .collect();
    if applets.is_empty() {
        bail!("{busybox_path} --list printed no applets: is it busybox-static?");
    }
    let files = [
        ("bin/busybox", busybox, 0o755),
        ("www/index.html", DEMO_PAGE.as_bytes().to_vec(), 0o644),
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
            0o644,
        ),
        ("etc/group", b"root:x:0:\nnobody:x:65534:\n".to_vec(), 0o644),
        ("tmp/.keep", Vec::new(), 0o644),
    ];
    let config = ImageConfig {
        entrypoint: vec!["/bin/httpd".into()],
        cmd: ["-f", "-v", "-p", "80", "-h", "/www"]
            .map(String::from)
            .to_vec(),
        env: vec!["PATH=/bin".into()],
        working_dir: None,
        user: None,
    };
    import::write_archive(path, name, &files, &applets, &config)?;
    Ok(())
}

/// An HTTPS client trusting the cluster CA and presenting the admin's certificate,
/// both from `plane_dir/pki/`.
fn admin_client(plane_dir: &Path) -> anyhow::Result<reqwest::Client> {
    let pki = plane_dir.join("pki");
    let ca_path = pki.join("ca.crt");
    let ca = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?;
    let admin = skiff_pki::KeyPair::load(&pki, "admin")?;
    let tls = skiff_pki::client_config(&ca, Some(&admin))?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
        .build()?)
}
