//! The OCI runtime spec (`config.json`) of a container, from its Kubernetes container
//! spec, the image config and the pod sandbox — with Kubernetes' rules for command,
//! args, env (`$(VAR)` expansion), working dir and user, and containerd's defaults for
//! mounts, devices, capabilities, masked and read-only paths.
//!
//! Pure except for reading the image's `/etc/passwd` and `/etc/group` to resolve user
//! names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;
use serde_json::{Value, json};

use super::image::ImageConfig;

/// Errors building a spec; shown to users as `CreateContainerConfigError`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the container nor the image says what to run.
    #[error(
        "no command specified: the container sets no command and the image no Entrypoint or Cmd"
    )]
    NoCommand,
    /// The user (from the image or the pod) cannot be resolved.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A group name cannot be resolved.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// A resource quantity is malformed.
    #[error("invalid {resource} quantity {value:?}")]
    Quantity {
        /// `cpu` or `memory`.
        resource: String,
        /// The value.
        value: String,
    },
    /// The assembled JSON is not a valid OCI spec (a bug).
    #[error("invalid OCI spec: {0}")]
    Invalid(String),
}

/// A bind mount of a volume into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// The directory or file on the node.
    pub host_path: PathBuf,
    /// Where it appears in the container.
    pub container_path: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything a container's spec is built from.
#[derive(Clone, Debug)]
pub struct SpecInput<'a> {
    /// The Kubernetes container.
    pub container: Container,
    /// The image's run-time config.
    pub image_config: ImageConfig,
    /// The image's layers, bottom first (to resolve user names).
    pub layers: &'a [PathBuf],
    /// The pod's namespaces to join (`network`, `ipc`, `uts` → nsfs file); absent ones
    /// are new (or, for `network` of a hostNetwork pod, the host's).
    pub namespaces: BTreeMap<String, PathBuf>,
    /// The pod uses the host's network namespace.
    pub host_network: bool,
    /// `linux.cgroupsPath`.
    pub cgroups_path: String,
    /// Volume bind mounts.
    pub mounts: Vec<VolumeMount>,
    /// Limit on processes in the container (`pids.max`), if any.
    pub pids_limit: Option<i64>,
}

/// containerd's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from containers (containerd's defaults).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths mounted read-only in containers (containerd's defaults).
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default PATH when neither the image nor the container sets one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the OCI spec; the rootfs is `rootfs` relative to the bundle.
pub fn build(input: &SpecInput<'_>) -> Result<oci_spec::runtime::Spec, SpecError> {
    let value = build_json(input)?;
    serde_json::from_value(value).map_err(|e| SpecError::Invalid(e.to_string()))
}

/// The spec as JSON (what [`build`] decodes).
pub fn build_json(input: &SpecInput<'_>) -> Result<Value, SpecError> {
    let container = &input.container;
    let env = environment(&input.image_config, container);
    let lookup: BTreeMap<&str, &str> = env.iter().filter_map(|e| e.split_once('=')).collect();
    let args = arguments(&input.image_config, container, &lookup)?;
    let cwd = container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            input
                .image_config
                .working_dir
                .clone()
                .filter(|d| !d.is_empty())
        })
        .unwrap_or_else(|| "/".to_owned());
    let (uid, gid, additional_gids) = user(input.image_config.user.as_deref(), input.layers)?;

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    for kind in ["network", "ipc", "uts"] {
        match input.namespaces.get(kind) {
            Some(path) => namespaces.push(json!({"type": kind, "path": path})),
            None if kind == "network" && input.host_network => {}
            None => namespaces.push(json!({"type": kind})),
        }
    }
    let mut mounts = default_mounts();
    for mount in &input.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if mount.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": mount.container_path,
            "type": "bind",
            "source": mount.host_path,
            "options": options,
        }));
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": DEFAULT_CAPABILITIES,
                "effective": DEFAULT_CAPABILITIES,
                "permitted": DEFAULT_CAPABILITIES,
            },
            "noNewPrivileges": false,
            "oomScoreAdj": oom_score_adj(container),
        },
        "root": {"path": "rootfs", "readonly": false},
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": input.cgroups_path,
            "resources": resources(container, input.pids_limit)?,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }))
}

