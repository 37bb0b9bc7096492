//! `skiff-bench pod-start`: how fast a pod bound to a node runs, side by side with
//! `crun run` of the same busybox rootfs in the same run, and the agent's memory.
//!
//! Per run (image cached): a pod with `nodeName` set is created through the API (the
//! assignment) and timed until (a) its container process started — the supervisor's
//! nanosecond `state.json` — and (b) a watch of the API sees it `Running`. Skiff and
//! crun runs alternate, so both see the same machine. crun 1.8 refuses this machine's
//! hybrid cgroups, so it runs in a private mount namespace with the cgroup2 mount
//! removed (RECIPES.md); that wrapper's own cost is measured and subtracted.
//! Memory: the agent's RSS idle, and with 100 running pods.
//!
//! The agent runs in its node's network namespace on a test fabric, with the control
//! plane and registry in the fabric's (see [`crate::netns`]); the bench's API client
//! reaches the control plane through a port forwarded from the host's loopback.
//!
//! Bounded: every wait has a deadline; every pod and crun container is deleted.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

use crate::agent::NodeAgent;
use crate::api_bench::{Api, Server, rss_kib};
use crate::netns::Fabric;
use crate::process::on_path;
use crate::registry::{ImageSpec, TestRegistry};
use crate::stats::Samples;

/// How long one pod may take to run, or to be removed.
const POD_LIMIT: Duration = Duration::from_secs(60);
/// The node's name.
const NODE: &str = "bench-node";

/// Workload sizes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Timed starts per system.
    pub runs: usize,
    /// Pods running at once for the loaded memory figure.
    pub pods_for_memory: usize,
}

/// What one run measured.
#[derive(Debug)]
pub struct Report {
    /// Pod created → container process started.
    pub skiff_started: Samples,
    /// Pod created → `Running` seen by an API watch.
    pub skiff_running: Samples,
    /// `crun run -d` until it returned (the container runs), wrapper cost subtracted.
    pub crun: Option<Samples>,
    /// The wrapper's own median cost, subtracted from crun's runs.
    pub crun_wrapper: Duration,
    /// The agent's RSS with no pods, KiB.
    pub rss_idle_kib: u64,
    /// The agent's RSS with `pods_for_memory` running pods, KiB.
    pub rss_loaded_kib: u64,
    /// How many pods were running for `rss_loaded_kib`.
    pub loaded_pods: usize,
}

/// Runs the benchmark.
pub async fn bench(options: &Options) -> anyhow::Result<Report> {
    // The agent runs in its own network namespace on a test fabric, where the control
    // plane and registry run too (the API is forwarded to the host's loopback).
    let fabric = Fabric::create()?;
    let registry = TestRegistry::start_in(&fabric)?;
    let image = registry.push_busybox_image(
        "skiff/sleep:1",
        &ImageSpec {
            entrypoint: vec!["/bin/sleep".to_owned()],
            cmd: vec!["3600".to_owned()],
            ..ImageSpec::default()
        },
    )?;
    let server = Server::start_in(&fabric).await?;
    server.wait_ready().await?;
    let mut agent = NodeAgent::start_on(
        &fabric,
        NODE,
        &server.server_url,
        &server.agent_token,
        &registry.address(),
    )
    .await?;
    let agent_pid = agent.pid().context("the agent exited at once")?;
    let api = server.api.clone();

    // Warm-up: pulls the image and touches every code path once.
    run_pod(&api, &agent, "warm", &image).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = rss_kib(agent_pid)?;

    let crun = on_path("crun");
    let bundle = tempfile::tempdir()?;
    if crun.is_some() {
        make_bundle(bundle.path())?;
    }
    let crun_wrapper = if crun.is_some() {
        let mut costs = Vec::new();
        for _ in 0..options.runs.min(20) {
            costs.push(time_wrapped("true")?);
        }
        Samples::new(costs, Duration::ZERO, 0).percentile(0.5)
    } else {
        Duration::ZERO
    };
    let (mut started, mut running, mut crun_runs) = (Vec::new(), Vec::new(), Vec::new());
    let began = Instant::now();
    for run in 0..options.runs {
        let (to_start, to_running) = run_pod(&api, &agent, &format!("start-{run}"), &image).await?;
        started.push(to_start);
        running.push(to_running);
        if crun.is_some() {
            crun_runs.push(crun_once(bundle.path(), run)?.saturating_sub(crun_wrapper));
        }
    }
    let elapsed = began.elapsed();

    let (loaded_pods, rss_loaded_kib) =
        loaded_memory(&api, &agent, agent_pid, &image, options.pods_for_memory).await?;
    agent.kill().await;
    drop(agent);
    Ok(Report {
        skiff_started: Samples::new(started, elapsed, 0),
        skiff_running: Samples::new(running, elapsed, 0),
        crun: crun.is_some().then(|| Samples::new(crun_runs, elapsed, 0)),
        crun_wrapper,
        rss_idle_kib,
        rss_loaded_kib,
        loaded_pods,
    })
}

