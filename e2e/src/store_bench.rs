//! `skiff-bench store`: writes and linearizable reads of 256-byte values against a
//! Skiff store and, when installed, etcd with the same member count, in one run.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use skiff_pki::KeyPair;
use skiff_proto::store as skiff;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

use crate::api_bench::{Api, bootstrap_token_path};
use crate::etcd;
use crate::process::{Process, free_port, on_path, sibling_binary, wait_for_port};
use crate::stats::{Samples, median};

/// Which system a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Skiff's store (`skiff-control-plane` processes).
    Skiff,
    /// etcd, the peer.
    Etcd,
}

impl System {
    /// Short name for tables and keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Skiff => "skiff",
            Self::Etcd => "etcd",
        }
    }
}

/// Workload sizes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Member counts to run (1 and 3).
    pub member_counts: Vec<usize>,
    /// Runs per system and member count; medians are reported.
    pub repeats: usize,
    /// Operations of the sequential (one client) write run.
    pub sequential_ops: usize,
    /// Operations per client of the concurrent runs.
    pub ops_per_client: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Value size in bytes.
    pub value_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            member_counts: vec![1, 3],
            repeats: 3,
            sequential_ops: 300,
            ops_per_client: 200,
            clients: 16,
            value_bytes: 256,
        }
    }
}

/// A running cluster of one system.
pub struct Cluster {
    system: System,
    endpoints: Vec<String>,
    processes: Vec<Process>,
}

impl Cluster {
    /// Starts `members` Skiff store members: one initializes, the others join it.
    pub async fn start_skiff(members: usize) -> anyhow::Result<Self> {
        let binary = sibling_binary("skiff-control-plane")?;
        let mut processes = Vec::new();
        let mut endpoints: Vec<String> = Vec::new();
        // The first member's API URL and server token, which the others join with.
        let mut join: Option<(String, String)> = None;
        for idx in 0..members {
            let dir = tempfile::tempdir()?;
            let mut args = vec![
                "--data-dir".to_owned(),
                dir.path().display().to_string(),
                "--listen-peer".to_owned(),
                "127.0.0.1:0".to_owned(),
                "--listen-api".to_owned(),
                "127.0.0.1:0".to_owned(),
            ];
            if let Some((api, token)) = &join {
                args.extend([
                    "--join".to_owned(),
                    api.clone(),
                    "--token".to_owned(),
                    token.clone(),
                ]);
            }
            let mut process = Process::spawn(&format!("skiff member {idx}"), &binary, &args, dir)?;
            let line = process
                .wait_for_line("serving peers on", Duration::from_secs(60))
                .await?;
            endpoints.push(line.rsplit(' ').next().unwrap_or_default().to_owned());
            // `… serving the API on https://BOUND as https://ADVERTISED`
            let line = process
                .wait_for_line("serving the API on", Duration::from_secs(60))
                .await?;
            if join.is_none() {
                let api = line.rsplit(' ').next().unwrap_or_default().to_owned();
                let data_dir = process.dir.path();
                let token_path = data_dir.join("token");
                let token = std::fs::read_to_string(&token_path)
                    .with_context(|| format!("reading {}", token_path.display()))?
                    .trim()
                    .to_owned();
                // The token works once its Secret is stored, just after the API serves.
                let pki = data_dir.join("pki");
                let ca_path = pki.join("ca.crt");
                let ca_pem = std::fs::read_to_string(&ca_path)
                    .with_context(|| format!("reading {}", ca_path.display()))?;
                let admin =
                    KeyPair::load(&pki, "admin").context("loading the admin's certificate")?;
                Api::try_new(api.clone(), &ca_pem, &admin)?
                    .wait_for(&bootstrap_token_path(&token)?)
                    .await?;
                join = Some((api, token));
            }
            processes.push(process);
        }
        Ok(Self {
            system: System::Skiff,
            endpoints,
            processes,
        })
    }

