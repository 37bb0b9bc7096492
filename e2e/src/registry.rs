//! A real OCI registry for tests (Debian's `docker-registry`, plain HTTP, on the host's
//! 127.0.0.1 or inside a test's [`Fabric`]) and test images built from busybox-static
//! with `umoci`, pushed with `skopeo` (run inside the fabric when the registry is
//! there). Killed (by PID) and removed on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns::{Fabric, NetNs};

/// Busybox applets linked into test images.
const APPLETS: &[&str] = &[
    "sh", "httpd", "sleep", "true", "false", "cat", "echo", "hostname", "ls", "wget", "ps", "id",
    "env", "mkdir", "rm", "touch", "dd", "head", "tail", "grep", "kill", "nc", "mount", "umount",
    "seq", "yes", "trap",
];

/// How a test image runs, and what its layers hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// Add a second layer that deletes `/www/index.html` (a whiteout) and replaces
    /// `/etc/opaque/` wholesale (an opaque directory).
    pub whiteout_layer: bool,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            entrypoint: Vec::new(),
            cmd: vec!["sh".to_owned()],
            env: vec!["PATH=/bin".to_owned()],
            working_dir: None,
            user: None,
            whiteout_layer: false,
        }
    }
}

/// A running `docker-registry`.
pub struct TestRegistry {
    address: String,
    /// The namespace it listens in (`None`: the host's loopback); `skopeo` runs there.
    netns: Option<PathBuf>,
    dir: tempfile::TempDir,
    child: Child,
}

impl TestRegistry {
    /// Starts a registry on a free loopback port of the host and waits until it
    /// listens.
    pub fn start() -> anyhow::Result<Self> {
        let port = crate::process::free_port()?;
        Self::start_at(None, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Starts a registry inside `fabric`'s namespace on [`Fabric::IP`] (where every
    /// node reaches it) and waits until it listens.
    pub fn start_in(fabric: &Fabric) -> anyhow::Result<Self> {
        let port = fabric.ns.free_port(Fabric::IP.into())?;
        Self::start_at(Some(&fabric.ns), SocketAddr::from((Fabric::IP, port)))
    }

    fn start_at(netns: Option<&NetNs>, address: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the registry's dir")?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {address}}}\nlog: {{level: error}}\n",
                dir.path().join("data").display()
            ),
        )?;
        let mut command = match netns {
            Some(netns) => netns.command("docker-registry"),
            None => Command::new("docker-registry"),
        };
        let child = command
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let registry = Self {
            address: address.to_string(),
            netns: netns.map(|netns| netns.path().to_owned()),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let step = Duration::from_millis(20);
        loop {
            let connected = match netns {
                Some(netns) => netns.connect_blocking(address, step).is_ok(),
                None => std::net::TcpStream::connect(address).is_ok(),
            };
            if connected {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {address} within 20 s");
            }
            std::thread::sleep(step);
        }
    }

    /// A command running `program` where the registry is reachable (inside its
    /// namespace, if any).
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(netns) => crate::netns::command_in(netns, program),
            None => Command::new(program),
        }
    }

    /// `HOST:PORT`: `127.0.0.1:PORT`, or `10.77.0.1:PORT` inside a fabric.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Builds a busybox image per `spec` and pushes it as `repository:tag`; returns
    /// the full reference (`HOST:PORT/repository:tag`).
    pub fn push_busybox_image(
        &self,
        repository_and_tag: &str,
        spec: &ImageSpec,
    ) -> anyhow::Result<String> {
        let layout = self.dir.path().join(format!("layout-{:016x}", rand_u64()));
        build_image(&layout, spec)?;
        let reference = format!("{}/{repository_and_tag}", self.address);
        run(self.command("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:img", layout.display()),
            &format!("docker://{reference}"),
        ]))?;
        let _ = std::fs::remove_dir_all(&layout);
        Ok(reference)
    }

    /// The manifest digest the registry serves for `repository:tag`.
    pub fn digest(&self, repository_and_tag: &str) -> anyhow::Result<String> {
        let output = run(self.command("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{}/{repository_and_tag}", self.address),
        ]))?;
        Ok(output.trim().to_owned())
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds an OCI layout at `layout` with tag `img`.
fn build_image(layout: &Path, spec: &ImageSpec) -> anyhow::Result<()> {
    let image = format!("{}:img", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    let bundle = layout.with_extension("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    for dir in ["bin", "www", "etc/opaque", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("www/index.html"), "hello\n")?;
    std::fs::write(rootfs.join("etc/opaque/lower"), "lower\n")?;
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )?;
    let mut permissions = std::fs::metadata(rootfs.join("tmp"))?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o1777);
    std::fs::set_permissions(rootfs.join("tmp"), permissions)?;
    run(Command::new("umoci")
        .args(["repack", "--refresh-bundle", "--image", &image])
        .arg(&bundle))?;
    if spec.whiteout_layer {
        std::fs::remove_file(rootfs.join("www/index.html"))?;
        std::fs::remove_dir_all(rootfs.join("etc/opaque"))?;
        std::fs::create_dir_all(rootfs.join("etc/opaque"))?;
        std::fs::write(rootfs.join("etc/opaque/upper"), "upper\n")?;
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle))?;
    }
    let mut config = vec!["config".to_owned(), "--image".to_owned(), image.clone()];
    for item in &spec.entrypoint {
        config.push(format!("--config.entrypoint={item}"));
    }
    for item in &spec.cmd {
        config.push(format!("--config.cmd={item}"));
    }
    for item in &spec.env {
        config.push(format!("--config.env={item}"));
    }
    if let Some(dir) = &spec.working_dir {
        config.push(format!("--config.workingdir={dir}"));
    }
    if let Some(user) = &spec.user {
        config.push(format!("--config.user={user}"));
    }
    run(Command::new("umoci").args(&config))?;
    let _ = std::fs::remove_dir_all(&bundle);
    Ok(())
}

/// Runs a command; its stdout, or an error with its stderr.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}