/// The pod object: bound to the node, the sleep image, no grace period.
fn pod_json(name: &str, image: &str) -> Bytes {
    Bytes::from(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": image}]},
        })
        .to_string(),
    )
}

/// Creates a pod, times it to started and to Running, deletes it and waits until the
/// node removed it.
async fn run_pod(
    api: &Api,
    agent: &NodeAgent,
    name: &str,
    image: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let path = "/api/v1/namespaces/default/pods";
    // The watch is open before the create, so no transition is missed.
    let watch = api
        .open(&format!(
            "{path}?watch=1&fieldSelector=metadata.name%3D{name}"
        ))
        .await?;
    let mut body = watch.into_body();
    let created_wall = SystemTime::now();
    let created = Instant::now();
    let reply = api
        .send(
            Method::POST,
            path,
            Some("application/json"),
            "application/json",
            pod_json(name, image),
        )
        .await?;
    if reply.status != StatusCode::CREATED {
        bail!(
            "creating pod {name}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let pod: Value = serde_json::from_slice(&reply.body)?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut buffer = Vec::new();
    let to_running = timeout(POD_LIMIT, async {
        loop {
            let frame = body
                .frame()
                .await
                .context("the watch ended")?
                .context("reading the watch")?;
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).unwrap_or_default();
                if event["object"]["status"]["phase"] == "Running" {
                    return Ok::<_, anyhow::Error>(created.elapsed());
                }
            }
        }
    })
    .await
    .with_context(|| format!("pod {name} did not run within {POD_LIMIT:?}"))??;
    drop(body);
    let state: Value = serde_json::from_slice(
        &std::fs::read(
            agent
                .container_dir(&format!("{uid}-c-0"))
                .join("state.json"),
        )
        .context("reading the container's state.json")?,
    )?;
    let started_ns = state["started_at_ns"]
        .as_u64()
        .context("no started_at_ns")?;
    let created_ns = created_wall
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_nanos();
    let to_start = Duration::from_nanos(
        u64::try_from(u128::from(started_ns).saturating_sub(created_ns)).unwrap_or(0),
    );
    delete_and_wait(api, agent, &[(name.to_owned(), uid)]).await?;
    Ok((to_start, to_running))
}

