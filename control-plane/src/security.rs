//! The cluster's PKI and join tokens on a control-plane member: the CA, the
//! certificates this member serves and calls with, the admin kubeconfig, and joining
//! an existing cluster as a new member (k3s's `--server URL --token T`).
//!
//! Layout under `--data-dir D`: `D/pki/{ca,server,peer,kubelet-client,admin}.{crt,key}`,
//! `D/admin.kubeconfig`, `D/token` (joins servers) and `D/agent-token` (joins agents).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use skiff_pki::{Ca, Issue, KeyPair, Token, Usage};

/// Group of Raft peer certificates; the peer port admits no one else.
pub const PEER_GROUP: &str = "system:skiff-peers";
/// Group with every permission (kube's `system:masters`).
pub const MASTERS_GROUP: &str = "system:masters";
/// Group of node certificates (`system:node:<name>`).
pub const NODES_GROUP: &str = "system:nodes";
/// Prefix of node user names.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Extra group of bootstrap tokens that join servers (and may join agents).
pub const SERVER_JOINERS: &str = "system:bootstrappers:skiff:server";
/// Extra group of bootstrap tokens that join agents.
pub const AGENT_JOINERS: &str = "system:bootstrappers:skiff:agent";

/// Days leaf certificates are valid (kubeadm's one year).
const LEAF_DAYS: u32 = 365;

/// What this member's certificates must name.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// The member's name (host name by default), in its peer certificate's CN.
    pub member: String,
    /// Extra DNS names for the serving certificates (`--tls-san`).
    pub dns: Vec<String>,
    /// Extra IPs for the serving certificates (advertise and listen addresses).
    pub ips: Vec<IpAddr>,
    /// The `default/kubernetes` Service IP and cluster domain, for in-cluster names.
    pub service_ip: Option<IpAddr>,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Names {
    fn dns_names(&self) -> Vec<String> {
        let mut names = vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ];
        if !self.cluster_domain.is_empty() {
            names.push(format!("kubernetes.default.svc.{}", self.cluster_domain));
        }
        if !self.member.is_empty() {
            names.push(self.member.clone());
        }
        names.extend(self.dns.iter().cloned());
        names.sort();
        names.dedup();
        names
    }

    fn ip_addresses(&self) -> Vec<IpAddr> {
        let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
        ips.extend(self.ips.iter().copied().filter(|ip| !ip.is_unspecified()));
        ips.extend(self.service_ip);
        ips.sort();
        ips.dedup();
        ips
    }
}

/// A member's PKI material, loaded from or created under `D/pki`.
#[derive(Clone, Debug)]
pub struct Pki {
    /// `D/pki`.
    pub dir: PathBuf,
    /// The cluster CA (with its key: every member signs joins).
    pub ca: Ca,
    /// The API's serving certificate.
    pub server: KeyPair,
    /// The Raft peer certificate (server and client).
    pub peer: KeyPair,
    /// The certificate the API calls node agents with (logs, exec).
    pub kubelet_client: KeyPair,
    /// The admin user's client certificate (in `admin.kubeconfig`).
    pub admin: KeyPair,
}

impl Pki {
    /// Whether `data_dir` already holds a CA (a member that started before).
    pub fn exists(data_dir: &Path) -> bool {
        let dir = data_dir.join("pki");
        dir.join("ca.crt").exists() && dir.join("ca.key").exists()
    }

    /// Loads the PKI under `data_dir/pki`, creating what is missing: the CA (from
    /// `ca` when joining, else a new one) and each leaf certificate. Existing files
    /// are never replaced.
    pub fn load_or_create(data_dir: &Path, names: &Names, ca: Option<Ca>) -> anyhow::Result<Pki> {
        let dir = data_dir.join("pki");
        let ca = if Self::exists(data_dir) {
            Ca::load(&dir)
                .with_context(|| format!("failed to load the CA from {}", dir.display()))?
        } else {
            let ca = match ca {
                Some(ca) => ca,
                None => Ca::generate("skiff-ca").context("failed to create the cluster CA")?,
            };
            ca.save(&dir)
                .with_context(|| format!("failed to save the CA under {}", dir.display()))?;
            ca
        };
        let leaf =
            |name: &str, common_name: String, groups: &[&str], usage: Usage, serving: bool| {
                if dir.join(format!("{name}.crt")).exists() {
                    return KeyPair::load(&dir, name)
                        .with_context(|| format!("failed to load {}/{name}.crt", dir.display()));
                }
                let request = Issue {
                    common_name,
                    organizations: groups.iter().map(|g| (*g).to_owned()).collect(),
                    dns_names: if serving {
                        names.dns_names()
                    } else {
                        Vec::new()
                    },
                    ips: if serving {
                        names.ip_addresses()
                    } else {
                        Vec::new()
                    },
                    usage,
                    validity_days: LEAF_DAYS,
                };
                let pair = ca
                    .issue(&request)
                    .with_context(|| format!("failed to issue the {name} certificate"))?;
                pair.save(&dir, name)
                    .with_context(|| format!("failed to save {}/{name}.crt", dir.display()))?;
                Ok::<_, anyhow::Error>(pair)
            };
        let member = if names.member.is_empty() {
            "skiff".to_owned()
        } else {
            names.member.clone()
        };
        let server = leaf(
            "server",
            "skiff-apiserver".to_owned(),
            &[],
            Usage::Server,
            true,
        )?;
        let peer = leaf(
            "peer",
            format!("system:skiff-peer:{member}"),
            &[PEER_GROUP],
            Usage::ServerAndClient,
            true,
        )?;
        let kubelet_client = leaf(
            "kubelet-client",
            "skiff-apiserver".to_owned(),
            &[MASTERS_GROUP],
            Usage::Client,
            false,
        )?;
        let admin = leaf(
            "admin",
            "skiff-admin".to_owned(),
            &[MASTERS_GROUP],
            Usage::Client,
            false,
        )?;
        Ok(Pki {
            dir,
            ca,
            server,
            peer,
            kubelet_client,
            admin,
        })
    }