    /// Starts `members` etcd members as one cluster.
    pub async fn start_etcd(etcd_binary: &Path, members: usize) -> anyhow::Result<Self> {
        let ports: Vec<(u16, u16)> = (0..members)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial_cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(idx, (_, peer))| format!("m{idx}=http://127.0.0.1:{peer}"))
            .collect();
        let mut processes = Vec::new();
        let mut endpoints = Vec::new();
        for (idx, (client, peer)) in ports.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            let args = [
                format!("--name=m{idx}"),
                format!("--data-dir={}", dir.path().display()),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster={}", initial_cluster.join(",")),
                "--initial-cluster-state=new".to_owned(),
                "--initial-cluster-token=skiff-bench".to_owned(),
            ];
            processes.push(Process::spawn(
                &format!("etcd member {idx}"),
                etcd_binary,
                &args,
                dir,
            )?);
            endpoints.push(format!("127.0.0.1:{client}"));
        }
        for endpoint in &endpoints {
            wait_for_port(endpoint, Duration::from_secs(30)).await?;
        }
        Ok(Self {
            system: System::Etcd,
            endpoints,
            processes,
        })
    }

    /// One client per connection, spread round-robin over the members.
    pub async fn clients(&self, count: usize) -> anyhow::Result<Vec<Client>> {
        let mut clients = Vec::with_capacity(count);
        for idx in 0..count {
            let endpoint = &self.endpoints[idx % self.endpoints.len()];
            let channel = Channel::from_shared(format!("http://{endpoint}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            clients.push(match self.system {
                System::Skiff => Client::Skiff(skiff::kv_client::KvClient::new(channel)),
                System::Etcd => Client::Etcd(etcd::kv_client::KvClient::new(channel)),
            });
        }
        Ok(clients)
    }

    /// Waits until a write succeeds (a leader exists and serves).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = self.clients(1).await?.remove(0);
        loop {
            match client.put("/bench/ready".to_owned(), b"1".to_vec()).await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    return Err(
                        error.context(format!("{} cluster never became ready", self.system.name()))
                    );
                }
                Err(_) => sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Stops every member.
    pub async fn stop(self) {
        for process in self.processes {
            process.kill().await;
        }
    }
}

/// A connection to one member of either system.
#[derive(Clone)]
pub enum Client {
    /// Skiff's Kv service.
    Skiff(skiff::kv_client::KvClient<Channel>),
    /// etcd's KV service.
    Etcd(etcd::kv_client::KvClient<Channel>),
}

