//! Finding the cluster to talk to, as kubectl does: `--kubeconfig`, else the
//! `KUBECONFIG` list (merged, first value wins), else `~/.kube/config`; then
//! `--context`, `--server` and `--namespace` on top.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use kube_client::config::{AuthInfo, Cluster, Kubeconfig};

/// The server kubectl falls back to when no kubeconfig names one.
const DEFAULT_SERVER: &str = "http://localhost:8080";

/// The namespace used when neither the flags nor the context name one.
const DEFAULT_NAMESPACE: &str = "default";

/// The cluster extension naming every API server of an HA control plane, tried in
/// order on connection errors: `{name: skiff.io/servers, extension: {servers: [URL…]}}`.
pub(crate) const SERVERS_EXTENSION: &str = "skiff.io/servers";

/// The command-line flags that choose the cluster, as kubectl spells them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flags {
    /// `--kubeconfig`: the only file read when given.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: overrides `current-context`.
    pub context: Option<String>,
    /// `--server`: overrides the context's cluster address.
    pub server: Option<String>,
    /// `-n/--namespace`: overrides the context's namespace.
    pub namespace: Option<String>,
}

/// Everything needed to reach and authenticate to the API server.
#[derive(Debug, Default)]
pub(crate) struct Connection {
    /// Base URL (`https://host:port`, maybe with a path prefix), without a trailing `/`.
    pub server: String,
    /// Every server to try, in order, when one cannot be reached: `server` first, then
    /// the others of the cluster's `skiff.io/servers` extension (normalized like
    /// `server`, without duplicates). Only `server` when `--server` is given.
    pub servers: Vec<String>,
    /// The namespace commands use by default.
    pub namespace: String,
    /// Whether `-n` was given: `apply` then refuses manifests naming another namespace.
    pub namespace_explicit: bool,
    /// PEM certificates to trust instead of the system roots.
    pub certificate_authority: Option<Vec<u8>>,
    /// Skip verifying the server's certificate.
    pub insecure_skip_tls_verify: bool,
    /// PEM client certificate followed by its key, for mutual TLS.
    pub identity: Option<Vec<u8>>,
    /// How requests authenticate, besides a client certificate.
    pub credentials: Credentials,
}