    /// Writes `data_dir/admin.kubeconfig` for `servers` (the first is kubectl's;
    /// `skiff` fails over through all, listed in the `skiff.io/servers` extension).
    pub fn write_admin_kubeconfig(
        &self,
        data_dir: &Path,
        servers: &[String],
    ) -> anyhow::Result<PathBuf> {
        let path = data_dir.join("admin.kubeconfig");
        let text = kubeconfig(&self.ca.cert_pem, &self.admin, servers);
        write_private(data_dir, "admin.kubeconfig", text.as_bytes())?;
        Ok(path)
    }
}

/// A kubeconfig (kubectl's format) for a client certificate.
pub fn kubeconfig(ca_pem: &str, user: &KeyPair, servers: &[String]) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let mut cluster = json!({
        "server": servers.first().cloned().unwrap_or_default(),
        "certificate-authority-data": b64(ca_pem),
    });
    if servers.len() > 1 {
        cluster["extensions"] = json!([{
            "name": "skiff.io/servers",
            "extension": {"servers": servers},
        }]);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "skiff", "cluster": cluster}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": b64(&user.cert_pem),
            "client-key-data": b64(&user.key_pem),
        }}],
        "contexts": [{"name": "skiff", "context": {"cluster": "skiff", "user": "admin", "namespace": "default"}}],
        "current-context": "skiff",
    });
    // JSON is YAML; kubectl reads either.
    serde_json::to_string_pretty(&config).expect("a JSON value always serializes") + "\n"
}

/// The member's join tokens, kept in `D/token` and `D/agent-token`.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// Joins control-plane members (and agents).
    pub server: Token,
    /// Joins agents only; `None` on a member that joined (it only knows its own).
    pub agent: Option<Token>,
    /// Whether this start created them (a new cluster's first start): their Secrets
    /// must be stored before anyone is told to join with them.
    pub created: bool,
}

impl Tokens {
    /// Loads the tokens under `data_dir`, creating both when there is no server token
    /// yet (`server` given: that one is kept, as a joining member does).
    pub fn load_or_create(
        data_dir: &Path,
        ca: &Ca,
        server: Option<Token>,
    ) -> anyhow::Result<Tokens> {
        let read = |name: &str| -> anyhow::Result<Option<Token>> {
            let path = data_dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Token::parse(text.trim())
                    .map(Some)
                    .with_context(|| format!("{} holds no valid token", path.display())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => {
                    Err(error).with_context(|| format!("failed to read {}", path.display()))
                }
            }
        };
        if let Some(existing) = read("token")? {
            return Ok(Tokens {
                server: existing,
                agent: read("agent-token")?,
                created: false,
            });
        }
        let hash = ca.hash();
        let (server, agent) = match server {
            Some(mut token) => {
                token.ca_hash = Some(hash);
                (token, None)
            }
            None => (Token::generate(&hash), Some(Token::generate(&hash))),
        };
        write_private(data_dir, "token", format!("{server}\n").as_bytes())?;
        if let Some(agent) = &agent {
            write_private(data_dir, "agent-token", format!("{agent}\n").as_bytes())?;
        }
        let created = agent.is_some();
        Ok(Tokens {
            server,
            agent,
            created,
        })
    }
}

/// The Secret holding a bootstrap token (kubeadm's `bootstrap-token-<id>` in
/// `kube-system`), as `kubeadm token create` writes it; `group` is its extra group
/// ([`SERVER_JOINERS`] or [`AGENT_JOINERS`]), `expiration` RFC 3339.
pub fn bootstrap_token_secret(
    token: &Token,
    group: &str,
    expiration: Option<&str>,
    description: &str,
) -> Value {
    let mut data = vec![
        ("token-id", token.id.as_str()),
        ("token-secret", token.secret.as_str()),
        ("usage-bootstrap-authentication", "true"),
        ("auth-extra-groups", group),
        ("description", description),
    ];
    if let Some(expiration) = expiration {
        data.push(("expiration", expiration));
    }
    secret(
        &format!("bootstrap-token-{}", token.id),
        "bootstrap.kubernetes.io/token",
        &data,
    )
}