/// Deletes pods and waits until the agent removed them from the node.
async fn delete_and_wait(
    api: &Api,
    agent: &NodeAgent,
    pods: &[(String, String)],
) -> anyhow::Result<()> {
    for (name, _) in pods {
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        let reply = api
            .send(
                Method::DELETE,
                &path,
                None,
                "application/json",
                Bytes::new(),
            )
            .await?;
        if !reply.status.is_success() {
            bail!(
                "deleting pod {name}: {}",
                String::from_utf8_lossy(&reply.body)
            );
        }
    }
    let deadline = Instant::now() + POD_LIMIT;
    for (name, uid) in pods {
        while agent.data_dir.join("pods").join(uid).exists() {
            if Instant::now() > deadline {
                bail!("pod {name} was not removed from the node within {POD_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// Starts `count` pods at once, waits until all run, reads the agent's RSS, and
/// removes them.
async fn loaded_memory(
    api: &Api,
    agent: &NodeAgent,
    agent_pid: u32,
    image: &str,
    count: usize,
) -> anyhow::Result<(usize, u64)> {
    let path = "/api/v1/namespaces/default/pods";
    let mut pods = Vec::new();
    for index in 0..count {
        let name = format!("load-{index}");
        let reply = api
            .send(
                Method::POST,
                path,
                Some("application/json"),
                "application/json",
                pod_json(&name, image),
            )
            .await?;
        if reply.status != StatusCode::CREATED {
            bail!(
                "creating pod {name}: {}",
                String::from_utf8_lossy(&reply.body)
            );
        }
        let pod: Value = serde_json::from_slice(&reply.body)?;
        pods.push((
            name,
            pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let reply = api
            .send(
                Method::GET,
                &format!("{path}?fieldSelector=status.phase%3DRunning"),
                None,
                "application/json",
                Bytes::new(),
            )
            .await?;
        let list: Value = serde_json::from_slice(&reply.body)?;
        let running = list["items"].as_array().map_or(0, Vec::len);
        if running >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {running} of {count} pods ran within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(agent_pid)?;
    delete_and_wait(api, agent, &pods).await?;
    Ok((count, rss))
}

/// A bundle of busybox-static running `sleep 3600`, from `crun spec`.
fn make_bundle(dir: &Path) -> anyhow::Result<()> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("copying busybox")?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep"))?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))?;
    let status = std::process::Command::new("crun")
        .arg("spec")
        .current_dir(dir)
        .status()?;
    if !status.success() {
        bail!("crun spec failed: {status}");
    }
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["/bin/sleep", "3600"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// Runs `command` (a shell command) in a private mount namespace without the cgroup2
/// mount, and times it.
fn time_wrapped(command: &str) -> anyhow::Result<Duration> {
    let script = format!("umount /sys/fs/cgroup/unified 2>/dev/null; {command}");
    let started = std::time::Instant::now();
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(elapsed)
}

/// Times one detached `crun run` of the bundle, then deletes the container.
fn crun_once(bundle: &Path, run: usize) -> anyhow::Result<Duration> {
    let id = format!("skiff-bench-{}-{run}", std::process::id());
    let bundle = bundle.display();
    let elapsed = time_wrapped(&format!("exec crun run -d --bundle {bundle} {id}"));
    let deleted = time_wrapped(&format!("exec crun delete -f {id}"));
    let elapsed = elapsed?;
    deleted?;
    Ok(elapsed)
}

/// Milliseconds with two decimals.
fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>10}",
        "pod start (image cached)", "p50 ms", "p99 ms"
    );
    let mut row = |label: &str, samples: &Samples| {
        let _ = writeln!(
            out,
            "{label:<44} {:>10} {:>10}",
            ms(samples.percentile(0.5)),
            ms(samples.percentile(0.99))
        );
    };
    row(
        "skiff: created -> container process started",
        &report.skiff_started,
    );
    row(
        "skiff: created -> Running seen by a watch",
        &report.skiff_running,
    );
    if let Some(crun) = &report.crun {
        row("crun run -d (same rootfs)", crun);
    }
    let _ = writeln!(
        out,
        "crun wrapper (unshare + umount) subtracted: {} ms",
        ms(report.crun_wrapper)
    );
    let _ = writeln!(
        out,
        "agent RSS: idle {} KiB, with {} pods {} KiB",
        report.rss_idle_kib, report.loaded_pods, report.rss_loaded_kib
    );
    out
}

/// The ratio of Skiff's median start to crun's, when crun ran.
pub fn ratio(report: &Report) -> Option<f64> {
    let crun = report.crun.as_ref()?.percentile(0.5).as_secs_f64();
    (crun > 0.0).then(|| report.skiff_started.percentile(0.5).as_secs_f64() / crun)
}

/// The last line: `RESULT pod-start key=value …`.
pub fn result_line(report: &Report) -> String {
    let mut line = format!(
        "RESULT pod-start started_p50_ms={} started_p99_ms={} running_p50_ms={} running_p99_ms={} rss_idle_kib={} rss_{}_pods_kib={}",
        ms(report.skiff_started.percentile(0.5)),
        ms(report.skiff_started.percentile(0.99)),
        ms(report.skiff_running.percentile(0.5)),
        ms(report.skiff_running.percentile(0.99)),
        report.rss_idle_kib,
        report.loaded_pods,
        report.rss_loaded_kib,
    );
    if let Some(crun) = &report.crun {
        let _ = write!(
            line,
            " crun_p50_ms={} crun_p99_ms={}",
            ms(crun.percentile(0.5)),
            ms(crun.percentile(0.99))
        );
    }
    if let Some(ratio) = ratio(report) {
        let _ = write!(line, " vs_peer={ratio:.2}");
    }
    line
}

/// The report as JSON.
pub fn to_json(report: &Report) -> Value {
    let samples = |s: &Samples| json!({"p50_ms": s.percentile(0.5).as_secs_f64() * 1000.0, "p99_ms": s.percentile(0.99).as_secs_f64() * 1000.0});
    json!({
        "skiff_started": samples(&report.skiff_started),
        "skiff_running": samples(&report.skiff_running),
        "crun": report.crun.as_ref().map(samples),
        "crun_wrapper_ms": report.crun_wrapper.as_secs_f64() * 1000.0,
        "rss_idle_kib": report.rss_idle_kib,
        "rss_loaded_kib": report.rss_loaded_kib,
        "loaded_pods": report.loaded_pods,
        "vs_peer": ratio(report),
    })
}