/// Per-request credentials.
#[derive(Debug, Default)]
pub(crate) enum Credentials {
    /// Nothing beyond a client certificate, if any.
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic …`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

/// Resolves the connection from the flags and the environment.
pub(crate) fn resolve(flags: &Flags) -> anyhow::Result<Connection> {
    let config = load(flags)?;
    connection(&config, flags)
}

/// Reads the kubeconfig kubectl would read.
fn load(flags: &Flags) -> anyhow::Result<Kubeconfig> {
    if let Some(path) = &flags.kubeconfig {
        if !path.exists() {
            bail!("stat {}: no such file or directory", path.display());
        }
        return read_file(path);
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return merge_files(&paths);
        }
    }
    match home_config() {
        Some(path) if path.exists() => read_file(&path),
        _ => Ok(Kubeconfig::default()),
    }
}

/// Merges a `KUBECONFIG` list like client-go: files that do not exist are skipped,
/// and for every value the first file that sets it wins.
fn merge_files(paths: &[PathBuf]) -> anyhow::Result<Kubeconfig> {
    let mut merged = Kubeconfig::default();
    for path in paths.iter().filter(|p| p.exists()) {
        merged = merged
            .merge(read_file(path)?)
            .with_context(|| format!("failed to merge kubeconfig {}", path.display()))?;
    }
    Ok(merged)
}

fn home_config() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".kube").join("config"))
}

fn read_file(path: &Path) -> anyhow::Result<Kubeconfig> {
    Kubeconfig::read_from(path).map_err(|error| {
        // Parse errors can span lines (a source excerpt); a CLI error is one line.
        let message = format!("{:#}", anyhow::Error::new(error));
        anyhow::anyhow!(
            "error loading config file {:?}: {}",
            path.display().to_string(),
            one_line(&message)
        )
    })
}

/// Collapses runs of whitespace (including newlines) into single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies the context, cluster and user selection to a loaded kubeconfig.
fn connection(config: &Kubeconfig, flags: &Flags) -> anyhow::Result<Connection> {
    let context_name = flags
        .context
        .clone()
        .or_else(|| config.current_context.clone())
        .filter(|name| !name.is_empty());
    let context = match &context_name {
        Some(name) => {
            let found = config.contexts.iter().find(|c| &c.name == name);
            match found {
                Some(named) => named.context.clone(),
                // client-go tolerates a dangling current-context, not a dangling flag.
                None if flags.context.is_some() => {
                    bail!("context was not found for specified context: {name}")
                }
                None => None,
            }
        }
        None => None,
    };
    let cluster = match context.as_ref().map(|c| c.cluster.as_str()) {
        Some(name) if !name.is_empty() => {
            let named = config.clusters.iter().find(|c| c.name == name);
            match named {
                Some(named) => named.cluster.clone().unwrap_or_default(),
                None if flags.server.is_none() => {
                    bail!("cluster {name:?} was not found in the kubeconfig")
                }
                None => Cluster::default(),
            }
        }
        _ => Cluster::default(),
    };
    let auth_info = match context.as_ref().and_then(|c| c.user.as_deref()) {
        Some(name) if !name.is_empty() => config
            .auth_infos
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.auth_info.clone())
            .unwrap_or_default(),
        _ => AuthInfo::default(),
    };

    let server = match flags.server.clone().or(cluster.server.clone()) {
        Some(server) if !server.is_empty() => server,
        // client-go: a context with a cluster but no server is an error; no context at
        // all means the insecure local default.
        _ if context.is_some() => bail!(
            "no server found for cluster {:?}",
            context_cluster(&context)
        ),
        _ => DEFAULT_SERVER.to_owned(),
    };
    let server = normalize_server(&server)?;
    let mut servers = vec![server.clone()];
    if flags.server.is_none() {
        for other in failover_servers(&cluster, &context_cluster(&context))? {
            if !servers.contains(&other) {
                servers.push(other);
            }
        }
    }

    let (namespace, namespace_explicit) = match flags.namespace.clone().filter(|n| !n.is_empty()) {
        Some(namespace) => (namespace, true),
        None => (
            context
                .as_ref()
                .and_then(|c| c.namespace.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            false,
        ),
    };

    Ok(Connection {
        server,
        servers,
        namespace,
        namespace_explicit,
        certificate_authority: certificate_authority(&cluster)?,
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
        identity: identity(&auth_info)?,
        credentials: credentials(&auth_info)?,
    })
}

fn context_cluster(context: &Option<kube_client::config::Context>) -> String {
    context
        .as_ref()
        .map(|c| c.cluster.clone())
        .unwrap_or_default()
}

/// The servers a cluster's [`SERVERS_EXTENSION`] lists, normalized, in its order.
fn failover_servers(cluster: &Cluster, cluster_name: &str) -> anyhow::Result<Vec<String>> {
    let Some(extension) = cluster
        .extensions
        .iter()
        .flatten()
        .find(|extension| extension.name == SERVERS_EXTENSION)
    else {
        return Ok(Vec::new());
    };
    let invalid = || {
        anyhow::anyhow!(
            "invalid {SERVERS_EXTENSION} extension of cluster {cluster_name:?}: servers must be a list of URLs"
        )
    };
    let listed = extension
        .extension
        .get("servers")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(invalid)?;
    listed
        .iter()
        .map(|server| normalize_server(server.as_str().ok_or_else(invalid)?))
        .collect()
}

/// `host:port` becomes `https://host:port` (client-go's default scheme); the
/// trailing `/` goes so paths can be appended.
fn normalize_server(server: &str) -> anyhow::Result<String> {
    let with_scheme = if server.contains("://") {
        server.to_owned()
    } else {
        format!("https://{server}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .with_context(|| format!("invalid server address {server:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "invalid server address {server:?}: scheme must be http or https, not {:?}",
            url.scheme()
        );
    }
    Ok(with_scheme.trim_end_matches('/').to_owned())
}

fn certificate_authority(cluster: &Cluster) -> anyhow::Result<Option<Vec<u8>>> {
    load_data(
        cluster.certificate_authority_data.as_deref(),
        cluster.certificate_authority.as_deref(),
        "certificate-authority",
    )
}

fn identity(auth_info: &AuthInfo) -> anyhow::Result<Option<Vec<u8>>> {
    let secrets = secrets(auth_info)?;
    let certificate = load_data(
        auth_info.client_certificate_data.as_deref(),
        auth_info.client_certificate.as_deref(),
        "client-certificate",
    )?;
    let key = load_data(
        secrets.client_key_data.as_deref(),
        auth_info.client_key.as_deref(),
        "client-key",
    )?;
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some(_), None) => bail!(
            "client-key-data or client-key must be specified to use the clientCert authentication method"
        ),
        (None, Some(_)) => bail!(
            "client-cert-data or client-cert must be specified to use the clientCert authentication method"
        ),
        (Some(mut certificate), Some(key)) => {
            if !certificate.ends_with(b"\n") {
                certificate.push(b'\n');
            }
            certificate.extend_from_slice(&key);
            Ok(Some(certificate))
        }
    }
}