/// A `kube-system` Secret of `type_` holding `data` (base64-encoded as stored).
pub fn secret(name: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String(b64(v))))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "kube-system"},
        "type": type_,
        "data": data,
    })
}

/// Writes `bytes` to `dir/name` readable by its owner only, atomically.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    skiff_pki::write_atomic(dir, name, bytes, 0o600)
        .with_context(|| format!("failed to write {}", dir.join(name).display()))
}

/// What a member that joins learns from the one it asks.
#[derive(Debug)]
pub struct Joined {
    /// The cluster CA, key included.
    pub ca: Ca,
    /// Peer addresses of the current members, the leader's first.
    pub peers: Vec<String>,
}

/// Asks the member at `server` (`https://HOST:PORT`) to let this one join, with a
/// server token: the CA is fetched and checked against the token's hash first.
pub async fn join_cluster(server: &str, token: &str, member: &str) -> anyhow::Result<Joined> {
    let token = Token::parse(token).context("invalid --token")?;
    let Some(hash) = token.ca_hash.clone() else {
        bail!(
            "the token has no CA hash: use the full K10… token from the first server's data dir (token file)"
        );
    };
    let server = server.trim_end_matches('/');
    let ca_pem = skiff_pki::fetch_pinned_ca(server, &hash)
        .await
        .with_context(|| format!("joining {server} failed"))?;
    let tls = skiff_pki::client_config(&ca_pem, None).context("the server's CA is unusable")?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(Duration::from_secs(30))
        .build()
        .context("failed to build an HTTPS client")?;
    let response = client
        .post(format!("{server}/skiff/v1/join/server"))
        .bearer_auth(token.bearer())
        .json(&json!({"name": member}))
        .send()
        .await
        .with_context(|| format!("joining {server} failed"))?;
    let code = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("joining {server} failed: the reply is not JSON"))?;
    if !code.is_success() {
        let message = body["message"].as_str().unwrap_or("no reason given");
        bail!("joining {server} failed: {message}");
    }
    let field = |name: &str| {
        body[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("joining {server} failed: the reply has no {name}"))
    };
    let ca = Ca {
        cert_pem: field("ca")?,
        key_pem: field("caKey")?,
    };
    if ca.hash() != hash {
        bail!("joining {server} failed: the CA sent does not match the token's CA hash");
    }
    let peers = body["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Joined { ca, peers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_member_creates_its_pki_once_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = Names {
            member: "cp-1".to_owned(),
            ips: vec![IpAddr::from([10, 0, 0, 5])],
            service_ip: Some(IpAddr::from([10, 96, 0, 1])),
            cluster_domain: "cluster.local".to_owned(),
            ..Default::default()
        };
        let first = Pki::load_or_create(dir.path(), &names, None).expect("created");
        let second = Pki::load_or_create(dir.path(), &names, None).expect("loaded");
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_eq!(first.server.cert_pem, second.server.cert_pem);
        let admin = skiff_pki::identity_of(&der(&first.admin.cert_pem)).expect("identity");
        assert_eq!(admin.groups, vec![MASTERS_GROUP.to_owned()]);
        let peer = skiff_pki::identity_of(&der(&first.peer.cert_pem)).expect("identity");
        assert_eq!(peer.user, "system:skiff-peer:cp-1");
        assert_eq!(peer.groups, vec![PEER_GROUP.to_owned()]);

        let tokens = Tokens::load_or_create(dir.path(), &first.ca, None).expect("tokens");
        assert_eq!(
            tokens.server.ca_hash.as_deref(),
            Some(first.ca.hash().as_str())
        );
        let again = Tokens::load_or_create(dir.path(), &first.ca, None).expect("tokens");
        assert_eq!(again.server.to_string(), tokens.server.to_string());
        assert!(again.agent.is_some());

        let kubeconfig = first
            .write_admin_kubeconfig(dir.path(), &["https://10.0.0.5:6443".to_owned()])
            .expect("kubeconfig");
        let text = std::fs::read_to_string(kubeconfig).expect("read");
        assert!(text.contains("client-certificate-data"));
        assert!(!text.contains("skiff.io/servers"));
    }

    #[test]
    fn a_joining_member_keeps_the_clusters_ca() {
        let ca = Ca::generate("skiff-ca").expect("ca");
        let dir = tempfile::tempdir().expect("tempdir");
        let pki =
            Pki::load_or_create(dir.path(), &Names::default(), Some(ca.clone())).expect("pki");
        assert_eq!(pki.ca.cert_pem, ca.cert_pem);
        let token = Token::generate(&ca.hash());
        let tokens =
            Tokens::load_or_create(dir.path(), &pki.ca, Some(token.clone())).expect("tokens");
        assert_eq!(tokens.server.to_string(), token.to_string());
        assert!(tokens.agent.is_none());
    }

    fn der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("a certificate PEM")
            .to_vec()
    }
}
