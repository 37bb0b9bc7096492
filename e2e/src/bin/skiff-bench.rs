//! `skiff-bench`: runs a benchmark, prints progress and a table, then (as its last
//! line) `RESULT <bench> key=value …` with `vs_peer` when a peer ran in the same run.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use skiff_e2e::{api_bench, pod_start_bench, schedule_bench, service_bench, store_bench};

#[derive(Debug, Parser)]
#[command(name = "skiff-bench", version)]
struct Flags {
    #[command(subcommand)]
    bench: Bench,
    /// Also write the full report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Store writes and linearizable reads vs etcd, with 1 and 3 members.
    Store {
        /// Runs per system and member count (medians are reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Operations per client in the concurrent runs.
        #[arg(long, default_value_t = 200)]
        ops_per_client: usize,
        /// Member counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        members: Vec<usize>,
    },
    /// The Kubernetes API: pod creates, LIST (JSON and Table), WATCH fan-out, memory.
    Api {
        /// Pods created, then listed.
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// Concurrent clients creating the pods.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Concurrent watchers of the pods.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Updates fanned out to the watchers, made one after the other.
        #[arg(long, default_value_t = 200)]
        updates: usize,
        /// Repeats of each LIST.
        #[arg(long, default_value_t = 20)]
        list_repeats: usize,
    },
    /// Pod start (assignment → container running, image cached) vs `crun run`, and
    /// the node agent's memory idle and with many pods. Needs root.
    PodStart {
        /// Timed starts per system.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Pods running at once for the loaded memory figure.
        #[arg(long, default_value_t = 100)]
        pods: usize,
    },
    /// The service proxy: nftables programming time for many services, and request
    /// throughput through a ClusterIP vs straight to the pod. Needs root.
    Service {
        /// Services in the big ruleset.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Ready endpoints per service.
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        /// Requests per throughput round.
        #[arg(long, default_value_t = 4000)]
        requests: usize,
    },
    /// The scheduler: pods placed per second on hollow nodes, create→bound latency.
    Schedule {
        /// Hollow nodes (Node objects without an agent).
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Pods created and placed.
        #[arg(long, default_value_t = 30_000)]
        pods: usize,
        /// Concurrent clients creating nodes and pods.
        #[arg(long, default_value_t = 32)]
        clients: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    match flags.bench {
        Bench::Store {
            repeats,
            clients,
            ops_per_client,
            members,
        } => {
            let options = store_bench::Options {
                member_counts: members,
                repeats,
                clients,
                ops_per_client,
                ..Default::default()
            };
            let cells = store_bench::bench(&options).await?;
            print!("{}", store_bench::table(&cells));
            if let Some(path) = &flags.json {
                std::fs::write(
                    path,
                    serde_json::to_vec_pretty(&store_bench::to_json(&cells))?,
                )?;
            }
            println!("{}", store_bench::result_line(&cells));
        }
        Bench::Api {
            pods,
            clients,
            watchers,
            updates,
            list_repeats,
        } => {
            let options = api_bench::Options {
                pods,
                clients,
                watchers,
                updates,
                list_repeats,
            };
            let report = api_bench::bench(&options).await?;
            print!("{}", api_bench::table(&report));
            if let Some(path) = &flags.json {
                std::fs::write(
                    path,
                    serde_json::to_vec_pretty(&api_bench::to_json(&report))?,
                )?;
            }
            println!("{}", api_bench::result_line(&report));
        }
        Bench::PodStart { runs, pods } => {
            let options = pod_start_bench::Options {
                runs,
                pods_for_memory: pods,
            };
            let report = pod_start_bench::bench(&options).await?;
            print!("{}", pod_start_bench::table(&report));
            if let Some(path) = &flags.json {
                std::fs::write(
                    path,
                    serde_json::to_vec_pretty(&pod_start_bench::to_json(&report))?,
                )?;
            }
            println!("{}", pod_start_bench::result_line(&report));
        }
        Bench::Service {
            services,
            endpoints,
            requests,
        } => {
            let options = service_bench::Options {
                services,
                endpoints,
                requests,
                ..Default::default()
            };
            let report = service_bench::bench(&options).await?;
            print!("{}", service_bench::table(&report));
            if let Some(path) = &flags.json {
                std::fs::write(
                    path,
                    serde_json::to_vec_pretty(&service_bench::to_json(&report))?,
                )?;
            }
            println!("{}", service_bench::result_line(&report));
        }
        Bench::Schedule {
            nodes,
            pods,
            clients,
        } => {
            let options = schedule_bench::Options {
                nodes,
                pods,
                clients,
            };
            let report = schedule_bench::bench(&options).await?;
            print!("{}", schedule_bench::table(&report));
            if let Some(path) = &flags.json {
                std::fs::write(
                    path,
                    serde_json::to_vec_pretty(&schedule_bench::to_json(&report))?,
                )?;
            }
            println!("{}", schedule_bench::result_line(&report));
        }
    }
    Ok(())
}
