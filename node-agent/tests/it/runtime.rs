//! The runtime against the real kernel: sandboxes, containers under their supervisor,
//! logs, OOM kills, adoption, exec and clean-up. The image is a one-layer rootfs made
//! from busybox-static (the registry path is tested in `image.rs` and e2e).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_node_agent::runtime::container::{Container, ContainerState, RuntimeConfig};
use skiff_node_agent::runtime::image::ImageConfig;
use skiff_node_agent::runtime::sandbox::Sandbox;
use skiff_node_agent::runtime::spec::{self, SpecInput};
use skiff_node_agent::runtime::{cgroups, reset};

/// A data dir, a busybox layer, a sandbox; everything removed on drop.
struct Fixture {
    config: RuntimeConfig,
    layer: PathBuf,
    pod_uid: String,
    sandbox: Option<Sandbox>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(hostname: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        busybox_rootfs(&layer);
        let config = RuntimeConfig::new(
            dir.path().join("data"),
            Some(PathBuf::from(env!("CARGO_BIN_EXE_skiff-node-agent"))),
        )
        .unwrap();
        let pod_uid = format!("test-{}", rand_suffix());
        let pod_dir = config.data_dir.join("pods").join(&pod_uid);
        let sandbox = Sandbox::create(&pod_dir, hostname, false).await.unwrap();
        Self {
            config,
            layer,
            pod_uid,
            sandbox: Some(sandbox),
            _dir: dir,
        }
    }

