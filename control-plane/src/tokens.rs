//! `skiff-control-plane token create|list|revoke`: join and service tokens as
//! `kube-system` Secrets, managed through a member's API with the admin certificate
//! (as `kubeadm token` does with the admin kubeconfig).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use skiff_pki::{Ca, KeyPair, Token};

use crate::apiserver::auth::secret_fields;
use crate::security::{self, AGENT_JOINERS, SERVER_JOINERS};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenKind {
    /// Joins control-plane members (and agents).
    Server,
    /// Joins agents.
    Agent,
    /// Authenticates API requests as `--user` in `--group`s.
    Api,
}

/// What `token create` asks for.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// What it may do.
    pub kind: TokenKind,
    /// How long it lives; `None` for ever.
    pub ttl: Option<Duration>,
    /// The user an API token authenticates as.
    pub user: Option<String>,
    /// The groups an API token authenticates in.
    pub groups: Vec<String>,
    /// Free text shown by `token list`.
    pub description: String,
}

/// A client of a member's API with the admin certificate under `data_dir/pki`.
pub struct AdminClient {
    server: String,
    http: reqwest::Client,
    ca: Ca,
}

impl AdminClient {
    /// Connects to `server` (`https://HOST:PORT`) as the admin of `data_dir`.
    pub fn new(data_dir: &Path, server: &str) -> anyhow::Result<Self> {
        let pki = data_dir.join("pki");
        let ca_pem = std::fs::read_to_string(pki.join("ca.crt")).with_context(|| {
            format!(
                "no cluster CA under {} (is --data-dir right?)",
                pki.display()
            )
        })?;
        let admin = KeyPair::load(&pki, "admin")
            .with_context(|| format!("no admin certificate under {}", pki.display()))?;
        let tls = skiff_pki::client_config(&ca_pem, Some(&admin))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(AdminClient {
            server: server.trim_end_matches('/').to_owned(),
            http,
            ca: Ca {
                cert_pem: ca_pem,
                key_pem: String::new(),
            },
        })
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("no answer from {}", self.server))?;
        let code = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !code.is_success() {
            let message = body["message"].as_str().unwrap_or("no reason given");
            bail!("{message}");
        }
        Ok(body)
    }

    fn secrets_url(&self) -> String {
        format!("{}/api/v1/namespaces/kube-system/secrets", self.server)
    }

    /// Creates a token; returns it in full (`K10<ca-hash>::<id>.<secret>`).
    pub async fn create(&self, new: &NewToken) -> anyhow::Result<Token> {
        let token = Token::generate(&self.ca.hash());
        let expiration = new.ttl.map(|ttl| {
            let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
            let at = crate::apiserver::now_timestamp()
                .checked_add(skiff_api::meta::jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(skiff_api::meta::jiff::Timestamp::MAX);
            at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        });
        let secret = match new.kind {
            TokenKind::Server | TokenKind::Agent => {
                let group = if new.kind == TokenKind::Server {
                    SERVER_JOINERS
                } else {
                    AGENT_JOINERS
                };
                security::bootstrap_token_secret(
                    &token,
                    group,
                    expiration.as_deref(),
                    &new.description,
                )
            }
            TokenKind::Api => {
                let Some(user) = new.user.as_deref().filter(|u| !u.is_empty()) else {
                    bail!("an api token needs --user");
                };
                let groups = new.groups.join(",");
                let mut data = vec![
                    ("token-id", token.id.as_str()),
                    ("token-secret", token.secret.as_str()),
                    ("user", user),
                    ("groups", groups.as_str()),
                    ("description", new.description.as_str()),
                ];
                if let Some(expiration) = expiration.as_deref() {
                    data.push(("expiration", expiration));
                }
                security::secret(
                    &format!("api-token-{}", token.id),
                    "skiff.io/api-token",
                    &data,
                )
            }
        };
        self.call(self.http.post(self.secrets_url()).json(&secret))
            .await?;
        Ok(token)
    }

    /// The tokens, as `kubeadm token list` prints them.
    pub async fn list(&self) -> anyhow::Result<String> {
        let list = self.call(self.http.get(self.secrets_url())).await?;
        let mut out = String::from("ID\tKIND\tEXPIRES\tUSER/GROUPS\tDESCRIPTION\n");
        let mut rows = 0;
        for item in list["items"].as_array().into_iter().flatten() {
            let kind = match item["type"].as_str() {
                Some("bootstrap.kubernetes.io/token") => "join",
                Some("skiff.io/api-token") => "api",
                _ => continue,
            };
            let data = secret_fields(item);
            let field = |name: &str| data.get(name).cloned().unwrap_or_default();
            let kind = match field("auth-extra-groups").as_str() {
                SERVER_JOINERS => "server",
                AGENT_JOINERS => "agent",
                _ => kind,
            };
            let who = if kind == "api" {
                format!("{} ({})", field("user"), field("groups"))
            } else {
                "-".to_owned()
            };
            let expires = Some(field("expiration"))
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "<forever>".to_owned());
            let _ = writeln!(
                out,
                "{}\t{kind}\t{expires}\t{who}\t{}",
                field("token-id"),
                field("description")
            );
            rows += 1;
        }
        if rows == 0 {
            out.push_str("(no tokens)\n");
        }
        Ok(align(&out))
    }

    /// Deletes the token with `id`; an error if there is none.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<()> {
        for prefix in ["bootstrap-token", "api-token"] {
            let url = format!("{}/{prefix}-{id}", self.secrets_url());
            let response = self
                .http
                .delete(&url)
                .send()
                .await
                .with_context(|| format!("no answer from {}", self.server))?;
            if response.status().is_success() {
                return Ok(());
            }
            if response.status() != reqwest::StatusCode::NOT_FOUND {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                bail!("{}", body["message"].as_str().unwrap_or("no reason given"));
            }
        }
        bail!("token {id:?} not found")
    }
}

/// Parses a TTL like kubeadm's `--ttl`: `24h`, `90m`, `30s`, `1h30m`; `0` = never.
pub fn parse_ttl(text: &str) -> anyhow::Result<Option<Duration>> {
    let text = text.trim();
    if text == "0" || text == "0s" {
        return Ok(None);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => bail!("invalid --ttl {text:?}: use a duration like 24h, 90m or 0 for never"),
        };
        let value: u64 = number.parse().map_err(|_| {
            anyhow::anyhow!("invalid --ttl {text:?}: a unit needs a number before it")
        })?;
        total = total.saturating_add(value.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        bail!("invalid --ttl {text:?}: use a duration like 24h, 90m or 0 for never");
    }
    Ok(Some(Duration::from_secs(total)))
}

/// Aligns tab-separated columns with two spaces between them.
fn align(text: &str) -> String {
    use std::io::Write as _;
    let mut writer = tabwriter::TabWriter::new(Vec::new()).padding(2);
    // Writing to a Vec cannot fail.
    let _ = writer.write_all(text.as_bytes());
    writer
        .into_inner()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_like_kubeadms() {
        assert_eq!(
            parse_ttl("24h").expect("ttl"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_ttl("1h30m").expect("ttl"),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(parse_ttl("0").expect("ttl"), None);
        assert!(parse_ttl("10").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("3d").is_err());
    }
}