fn credentials(auth_info: &AuthInfo) -> anyhow::Result<Credentials> {
    let secrets = secrets(auth_info)?;
    if auth_info.exec.is_some() || auth_info.auth_provider.is_some() {
        bail!("credential plugins (exec, auth-provider) are not supported by skiff");
    }
    if let Some(token) = secrets.token.filter(|t| !t.is_empty()) {
        return Ok(Credentials::Bearer(token));
    }
    if let Some(path) = &auth_info.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read token file {path}"))?;
        return Ok(Credentials::Bearer(token.trim().to_owned()));
    }
    if let Some(username) = auth_info.username.clone() {
        return Ok(Credentials::Basic {
            username,
            password: secrets.password.unwrap_or_default(),
        });
    }
    Ok(Credentials::None)
}

/// The fields kube-client keeps as `SecretString`, read through its serializer (the
/// one place that exposes them) so we need no extra dependency.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Secrets {
    token: Option<String>,
    password: Option<String>,
    client_key_data: Option<String>,
}

fn secrets(auth_info: &AuthInfo) -> anyhow::Result<Secrets> {
    let value = serde_json::to_value(auth_info).context("failed to read the kubeconfig user")?;
    serde_json::from_value(value).context("failed to read the kubeconfig user")
}

/// Base64 `data` wins over the `file` path, as in client-go.
fn load_data(
    data: Option<&str>,
    file: Option<&str>,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("failed to decode {what}-data"))?;
        return Ok(Some(bytes));
    }
    if let Some(file) = file.filter(|f| !f.is_empty()) {
        let bytes = std::fs::read(file).with_context(|| format!("failed to read {what} {file}"))?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(yaml).expect("valid kubeconfig")
    }

    const TWO_CONTEXTS: &str = "
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev
  cluster: {server: 'http://127.0.0.1:8001/'}
- name: prod
  cluster: {server: 'prod.example:6443', insecure-skip-tls-verify: true}
users:
- name: alice
  user: {token: secret-token}
contexts:
- name: dev
  context: {cluster: dev, namespace: team}
- name: prod
  context: {cluster: prod, user: alice}