    /// Creates a container running `command` (sh -c) with `resources`.
    async fn run(
        &self,
        name: &str,
        command: &str,
        resources: serde_json::Value,
    ) -> Result<Container, String> {
        let container: k8s_openapi::api::core::v1::Container = serde_json::from_value(json!({
            "name": name, "command": ["sh", "-c", command], "resources": resources,
        }))
        .unwrap();
        let id = format!("{}-{name}", self.pod_uid);
        let layers = [self.layer.clone()];
        let input = SpecInput {
            container,
            image_config: ImageConfig {
                env: vec!["PATH=/bin".into()],
                ..ImageConfig::default()
            },
            layers: &layers,
            namespaces: self.sandbox.as_ref().unwrap().namespaces(),
            host_network: false,
            cgroups_path: cgroups::container_path(&self.pod_uid, &id),
            mounts: Vec::new(),
            pids_limit: Some(128),
        };
        let oci = spec::build(&input).map_err(|e| e.to_string())?;
        let labels = BTreeMap::from([("name".to_owned(), name.to_owned())]);
        Container::create(&self.config, &id, labels, oci, &layers)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let config = self.config.clone();
        let uid = self.pod_uid.clone();
        // Clean up on a separate runtime: Drop may run inside the test's runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(reset(&config)).unwrap();
            cgroups::remove_pod_cgroups(&uid).unwrap();
        })
        .join()
        .unwrap();
    }
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A rootfs with busybox and its applets in /bin, /etc/passwd and /tmp.
fn busybox_rootfs(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "cat", "hostname", "head", "tail", "true", "yes", "ls", "trap", "ps",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

fn log_records(container: &Container) -> Vec<(String, String, String)> {
    std::fs::read_to_string(container.log_path())
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let _time = parts.next();
            (
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn mounts_under(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_runs_logs_and_reports_its_exit() {
    let fixture = Fixture::new("exiting").await;
    let container = fixture
        .run("exit3", "echo hello; echo err >&2; exit 3", json!({}))
        .await
        .unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(10), container.wait())
        .await
        .unwrap();
    assert_eq!((exited.exit_code, exited.reason.as_str()), (3, "Error"));
    assert!(!exited.oom_killed);
    let mut records = log_records(&container);
    records.sort();
    assert_eq!(
        records,
        vec![
            ("stderr".into(), "F".into(), "err".into()),
            ("stdout".into(), "F".into(), "hello".into()),
        ]
    );
    let ok = fixture.run("exit0", "true", json!({})).await.unwrap();
    assert_eq!(ok.wait().await.reason, "Completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_container_is_isolated_stoppable_and_removed_without_traces() {
    let fixture = Fixture::new("isolated").await;
    let container = fixture
        .run("sleeper", "trap '' TERM; echo ready; sleep 1000", json!({}))
        .await
        .unwrap();
    let ContainerState::Running { pid, .. } = container.state() else {
        panic!("not running: {:?}", container.state());
    };
    let ns = |pid: &str, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    assert_ne!(ns(&pid.to_string(), "pid"), ns("self", "pid"));
    assert_ne!(ns(&pid.to_string(), "mnt"), ns("self", "mnt"));
    let sandbox = fixture.sandbox.as_ref().unwrap();
    let net = std::fs::metadata(sandbox.namespace_path("network").unwrap()).unwrap();
    let container_net = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        net.ino(),
        container_net.ino(),
        "the container is in the pod's network namespace"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("/skiff/pod{}/", fixture.pod_uid)),
        "{cgroup}"
    );
    // The hostname is the sandbox's.
    let child = container.exec(vec!["hostname".into()], false).unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "isolated");
    assert!(output.status.success());
    let child = container
        .exec(vec!["sh".into(), "-c".into(), "exit 5".into()], false)
        .unwrap();
    assert_eq!(
        child.wait_with_output().await.unwrap().status.code(),
        Some(5)
    );

    // SIGTERM is ignored: the grace period passes, then SIGKILL.
    let started = Instant::now();
    let exited = container.stop(Duration::from_millis(500)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!((exited.exit_code, exited.signal), (137, Some(9)));
    assert!(
        container.exec(vec!["true".into()], false).is_err(),
        "no exec into an exited container"
    );

    let dir = container.dir().to_owned();
    container.remove().await.unwrap();
    assert!(!dir.exists());
    assert!(mounts_under(&dir).is_empty());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let memory = format!(
        "/sys/fs/cgroup/memory/skiff/pod{}/{}-sleeper",
        fixture.pod_uid, fixture.pod_uid
    );
    assert!(!Path::new(&memory).exists(), "{memory}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_limit_oom_kills_and_says_so() {
    let fixture = Fixture::new("oom").await;
    let container = fixture
        .run(
            "hog",
            "head -c 200m /dev/zero | tail",
            json!({"limits": {"memory": "32Mi"}}),
        )
        .await
        .unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(30), container.wait())
        .await
        .unwrap();
    assert!(exited.oom_killed, "{exited:?}");
    assert_eq!(exited.reason, "OOMKilled");
    assert_eq!(exited.exit_code, 137);
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_are_adopted_from_disk_and_survive_their_handles() {
    let fixture = Fixture::new("adopt").await;
    let container = fixture
        .run("steady", "sleep 1000", json!({}))
        .await
        .unwrap();
    let ContainerState::Running { pid, started_at } = container.state() else {
        panic!("not running");
    };
    drop(container);
    // As after an agent restart: only what is on disk.
    let mut adopted = Container::list(&fixture.config).await.unwrap();
    assert_eq!(adopted.len(), 1);
    let adopted = adopted.remove(0);
    assert_eq!(adopted.labels()["name"], "steady");
    assert_eq!(adopted.state(), ContainerState::Running { pid, started_at });
    // The adopted handle sees the container end.
    let waiter = tokio::spawn(async move {
        let exited = adopted.wait().await;
        (adopted, exited)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (adopted, exited) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exited.signal, Some(9));
    adopted.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_is_a_start_error() {
    let fixture = Fixture::new("broken").await;
    let container: k8s_openapi::api::core::v1::Container =
        serde_json::from_value(json!({"name": "nope", "command": ["/bin/does-not-exist"]}))
            .unwrap();
    let layers = [fixture.layer.clone()];
    let id = format!("{}-nope", fixture.pod_uid);
    let input = SpecInput {
        container,
        image_config: ImageConfig::default(),
        layers: &layers,
        namespaces: fixture.sandbox.as_ref().unwrap().namespaces(),
        host_network: false,
        cgroups_path: cgroups::container_path(&fixture.pod_uid, &id),
        mounts: Vec::new(),
        pids_limit: None,
    };
    let oci = spec::build(&input).unwrap();
    let result = Container::create(&fixture.config, &id, BTreeMap::new(), oci, &layers).await;
    match result {
        Err(error) => assert!(error.to_string().contains("does-not-exist"), "{error}"),
        Ok(container) => {
            // libcontainer may report exec failures after start: then it exits 127-ish.
            let exited = container.wait().await;
            assert_ne!(exited.exit_code, 0, "{exited:?}");
            container.remove().await.unwrap();
        }
    }
    assert!(mounts_under(&fixture.config.containers_dir().join(&id)).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_hold_namespaces_until_removed() {
    let fixture = Fixture::new("holder").await;
    let sandbox = fixture.sandbox.clone().unwrap();
    let namespaces = sandbox.namespaces();
    assert_eq!(
        namespaces.keys().collect::<Vec<_>>(),
        ["ipc", "network", "uts"]
    );
    let dir = fixture.config.data_dir.join("pods").join(&fixture.pod_uid);
    assert_eq!(mounts_under(&dir).len(), 3);
    sandbox.remove().await.unwrap();
    assert!(mounts_under(&dir).is_empty());
    assert!(Sandbox::open(&dir).is_err());
}