impl Client {
    /// Writes `value` under a new `key`.
    pub async fn put(&mut self, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::Skiff(client) => {
                let op = skiff::Op {
                    op: Some(skiff::op::Op::Create(skiff::CreateOp { key, value })),
                };
                let reply = client
                    .txn(skiff::TxnRequest { ops: vec![op] })
                    .await?
                    .into_inner();
                if !reply.succeeded {
                    bail!("write refused: {reply:?}");
                }
            }
            Self::Etcd(client) => {
                client
                    .put(etcd::PutRequest {
                        key: key.into_bytes(),
                        value,
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Reads `key` linearizably.
    pub async fn get(&mut self, key: String) -> anyhow::Result<()> {
        let found = match self {
            Self::Skiff(client) => !client
                .range(skiff::RangeRequest {
                    key,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .kvs
                .is_empty(),
            Self::Etcd(client) => !client
                .range(etcd::RangeRequest {
                    key: key.into_bytes(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .kvs
                .is_empty(),
        };
        if !found {
            bail!("key missing");
        }
        Ok(())
    }
}

/// What a workload does per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One client writing new keys.
    SequentialWrite,
    /// Many clients writing new keys.
    ConcurrentWrite,
    /// Many clients reading one key linearizably.
    ConcurrentRead,
}

impl Workload {
    /// Short name for tables and keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::SequentialWrite => "seq_write",
            Self::ConcurrentWrite => "write",
            Self::ConcurrentRead => "read",
        }
    }
}

/// Runs `ops_per_client` operations on each client concurrently.
async fn run(
    workload: Workload,
    clients: Vec<Client>,
    ops_per_client: usize,
    value: &[u8],
    run_id: usize,
) -> Samples {
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for (client_idx, mut client) in clients.into_iter().enumerate() {
        let value = value.to_vec();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(ops_per_client);
            let mut errors = 0;
            for op in 0..ops_per_client {
                let begin = Instant::now();
                let result = match workload {
                    Workload::SequentialWrite | Workload::ConcurrentWrite => {
                        client
                            .put(
                                format!("/bench/{run_id}/{}/{client_idx}/{op}", workload.name()),
                                value.clone(),
                            )
                            .await
                    }
                    Workload::ConcurrentRead => client.get("/bench/ready".to_owned()).await,
                };
                match result {
                    Ok(()) => latencies.push(begin.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for (mut task_latencies, task_errors) in tasks.join_all().await {
        latencies.append(&mut task_latencies);
        errors += task_errors;
    }
    Samples::new(latencies, started.elapsed(), errors)
}

/// One (members, workload, system) cell: medians over the repeats.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Member count.
    pub members: usize,
    /// The workload.
    pub workload: Workload,
    /// The system.
    pub system: System,
    /// Median p50 latency in milliseconds.
    pub p50_ms: f64,
    /// Median p99 latency in milliseconds.
    pub p99_ms: f64,
    /// Median throughput.
    pub ops_per_second: f64,
    /// Failed operations over all repeats.
    pub errors: usize,
}

/// Runs the whole benchmark, printing progress to stderr; returns every cell.
pub async fn bench(options: &Options) -> anyhow::Result<Vec<Cell>> {
    let etcd_binary = on_path("etcd");
    if etcd_binary.is_none() {
        eprintln!("etcd is not installed (apt-get install etcd-server): measuring Skiff alone");
    }
    let systems: Vec<System> = if etcd_binary.is_some() {
        vec![System::Skiff, System::Etcd]
    } else {
        vec![System::Skiff]
    };
    let workloads = [
        Workload::SequentialWrite,
        Workload::ConcurrentWrite,
        Workload::ConcurrentRead,
    ];
    let value = vec![b'v'; options.value_bytes];
    let mut cells = Vec::new();
    for &members in &options.member_counts {
        // samples[system][workload] over repeats
        let mut samples: Vec<Vec<Vec<Samples>>> =
            vec![vec![Vec::new(); workloads.len()]; systems.len()];
        for repeat in 0..options.repeats {
            // Alternate which system goes first, so drift affects both alike.
            let order: Vec<usize> = if repeat % 2 == 0 {
                (0..systems.len()).collect()
            } else {
                (0..systems.len()).rev().collect()
            };
            for system_idx in order {
                let system = systems[system_idx];
                eprintln!(
                    "=== store: {} with {members} member(s), run {}/{}",
                    system.name(),
                    repeat + 1,
                    options.repeats
                );
                let cluster = match system {
                    System::Skiff => Cluster::start_skiff(members).await?,
                    System::Etcd => {
                        Cluster::start_etcd(etcd_binary.as_ref().context("etcd binary")?, members)
                            .await?
                    }
                };
                cluster.wait_ready().await?;
                // Warm up connections and the leader's pipeline.
                run(
                    Workload::ConcurrentWrite,
                    cluster.clients(options.clients).await?,
                    10,
                    &value,
                    usize::MAX,
                )
                .await;
                for (workload_idx, workload) in workloads.iter().enumerate() {
                    let (clients, ops) = match workload {
                        Workload::SequentialWrite => (1, options.sequential_ops),
                        _ => (options.clients, options.ops_per_client),
                    };
                    let result = run(
                        *workload,
                        cluster.clients(clients).await?,
                        ops,
                        &value,
                        repeat,
                    )
                    .await;
                    samples[system_idx][workload_idx].push(result);
                }
                cluster.stop().await;
            }
        }
        for (system_idx, system) in systems.iter().enumerate() {
            for (workload_idx, workload) in workloads.iter().enumerate() {
                let runs = &samples[system_idx][workload_idx];
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                cells.push(Cell {
                    members,
                    workload: *workload,
                    system: *system,
                    p50_ms: median(runs.iter().map(|s| ms(s.percentile(0.5))).collect()),
                    p99_ms: median(runs.iter().map(|s| ms(s.percentile(0.99))).collect()),
                    ops_per_second: median(runs.iter().map(Samples::ops_per_second).collect()),
                    errors: runs.iter().map(|s| s.errors).sum(),
                });
            }
        }
    }
    Ok(cells)
}

/// The human-readable table.
pub fn table(cells: &[Cell]) -> String {
    let mut out = String::from("MEMBERS  WORKLOAD   SYSTEM  P50_MS   P99_MS   OPS/S     ERRORS\n");
    for cell in cells {
        let _ = writeln!(
            out,
            "{:<8} {:<10} {:<7} {:<8.3} {:<8.3} {:<9.0} {}",
            cell.members,
            cell.workload.name(),
            cell.system.name(),
            cell.p50_ms,
            cell.p99_ms,
            cell.ops_per_second,
            cell.errors
        );
    }
    out
}

/// Ratios ours/peer for throughput (higher is better) and peer/ours for p99 latency
/// (higher is better), per member count and workload.
pub fn ratios(cells: &[Cell]) -> Vec<(String, f64)> {
    let mut ratios = Vec::new();
    for ours in cells.iter().filter(|c| c.system == System::Skiff) {
        let Some(peer) = cells.iter().find(|c| {
            c.system == System::Etcd && c.members == ours.members && c.workload == ours.workload
        }) else {
            continue;
        };
        let prefix = format!("m{}_{}", ours.members, ours.workload.name());
        ratios.push((
            format!("{prefix}_ops_vs_peer"),
            ours.ops_per_second / peer.ops_per_second.max(f64::EPSILON),
        ));
        ratios.push((
            format!("{prefix}_p99_vs_peer"),
            peer.p99_ms / ours.p99_ms.max(f64::EPSILON),
        ));
    }
    ratios
}

/// The `RESULT store …` line: every figure of ours, every ratio, and `vs_peer` = the
/// 3-member concurrent write throughput ratio when etcd ran.
pub fn result_line(cells: &[Cell]) -> String {
    let mut line = String::from("RESULT store");
    for cell in cells.iter().filter(|c| c.system == System::Skiff) {
        let prefix = format!("m{}_{}", cell.members, cell.workload.name());
        let _ = write!(
            line,
            " {prefix}_ops={:.0} {prefix}_p50_ms={:.3} {prefix}_p99_ms={:.3}",
            cell.ops_per_second, cell.p50_ms, cell.p99_ms
        );
    }
    let ratios = ratios(cells);
    for (key, ratio) in &ratios {
        let _ = write!(line, " {key}={ratio:.2}");
    }
    let headline = ratios
        .iter()
        .find(|(key, _)| key == "m3_write_ops_vs_peer")
        .or_else(|| {
            ratios
                .iter()
                .find(|(key, _)| key.ends_with("_write_ops_vs_peer"))
        });
    if let Some((_, ratio)) = headline {
        let _ = write!(line, " vs_peer={ratio:.2}");
    }
    line
}

/// Every cell as JSON, for `--json`.
pub fn to_json(cells: &[Cell]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| {
            serde_json::json!({
                "members": c.members, "workload": c.workload.name(), "system": c.system.name(),
                "p50_ms": c.p50_ms, "p99_ms": c.p99_ms, "ops_per_second": c.ops_per_second, "errors": c.errors,
            })
        })
        .collect();
    let ratios: serde_json::Map<String, serde_json::Value> = ratios(cells)
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    serde_json::json!({ "bench": "store", "cells": rows, "ratios": ratios })
}
