//! The `skiff` command-line client.
//!
//! - [`Cli`]: the command line (clap), with kubectl's global connection flags.
//! - `commands`: one module per verb (`get`, `apply`, `create`, `delete`, `scale`,
//!   `logs`, `rollout`, `describe`, `api_resources`, `cordon` (and uncordon), `drain`,
//!   `version`, `validate`, `explain`, `up`, `images`).
//! - `kubeconfig`: choosing the cluster, namespace and credentials like kubectl.
//! - `client`: the HTTP client of the Kubernetes-shaped API and its errors.
//! - `resources`: resolving `TYPE[,TYPE] NAME…` and `TYPE/NAME` arguments.
//! - `manifests`: reading `-f FILE|DIR|URL|-` inputs.
//! - `printers`: everything printed for humans.
//! - `describe`, `jsonpath`, `three_way`: pure cores of `describe`, `-o jsonpath`
//!   and client-side `apply`.

mod client;
mod commands;
mod describe;
mod jsonpath;
mod kubeconfig;
mod manifests;
mod printers;
mod resources;
mod three_way;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Skiff's kubectl-like client.
#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: a small Kubernetes-style container orchestrator",
    propagate_version = true
)]
pub struct Cli {
    /// Flags choosing the cluster and namespace, accepted by every command.
    #[command(flatten)]
    pub global: GlobalFlags,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags.
#[derive(Debug, Default, Args)]
pub struct GlobalFlags {
    /// Path to the kubeconfig file to use (instead of KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The address and port of the API server.
    #[arg(short = 's', long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// The namespace scope for this request.
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// List or watch objects across all namespaces.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// How long to wait for one server request (`0`: no limit); ends watches too.
    #[arg(long, global = true, default_value = "0", value_name = "DURATION")]
    pub request_timeout: String,
}

/// The verbs `skiff` understands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the client version.
    Version,
    /// Parse, default and validate manifests offline; exit non-zero on any error.
    Validate {
        /// Files, directories (their .yaml, .yml and .json files) or `-` for stdin.
        #[arg(short = 'f', long = "filename", required = true)]
        filenames: Vec<PathBuf>,
        /// Descend into sub-directories of directories given with -f.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Describe the fields of a resource: `skiff explain deployment.spec.strategy`.
    Explain {
        /// `KIND[.field.field…]`, with any name kubectl accepts (`deploy`, `pods`).
        path: String,
    },
    /// Start a whole single-node cluster in this process (needs root); Ctrl-C stops it.
    Up(UpArgs),
    /// The images of this node: import archives, list.
    Images {
        /// What to do.
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Commands that talk to the API server.
    #[command(flatten)]
    Remote(RemoteCommand),
}

/// `skiff up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the cluster keeps its state, images and kubeconfig (default ~/.skiff).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the Kubernetes API listens.
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDRESS")]
    pub listen: std::net::SocketAddr,
    /// Do not build and import the demo image (`skiff.local/httpd:1`).
    #[arg(long)]
    pub no_demo_image: bool,
}

/// `skiff images <what>`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Import images from OCI archives or `docker save` tars into this node.
    Import {
        /// The archives.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The node agent's data directory.
        #[arg(long, default_value_os_t = commands::images::default_data_dir(), value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// List this node's images.
    #[command(visible_alias = "ls")]
    List {
        /// The node agent's data directory.
        #[arg(long, default_value_os_t = commands::images::default_data_dir(), value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Write the demo image (`skiff.local/httpd:1`, from this machine's busybox) as an
    /// OCI archive, for `skiff images import` on other nodes.
    BuildDemo {
        /// The archive to write.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
        /// The image's name.
        #[arg(long, default_value = "skiff.local/httpd:1", value_name = "REFERENCE")]
        name: String,
    },
}

/// The verbs that talk to the API server.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Display one or many resources: `skiff get pods`, `skiff get deploy,svc -A`.
    Get(GetArgs),
    /// Create or update resources from manifests: `skiff apply -f app.yaml`.
    Apply(ApplyArgs),
    /// Create a resource from manifests, or a namespace by name.
    Create(CreateArgs),
    /// Delete resources by type and name, label selector, or manifests.
    Delete(DeleteArgs),
    /// Set a new size for a deployment or replica set: `skiff scale deploy/web --replicas=3`.
    Scale(ScaleArgs),
    /// Print the logs of a container in a pod.
    Logs(LogsArgs),
    /// Manage the rollout of a deployment.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Show details of a resource, with its events.
    Describe(DescribeArgs),
    /// Print the resource types the server supports.
    ApiResources(ApiResourcesArgs),
    /// Mark nodes unschedulable: `skiff cordon NODE`.
    Cordon {
        /// The nodes.
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Mark nodes schedulable again: `skiff uncordon NODE`.
    Uncordon {
        /// The nodes.
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Drain a node for maintenance: cordon it, then evict its pods.
    Drain(DrainArgs),
}

/// `skiff drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node.
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Also delete pods that no controller manages (they are not recreated).
    #[arg(long)]
    pub force: bool,
    /// Leave DaemonSet-managed pods alone instead of refusing to drain.
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Also delete pods with emptyDir volumes (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Seconds each pod gets to terminate (negative: the pod's own).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// How long to wait before giving up (`0`: forever, as kubectl).
    #[arg(long, default_value = "0s")]
    pub timeout: String,
}

/// `skiff get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// `TYPE[,TYPE…] [NAME…]` or `TYPE/NAME…`.
    #[arg(required = true, value_name = "TYPE[.NAME]")]
    pub resources: Vec<String>,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`metadata.name=web`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Print each object's labels as the last column.
    #[arg(long)]
    pub show_labels: bool,
    /// Do not print the header row.
    #[arg(long)]
    pub no_headers: bool,
    /// Keep `metadata.managedFields` in JSON and YAML output.
    #[arg(long)]
    pub show_managed_fields: bool,
}

/// `skiff apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files, directories, URLs or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub filenames: Vec<String>,
    /// Descend into sub-directories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Let the server merge the manifest (server-side apply).
    #[arg(long)]
    pub server_side: bool,
    /// With --server-side, take ownership of fields other managers own.
    #[arg(long)]
    pub force_conflicts: bool,
    /// The field manager recorded for the changes.
    #[arg(long)]
    pub field_manager: Option<String>,
}

/// `skiff create`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreateArgs {
    /// What to create by name.
    #[command(subcommand)]
    pub command: Option<CreateCommand>,
    /// Files, directories, URLs or `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    pub filenames: Vec<String>,
    /// Descend into sub-directories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// `skiff create <what>`.
#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a namespace.
    #[command(visible_alias = "ns")]
    Namespace {
        /// The namespace's name.
        name: String,
    },
}

/// `skiff delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// `TYPE [NAME…]` or `TYPE/NAME…`.
    #[arg(value_name = "TYPE[.NAME]")]
    pub resources: Vec<String>,
    /// Files, directories, URLs or `-` for stdin naming the objects to delete.
    #[arg(short = 'f', long = "filename")]
    pub filenames: Vec<String>,
    /// Descend into sub-directories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Wait until the objects are gone before returning.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    pub wait: bool,
    /// Treat "not found" as success.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// How long --wait waits (`0`: no limit).
    #[arg(long, default_value = "0s")]
    pub timeout: String,
}