";

    #[test]
    fn current_context_supplies_server_and_namespace() {
        let resolved = connection(&config(TWO_CONTEXTS), &Flags::default()).unwrap();
        assert_eq!(resolved.server, "http://127.0.0.1:8001");
        assert_eq!(resolved.namespace, "team");
        assert!(!resolved.namespace_explicit);
        assert!(matches!(resolved.credentials, Credentials::None));
    }

    #[test]
    fn flags_override_the_context() {
        let flags = Flags {
            context: Some("prod".to_owned()),
            namespace: Some("ops".to_owned()),
            ..Flags::default()
        };
        let resolved = connection(&config(TWO_CONTEXTS), &flags).unwrap();
        assert_eq!(resolved.server, "https://prod.example:6443");
        assert_eq!(resolved.namespace, "ops");
        assert!(resolved.namespace_explicit);
        assert!(resolved.insecure_skip_tls_verify);
        assert!(matches!(resolved.credentials, Credentials::Bearer(ref t) if t == "secret-token"));

        let flags = Flags {
            context: Some("prod".to_owned()),
            server: Some("http://override:1".to_owned()),
            ..Flags::default()
        };
        let resolved = connection(&config(TWO_CONTEXTS), &flags).unwrap();
        assert_eq!(resolved.server, "http://override:1");
        assert_eq!(resolved.namespace, "default");
    }

    #[test]
    fn missing_context_flag_is_an_error_but_no_config_means_localhost() {
        let flags = Flags {
            context: Some("nope".to_owned()),
            ..Flags::default()
        };
        let error = connection(&config(TWO_CONTEXTS), &flags).unwrap_err();
        assert_eq!(
            error.to_string(),
            "context was not found for specified context: nope"
        );
        let resolved = connection(&Kubeconfig::default(), &Flags::default()).unwrap();
        assert_eq!(resolved.server, "http://localhost:8080");
        assert_eq!(resolved.namespace, "default");
    }

    #[test]
    fn client_certificate_and_key_are_joined() {
        let yaml = "
current-context: c
clusters: [{name: k, cluster: {server: 'https://k:6443', certificate-authority-data: Q0E=}}]
users: [{name: u, user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
";
        let resolved = connection(&config(yaml), &Flags::default()).unwrap();
        assert_eq!(resolved.certificate_authority.as_deref(), Some(&b"CA"[..]));
        assert_eq!(resolved.identity.as_deref(), Some(&b"CERT\nKEY"[..]));
    }

    #[test]
    fn servers_extension_lists_failover_servers_after_the_server() {
        let yaml = "
current-context: c
clusters:
- name: k
  cluster:
    server: https://a:6443
    extensions:
    - name: other.example/thing
      extension: {servers: ['https://ignored:1']}
    - name: skiff.io/servers
      extension:
        servers: ['https://a:6443/', 'b:6443', 'https://c:6443']
contexts: [{name: c, context: {cluster: k}}]
";
        let resolved = connection(&config(yaml), &Flags::default()).unwrap();
        assert_eq!(resolved.server, "https://a:6443");
        assert_eq!(
            resolved.servers,
            ["https://a:6443", "https://b:6443", "https://c:6443"]
        );

        // --server names the one server to use.
        let flags = Flags {
            server: Some("https://d:6443".to_owned()),
            ..Flags::default()
        };
        let resolved = connection(&config(yaml), &flags).unwrap();
        assert_eq!(resolved.servers, ["https://d:6443"]);

        // Without the extension there is just the server.
        let resolved = connection(&config(TWO_CONTEXTS), &Flags::default()).unwrap();
        assert_eq!(resolved.servers, ["http://127.0.0.1:8001"]);
    }

    #[test]
    fn a_malformed_servers_extension_is_an_error() {
        for extension in ["{servers: 'https://a:6443'}", "{servers: [1]}", "{}"] {
            let yaml = format!(
                "current-context: c\nclusters: [{{name: k, cluster: {{server: 'https://a:6443', extensions: [{{name: skiff.io/servers, extension: {extension}}}]}}}}]\ncontexts: [{{name: c, context: {{cluster: k}}}}]\n"
            );
            let error = connection(&config(&yaml), &Flags::default()).unwrap_err();
            assert_eq!(
                error.to_string(),
                "invalid skiff.io/servers extension of cluster \"k\": servers must be a list of URLs",
                "{extension}"
            );
        }
    }

    #[test]
    fn kubeconfig_list_merges_first_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a");
        let second = dir.path().join("b");
        std::fs::write(
            &first,
            "current-context: one\ncontexts: [{name: one, context: {cluster: x, namespace: first}}]\n",
        )
        .unwrap();
        std::fs::write(
            &second,
            "current-context: two\nclusters: [{name: x, cluster: {server: 'http://x:1'}}]\ncontexts: [{name: one, context: {cluster: y, namespace: second}}]\n",
        )
        .unwrap();
        let merged = merge_files(&[first, dir.path().join("missing"), second]).unwrap();
        let resolved = connection(&merged, &Flags::default()).unwrap();
        assert_eq!(resolved.server, "http://x:1");
        assert_eq!(resolved.namespace, "first");
    }
}
