//! The API over TLS with real certificates and tokens: who gets in, who is refused,
//! and the join handshake.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_pki::{Issue, KeyPair, Token, Usage};
use skiff_proto::node::node_client::NodeClient;
use skiff_proto::node::{HeartbeatRequest, WatchPodsRequest};
use tokio_util::sync::CancellationToken;

use super::{Registry, Security};
use crate::security::{self, AGENT_JOINERS, Names, Pki, SERVER_JOINERS};
use crate::testing::{create, registry};

/// A secured API on 127.0.0.1 and what a test needs to call it.
struct Secured {
    url: String,
    pki: Pki,
    registry: Registry,
    cancel: CancellationToken,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Drop for Secured {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn secured() -> Secured {
    let (store_dir, registry) = registry().await;
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(pki_dir.path(), &Names::default(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let security = Security::new(pki.clone(), registry.clone()).unwrap();
    tokio::spawn(super::serve_with(
        registry.clone(),
        listener,
        cancel.clone(),
        10,
        Some(security),
    ));
    create(
        &registry,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
    )
    .await;
    create(
        &registry,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}),
    )
    .await;
    Secured {
        url,
        pki,
        registry,
        cancel,
        _dirs: (store_dir, pki_dir),
    }
}

impl Secured {
    fn client(&self, identity: Option<&KeyPair>) -> reqwest::Client {
        let tls = skiff_pki::client_config(&self.pki.ca.cert_pem, identity).unwrap();
        reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn node_cert(&self, node: &str) -> KeyPair {
        self.pki
            .ca
            .issue(&Issue {
                common_name: format!("system:node:{node}"),
                organizations: vec!["system:nodes".to_owned()],
                dns_names: vec![],
                ips: vec![],
                usage: Usage::Client,
                validity_days: 1,
            })
            .unwrap()
    }

    async fn token(&self, group: &str, expiration: Option<&str>) -> Token {
        let token = Token::generate(&self.pki.ca.hash());
        let secret = security::bootstrap_token_secret(&token, group, expiration, "test");
        create(&self.registry, Some("kube-system"), secret).await;
        token
    }

    async fn get(&self, client: &reqwest::Client, path: &str) -> (u16, Value) {
        let response = client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

async fn pod(registry: &Registry, name: &str, node: &str) {
    create(
        registry,
        Some("demo"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "demo"},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
}

#[tokio::test]
async fn anonymous_callers_see_only_health_version_and_the_ca() {
    let api = secured().await;
    let anonymous = api.client(None);
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        assert_eq!(api.get(&anonymous, path).await.0, 200, "{path}");
    }
    let (code, body) = api.get(&anonymous, "/cacerts").await;
    assert_eq!(code, 200);
    assert_eq!(body, Value::String(api.pki.ca.cert_pem.clone()));
    for path in [
        "/api/v1/pods",
        "/api/v1/namespaces/demo/pods/x",
        "/api",
        "/metrics",
        "/nowhere",
    ] {
        let (code, body) = api.get(&anonymous, path).await;
        assert_eq!(code, 401, "{path}: {body}");
        assert_eq!(body["reason"], "Unauthorized", "{path}");
    }
    // A bearer token that is not a live one is a 401 too, not anonymous.
    let response = anonymous
        .get(format!("{}/version", api.url))
        .bearer_auth("abcdef.0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // A client certificate from another CA fails the handshake.
    let stranger_ca = skiff_pki::Ca::generate("stranger").unwrap();
    let stranger = stranger_ca
        .issue(&Issue {
            common_name: "skiff-admin".to_owned(),
            organizations: vec!["system:masters".to_owned()],
            dns_names: vec![],
            ips: vec![],
            usage: Usage::Client,
            validity_days: 1,
        })
        .unwrap();
    let refused = api
        .client(Some(&stranger))
        .get(format!("{}/api/v1/pods", api.url))
        .send()
        .await;
    assert!(refused.is_err() || refused.unwrap().status().as_u16() == 401);
}

#[tokio::test]
async fn admins_may_do_anything_and_nodes_only_their_own() {
    let api = secured().await;
    let admin = api.client(Some(&api.pki.admin));
    assert_eq!(api.get(&admin, "/api/v1/pods").await.0, 200);
    assert_eq!(api.get(&admin, "/metrics").await.0, 200);
    pod(&api.registry, "on-a", "a").await;
    pod(&api.registry, "on-b", "b").await;

    let node_a = api.client(Some(&api.node_cert("a")));
    let (code, body) = api.get(&node_a, "/api/v1/pods").await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("pods is forbidden: User \"system:node:a\" cannot list resource \"pods\""),
        "{body}"
    );
    let (code, body) = api
        .get(&node_a, "/api/v1/pods?fieldSelector=spec.nodeName%3Da")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let (code, _) = api
        .get(&node_a, "/api/v1/pods?fieldSelector=spec.nodeName%3Db")
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        api.get(&node_a, "/api/v1/namespaces/demo/pods/on-a")
            .await
            .0,
        200
    );
    let (code, body) = api.get(&node_a, "/api/v1/namespaces/demo/pods/on-b").await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(api.get(&node_a, "/api/v1/nodes").await.0, 200);
    assert_eq!(api.get(&node_a, "/api/v1/services").await.0, 200);
    assert_eq!(
        api.get(&node_a, "/api/v1/namespaces/kube-system/secrets")
            .await
            .0,
        403
    );
    let delete = node_a
        .delete(format!("{}/api/v1/namespaces/demo/pods/on-b", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 403);
    // A Node of its own it may patch; another's it may not.
    let patch = |name: &str| {
        node_a
            .patch(format!("{}/api/v1/nodes/{name}", api.url))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata":{"labels":{"x":"y"}}}"#)
            .send()
    };
    assert_eq!(patch("b").await.unwrap().status().as_u16(), 403);
}

#[tokio::test]
async fn node_certificates_act_only_for_their_node_over_grpc() {
    let api = secured().await;
    let node_a = api.node_cert("a");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            &api.pki.ca.cert_pem,
        ))
        .identity(tonic::transport::Identity::from_pem(
            &node_a.cert_pem,
            &node_a.key_pem,
        ))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(api.url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = NodeClient::new(channel);
    let refused = client
        .watch_pods(WatchPodsRequest {
            node_name: "b".into(),
            resource_version: String::new(),
        })
        .await
        .expect_err("node a may not watch node b's pods");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let refused = client
        .heartbeat(HeartbeatRequest {
            node_name: "b".into(),
            conditions_json: Vec::new(),
        })
        .await
        .expect_err("node a may not heartbeat for node b");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    client
        .watch_pods(WatchPodsRequest {
            node_name: "a".into(),
            resource_version: String::new(),
        })
        .await
        .expect("its own pods");

    // Without a certificate the Node service refuses everyone.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            &api.pki.ca.cert_pem,
        ))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(api.url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = NodeClient::new(channel)
        .watch_pods(WatchPodsRequest {
            node_name: "a".into(),
            resource_version: String::new(),
        })
        .await
        .expect_err("anonymous");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn tokens_join_agents_and_servers_and_nothing_else() {
    let api = secured().await;
    let anonymous = api.client(None);
    let agent_token = api.token(AGENT_JOINERS, None).await;
    let server_token = api.token(SERVER_JOINERS, None).await;
    let expired = api.token(AGENT_JOINERS, Some("2001-01-01T00:00:00Z")).await;
    let (csr, key) =
        skiff_pki::generate_csr("system:masters-please", &["system:masters".to_owned()]).unwrap();
    let join = |token: &Token, path: &str| {
        anonymous
            .post(format!("{}{path}", api.url))
            .bearer_auth(token.bearer())
            .json(&json!({"nodeName": "node-x", "csr": csr, "addresses": ["10.0.0.9"]}))
            .send()
    };
    let reply = join(&agent_token, "/skiff/v1/join/agent").await.unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["ca"], api.pki.ca.cert_pem);
    // The certificate names the node, whatever the request asked for.
    let certificate = KeyPair {
        cert_pem: reply["certificate"].as_str().unwrap().to_owned(),
        key_pem: key,
    };
    let der = skiff_pki::certs_from_pem(&certificate.cert_pem).unwrap();
    let identity = skiff_pki::identity_of(&der[0]).unwrap();
    assert_eq!(identity.user, "system:node:node-x");
    assert_eq!(identity.groups, vec!["system:nodes".to_owned()]);
    // It works as a node's credentials.
    let node = api.client(Some(&certificate));
    assert_eq!(api.get(&node, "/api/v1/nodes").await.0, 200);

    // An agent token cannot join a server or read anything.
    let refused = join(&agent_token, "/skiff/v1/join/server").await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let read = anonymous
        .get(format!("{}/api/v1/namespaces/kube-system/secrets", api.url))
        .bearer_auth(agent_token.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 403);
    // A server token joins servers: the CA (with its key) and the peers.
    let reply = join(&server_token, "/skiff/v1/join/server").await.unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["caKey"], api.pki.ca.key_pem);
    assert_eq!(reply["peers"].as_array().unwrap().len(), 1);
    // Expired, unknown and malformed tokens are refused with a clear message.
    for bad in [
        expired.bearer(),
        "zzzzzz.0123456789abcdef".to_owned(),
        "nonsense".to_owned(),
    ] {
        let reply = anonymous
            .post(format!("{}/skiff/v1/join/agent", api.url))
            .bearer_auth(&bad)
            .json(&json!({"nodeName": "n", "csr": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 401, "{bad}");
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["message"], "invalid bearer token", "{bad}");
    }
    // A bad CSR or node name is a 400, not a certificate.
    let reply = anonymous
        .post(format!("{}/skiff/v1/join/agent", api.url))
        .bearer_auth(agent_token.bearer())
        .json(&json!({"nodeName": "Not_A_Name", "csr": csr}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 400);
}

#[tokio::test]
async fn join_cluster_checks_the_ca_hash_before_sending_the_token() {
    let api = secured().await;
    let server_token = api.token(SERVER_JOINERS, None).await;
    let joined = security::join_cluster(&api.url, &server_token.to_string(), "cp-2")
        .await
        .unwrap();
    assert_eq!(joined.ca.key_pem, api.pki.ca.key_pem);
    // The same token with another CA's hash: refused before the token is sent.
    let mut pinned_elsewhere = server_token.clone();
    pinned_elsewhere.ca_hash = Some(skiff_pki::Ca::generate("other").unwrap().hash());
    let error = security::join_cluster(&api.url, &pinned_elsewhere.to_string(), "cp-2")
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("does not match the token's CA hash"),
        "{error:#}"
    );
    // A token the cluster does not know.
    let unknown = Token::generate(&api.pki.ca.hash());
    let error = security::join_cluster(&api.url, &unknown.to_string(), "cp-2")
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("invalid bearer token"),
        "{error:#}"
    );
}