/// `skiff scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `TYPE NAME` or `TYPE/NAME`.
    #[arg(required = true, value_name = "TYPE[.NAME]")]
    pub resources: Vec<String>,
    /// The new number of replicas.
    #[arg(long, required = true)]
    pub replicas: i32,
}

/// `skiff logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// `POD`, `pod/POD` or `deployment/NAME`.
    pub pod: String,
    /// The container (same as -c).
    pub container_arg: Option<String>,
    /// The container whose logs to print.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Only lines newer than this duration (`5s`, `2m`, `1h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    pub timestamps: bool,
}

/// `skiff rollout <what>`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Watch a deployment's rollout until it completes.
    Status {
        /// `deployment/NAME` or `deployment NAME`.
        #[arg(required = true, value_name = "TYPE[.NAME]")]
        resources: Vec<String>,
        /// Give up after this long (`0`: never).
        #[arg(long, default_value = "0s")]
        timeout: String,
    },
    /// Roll a deployment back to an earlier revision:
    /// `skiff rollout undo deployment/web [--to-revision=N]`.
    Undo {
        /// `deployment/NAME` or `deployment NAME`.
        #[arg(required = true, value_name = "TYPE[.NAME]")]
        resources: Vec<String>,
        /// The revision to roll back to (0: the one before the current).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        to_revision: i64,
    },
    /// Show a deployment's revisions, or one revision's pod template:
    /// `skiff rollout history deployment/web [--revision=N]`.
    History {
        /// `deployment/NAME` or `deployment NAME`.
        #[arg(required = true, value_name = "TYPE[.NAME]")]
        resources: Vec<String>,
        /// Show the pod template of this revision (0: list every revision).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        revision: i64,
    },
}

/// `skiff describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// `TYPE [NAME…]` or `TYPE/NAME…`.
    #[arg(required = true, value_name = "TYPE[.NAME]")]
    pub resources: Vec<String>,
    /// Describe the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// `skiff api-resources`.
#[derive(Debug, Args)]
pub struct ApiResourcesArgs {
    /// Output format: wide or name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Do not print the header row.
    #[arg(long)]
    pub no_headers: bool,
}

/// Runs one command, returning the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => commands::version::run(),
        Command::Validate {
            filenames,
            recursive,
        } => commands::validate::run(&filenames, recursive),
        Command::Explain { path } => commands::explain::run(&path),
        Command::Up(args) => commands::up::run(&args),
        Command::Images { command } => commands::images::run(&command),
        Command::Remote(command) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(commands::run_remote(&cli.global, command))
        }
    }
}

/// The line printed for a failed command: kubectl's own words for server and
/// connection errors, `error: …` (with its context chain) for everything else.
pub fn report(error: &anyhow::Error) -> String {
    match error.downcast_ref::<client::Error>() {
        Some(error) => error.to_string(),
        None => format!("error: {error:#}"),
    }
}