/// Image `Env`, then the container's `env` (later wins, `$(VAR)` expanded against
/// the variables defined before it), with a default PATH if none is set.
fn environment(image: &ImageConfig, container: &Container) -> Vec<String> {
    let mut vars: Vec<(String, String)> = image
        .env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    for var in container.env.iter().flatten() {
        let known: BTreeMap<&str, &str> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let value = expand(var.value.as_deref().unwrap_or(""), &known);
        match vars.iter_mut().find(|(k, _)| *k == var.name) {
            Some(existing) => existing.1 = value,
            None => vars.push((var.name.clone(), value)),
        }
    }
    if !vars.iter().any(|(k, _)| k == "PATH") {
        let (key, value) = DEFAULT_PATH.split_once('=').unwrap_or_default();
        vars.insert(0, (key.to_owned(), value.to_owned()));
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Kubernetes' command rules: `command` replaces the Entrypoint (and drops the image
/// Cmd), `args` replaces Cmd; both are `$(VAR)`-expanded.
fn arguments(
    image: &ImageConfig,
    container: &Container,
    env: &BTreeMap<&str, &str>,
) -> Result<Vec<String>, SpecError> {
    let expand_all = |list: &Vec<String>| list.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    let (entrypoint, cmd) = match (&container.command, &container.args) {
        (Some(command), Some(args)) => (expand_all(command), expand_all(args)),
        (Some(command), None) => (expand_all(command), Vec::new()),
        (None, Some(args)) => (image.entrypoint.clone(), expand_all(args)),
        (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined
/// reference is kept as written, and `$$` escapes a `$`.
pub fn expand(input: &str, env: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The process's uid, gid and supplementary groups from the image's `User`
/// (`uid`, `uid:gid`, `name`, `name:group`), resolved against the image's
/// /etc/passwd and /etc/group; root when unset.
fn user(spec: Option<&str>, layers: &[PathBuf]) -> Result<(u32, u32, Vec<u32>), SpecError> {
    let Some(spec) = spec.filter(|s| !s.is_empty()) else {
        return Ok((0, 0, Vec::new()));
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_from_layers(layers, "etc/passwd");
    let groups = read_from_layers(layers, "etc/group");
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd_entries(&passwd)
                .find(|(_, id, _)| *id == uid)
                .map_or(0, |(_, _, gid)| gid),
        ),
        Err(_) => passwd_entries(&passwd)
            .find(|(name, _, _)| *name == user)
            .map(|(_, uid, gid)| (uid, gid))
            .ok_or_else(|| SpecError::UnknownUser(user.to_owned()))?,
    };
    let gid = match group {
        None => primary,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(&groups)
                .find(|(name, _, _)| *name == group)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| SpecError::UnknownGroup(group.to_owned()))?,
        },
    };
    let user_name = passwd_entries(&passwd)
        .find(|(_, id, _)| *id == uid)
        .map(|(name, _, _)| name.to_owned());
    let additional = user_name
        .map(|name| {
            group_entries(&groups)
                .filter(|(_, gid, members)| *gid != 0 && members.contains(&name.as_str()))
                .map(|(_, gid, _)| gid)
                .collect()
        })
        .unwrap_or_default();
    Ok((uid, gid, additional))
}

/// A file from the topmost layer that has it.
fn read_from_layers(layers: &[PathBuf], path: &str) -> String {
    layers
        .iter()
        .rev()
        .find_map(|layer| std::fs::read_to_string(layer.join(path)).ok())
        .unwrap_or_default()
}

/// `(name, uid, gid)` of each passwd line.
fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((name, uid, gid))
    })
}

/// `(name, gid, members)` of each group line.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?.parse().ok()?;
        let members = fields
            .next()
            .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
            .unwrap_or_default();
        Some((name, gid, members))
    })
}

/// cgroup limits from the container's resources, as kubelet sets them: cpu requests →
/// shares (`milli * 1024 / 1000`, at least 2), cpu limits → CFS quota over a 100 ms
/// period, memory limit → limit bytes, plus the pids limit.
fn resources(container: &Container, pids_limit: Option<i64>) -> Result<Value, SpecError> {
    let quantity = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                    name: &str| {
        map.and_then(|m| m.get(name))
            .map(|q| {
                skiff_api::Quantity::parse(&q.0).map_err(|_| SpecError::Quantity {
                    resource: name.to_owned(),
                    value: q.0.clone(),
                })
            })
            .transpose()
    };
    let resources = container.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let cpu_request = quantity(requests, "cpu")?.or(quantity(limits, "cpu")?);
    let cpu_limit = quantity(limits, "cpu")?;
    let memory_limit = quantity(limits, "memory")?;
    let milli = |q: &skiff_api::Quantity| (q.nano_value() / 1_000_000).max(0);
    let shares = cpu_request
        .as_ref()
        .map_or(2, |q| (milli(q) * 1024 / 1000).max(2));
    let mut cpu = json!({"shares": shares});
    if let Some(limit) = &cpu_limit {
        let period = 100_000i128;
        let quota = (milli(limit) * period / 1000).max(1000);
        cpu["quota"] = json!(i64::try_from(quota).unwrap_or(i64::MAX));
        cpu["period"] = json!(period);
    }
    let mut value = json!({"cpu": cpu, "devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = &memory_limit {
        let bytes = i64::try_from(limit.nano_value() / 1_000_000_000).unwrap_or(i64::MAX);
        value["memory"] = json!({"limit": bytes});
    }
    if let Some(pids) = pids_limit {
        value["pids"] = json!({"limit": pids});
    }
    // Default devices containers may use (as runc's and containerd's).
    let allowed = [
        ("c", 1, 3),    // null
        ("c", 1, 5),    // zero
        ("c", 1, 7),    // full
        ("c", 1, 8),    // random
        ("c", 1, 9),    // urandom
        ("c", 5, 0),    // tty
        ("c", 5, 1),    // console
        ("c", 5, 2),    // ptmx
        ("c", 136, -1), // pts
    ];
    if let Some(devices) = value["devices"].as_array_mut() {
        for (kind, major, minor) in allowed {
            let mut rule = json!({"allow": true, "type": kind, "major": major, "access": "rwm"});
            if minor >= 0 {
                rule["minor"] = json!(minor);
            }
            devices.push(rule);
        }
    }
    Ok(value)
}

/// kubelet's OOM score adjustment (`GetContainerOOMScoreAdjust`), judged per container:
/// guaranteed (cpu and memory limits, requests equal to them or unset) −997, best
/// effort (no requests or limits) 1000, burstable `1000 − 1000 × memory request /
/// node memory` kept within 2..=999. Without CAP_SYS_RESOURCE a process may not go
/// below its parent's score, so the value is never lower than the agent's own.
fn oom_score_adj(container: &Container) -> i32 {
    let resources = container.resources.as_ref();
    let limits = resources.and_then(|r| r.limits.as_ref());
    let requests = resources.and_then(|r| r.requests.as_ref());
    let quantity = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                    name: &str| {
        map.and_then(|m| m.get(name))
            .and_then(|q| skiff_api::Quantity::parse(&q.0).ok())
            .map(|q| q.nano_value())
    };
    let guaranteed = ["cpu", "memory"].iter().all(|name| {
        let limit = quantity(limits, name);
        limit.is_some() && quantity(requests, name).is_none_or(|r| Some(r) == limit)
    });
    let best_effort = limits.is_none_or(|m| m.is_empty()) && requests.is_none_or(|m| m.is_empty());
    let wanted = if guaranteed {
        -997
    } else if best_effort {
        1000
    } else {
        let request_bytes = quantity(requests, "memory")
            .or_else(|| quantity(limits, "memory"))
            .map_or(0, |n| n / 1_000_000_000);
        let capacity = node_memory_bytes().max(1);
        let score = 1000 - (1000 * request_bytes.max(0) / i128::from(capacity));
        i32::try_from(score.clamp(2, 999)).unwrap_or(999)
    };
    if has_sys_resource() {
        wanted
    } else {
        wanted.max(own_oom_score_adj())
    }
}

/// The machine's memory in bytes (`MemTotal`).
fn node_memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// Whether this process holds CAP_SYS_RESOURCE (needed to lower OOM scores).
fn has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// This process's own `oom_score_adj`.
fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The OCI default mounts (runc's `spec` and containerd's).
fn default_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

/// Whether `path` is inside `root` once both are made absolute (no `..` escapes).
pub fn is_within(root: &Path, path: &Path) -> bool {
    path.components()
        .all(|c| !matches!(c, std::path::Component::ParentDir))
        && root
            .join(path.strip_prefix("/").unwrap_or(path))
            .starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(value: Value) -> Container {
        serde_json::from_value(value).expect("container")
    }

    fn input(container: Container, image: ImageConfig, layers: &[PathBuf]) -> SpecInput<'_> {
        SpecInput {
            container,
            image_config: image,
            layers,
            namespaces: BTreeMap::from([
                ("network".to_owned(), PathBuf::from("/run/pod/ns/net")),
                ("ipc".to_owned(), PathBuf::from("/run/pod/ns/ipc")),
                ("uts".to_owned(), PathBuf::from("/run/pod/ns/uts")),
            ]),
            host_network: false,
            cgroups_path: "/skiff/podu/c".to_owned(),
            mounts: vec![VolumeMount {
                host_path: PathBuf::from("/data/v"),
                container_path: PathBuf::from("/v"),
                read_only: true,
            }],
            pids_limit: Some(4096),
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/httpd".into()],
            cmd: vec!["-f".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: Some("/www".into()),
            user: None,
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let cases = [
            (json!({"name": "c"}), vec!["/bin/httpd", "-f"]),
            (json!({"name": "c", "command": ["sh"]}), vec!["sh"]),
            (
                json!({"name": "c", "args": ["-v"]}),
                vec!["/bin/httpd", "-v"],
            ),
            (
                json!({"name": "c", "command": ["echo"], "args": ["$(MODE)", "$$(MODE)", "$(NOPE)"]}),
                vec!["echo", "image", "$(MODE)", "$(NOPE)"],
            ),
        ];
        for (spec, expected) in cases {
            let value = build_json(&input(container(spec.clone()), image(), &[])).expect("spec");
            assert_eq!(value["process"]["args"], json!(expected), "{spec}");
        }
        let empty = ImageConfig::default();
        let error = build_json(&input(container(json!({"name": "c"})), empty, &[]))
            .expect_err("no command");
        assert!(matches!(error, SpecError::NoCommand));
    }

    #[test]
    fn env_merges_image_and_container_with_expansion() {
        let spec = container(json!({"name": "c", "command": ["x"], "env": [
            {"name": "MODE", "value": "pod"},
            {"name": "GREETING", "value": "hi-$(MODE)"},
        ]}));
        let value = build_json(&input(spec, image(), &[])).expect("spec");
        assert_eq!(
            value["process"]["env"],
            json!(["PATH=/bin", "MODE=pod", "GREETING=hi-pod"])
        );
        let bare = ImageConfig {
            env: vec![],
            ..image()
        };
        let value = build_json(&input(container(json!({"name": "c"})), bare, &[])).expect("spec");
        assert_eq!(value["process"]["env"][0], DEFAULT_PATH);
    }

    #[test]
    fn working_dir_namespaces_mounts_and_security_defaults() {
        let value =
            build_json(&input(container(json!({"name": "c"})), image(), &[])).expect("spec");
        assert_eq!(value["process"]["cwd"], "/www");
        let value = build_json(&input(
            container(json!({"name": "c", "workingDir": "/tmp"})),
            image(),
            &[],
        ))
        .expect("spec");
        assert_eq!(value["process"]["cwd"], "/tmp");
        let namespaces = value["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(namespaces.contains(&json!({"type": "network", "path": "/run/pod/ns/net"})));
        assert!(namespaces.contains(&json!({"type": "pid"})));
        assert!(namespaces.contains(&json!({"type": "mount"})));
        let volume = value["mounts"]
            .as_array()
            .expect("mounts")
            .last()
            .cloned()
            .expect("volume");
        assert_eq!(volume["destination"], "/v");
        assert!(
            volume["options"]
                .as_array()
                .expect("options")
                .contains(&json!("ro"))
        );
        let caps = value["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(!caps.contains(&json!("CAP_SYS_ADMIN")));
        assert!(
            value["linux"]["maskedPaths"]
                .as_array()
                .expect("masked")
                .contains(&json!("/proc/kcore"))
        );
        // The whole thing is a valid OCI spec.
        build(&input(container(json!({"name": "c"})), image(), &[])).expect("valid");
        // hostNetwork: no network namespace entry at all.
        let mut host = input(container(json!({"name": "c"})), image(), &[]);
        host.host_network = true;
        host.namespaces.remove("network");
        let value = build_json(&host).expect("spec");
        assert!(
            !value["linux"]["namespaces"]
                .as_array()
                .expect("ns")
                .iter()
                .any(|n| n["type"] == "network")
        );
    }

    #[test]
    fn resources_become_cgroup_limits_as_kubelet_sets_them() {
        let spec = container(json!({"name": "c", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "32Mi"}}}));
        let value = build_json(&input(spec, image(), &[])).expect("spec");
        let resources = &value["linux"]["resources"];
        assert_eq!(resources["cpu"]["shares"], 256);
        assert_eq!(resources["cpu"]["quota"], 50_000);
        assert_eq!(resources["cpu"]["period"], 100_000);
        assert_eq!(resources["memory"]["limit"], 32 * 1024 * 1024);
        assert_eq!(resources["pids"]["limit"], 4096);
        let none = build_json(&input(container(json!({"name": "c"})), image(), &[])).expect("spec");
        assert_eq!(none["linux"]["resources"]["cpu"]["shares"], 2);
        assert!(none["linux"]["resources"]["memory"].is_null());
        assert_eq!(none["process"]["oomScoreAdj"], 1000);
        let floor = if has_sys_resource() {
            -997
        } else {
            own_oom_score_adj().max(-997)
        };
        let guaranteed = container(json!({"name": "c", "resources": {
            "limits": {"cpu": "1", "memory": "64Mi"}}}));
        let value = build_json(&input(guaranteed, image(), &[])).expect("spec");
        assert_eq!(value["process"]["oomScoreAdj"], floor);
        let burstable = container(json!({"name": "c", "resources": {
            "requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}));
        let value = build_json(&input(burstable, image(), &[])).expect("spec");
        let score = value["process"]["oomScoreAdj"].as_i64().expect("score");
        assert!(
            (2..=999).contains(&score) && score >= i64::from(floor),
            "{score}"
        );
    }

    #[test]
    fn users_resolve_against_the_image() {
        let layer = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(layer.path().join("etc")).expect("mkdir");
        std::fs::write(
            layer.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            layer.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .expect("group");
        let layers = [layer.path().to_owned()];
        let resolve = |name: &str| user(Some(name), &layers);
        assert_eq!(resolve("app").expect("app"), (1000, 1000, vec![10]));
        assert_eq!(resolve("1000").expect("uid"), (1000, 1000, vec![10]));
        assert_eq!(resolve("1000:10").expect("uid:gid"), (1000, 10, vec![10]));
        assert_eq!(resolve("app:wheel").expect("names"), (1000, 10, vec![10]));
        assert_eq!(
            resolve("4242").expect("unknown uid is fine"),
            (4242, 0, vec![])
        );
        assert!(matches!(resolve("nobody"), Err(SpecError::UnknownUser(_))));
        assert!(matches!(
            resolve("app:nogroup"),
            Err(SpecError::UnknownGroup(_))
        ));
        assert_eq!(user(None, &layers).expect("root"), (0, 0, vec![]));
    }

    #[test]
    fn paths_stay_within_their_root() {
        assert!(is_within(Path::new("/r"), Path::new("/a/b")));
        assert!(!is_within(Path::new("/r"), Path::new("/a/../../etc")));
    }
}
