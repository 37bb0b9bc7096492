//! The secured API from outside: anonymous requests are refused, tokens are managed
//! with `skiff-control-plane token`, and members with a bad join token are turned away.

use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use skiff_pki::Token;
use tokio::time::{Instant, sleep, timeout};

use crate::cluster::Member;

/// The member's CA (`DATA/pki/ca.crt`).
fn ca_pem(member: &Member) -> String {
    std::fs::read_to_string(member.dir.path().join("pki/ca.crt")).unwrap()
}

/// An HTTPS client that trusts the member's CA and presents no certificate.
fn anonymous_client(member: &Member) -> reqwest::Client {
    let tls = skiff_pki::client_config(&ca_pem(member), None).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Runs `skiff-control-plane ARGS` to completion (at most 60 s), without logs.
async fn control_plane(args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff-control-plane"))
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    timeout(Duration::from_secs(60), output)
        .await
        .expect("skiff-control-plane finishes within 60 s")
        .expect("run skiff-control-plane")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `skiff-control-plane token ARGS --data-dir DATA --server API`.
async fn token_command(member: &Member, args: &[&str]) -> Output {
    let data_dir = member.dir.path().to_str().unwrap();
    let tail = ["--data-dir", data_dir, "--server", &member.api];
    control_plane(&[&["token"], args, &tail].concat()).await
}

/// A new member that tries to join `member`'s cluster with `token`: it must exit with
/// one line on stderr, which is returned.
async fn join_fails(member: &Member, token: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = control_plane(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen-peer",
        "127.0.0.1:0",
        "--listen-api",
        "127.0.0.1:0",
        "--join",
        &member.api,
        "--token",
        token,
    ])
    .await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "joined with {token}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_tokens_and_bad_joins() {
    let member = Member::start(None).await;
    let anonymous = anonymous_client(&member);

    // Without credentials: 401 with a meta/v1 Status, except the public paths.
    let response = anonymous
        .get(format!("{}/api/v1/namespaces", member.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let status: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "Unauthorized", "{status}");
    assert_eq!(status["code"], 401, "{status}");
    let healthz = anonymous
        .get(format!("{}/healthz", member.api))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    let cacerts = anonymous
        .get(format!("{}/cacerts", member.api))
        .send()
        .await
        .unwrap();
    assert_eq!(cacerts.text().await.unwrap(), ca_pem(&member));
    // The admin certificate is let through.
    let response = member
        .admin_client()
        .get(format!("{}/api/v1/namespaces", member.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // token create | list | revoke.
    let created = token_command(&member, &["create", "--kind", "agent", "--ttl", "1h"]).await;
    assert!(created.status.success(), "{}", text(&created.stderr));
    let printed = text(&created.stdout);
    assert!(printed.starts_with("K10"), "{printed}");
    let token = Token::parse(printed.trim()).unwrap();
    assert_eq!(
        token.ca_hash.as_deref(),
        Some(skiff_pki::ca_hash(&ca_pem(&member)).as_str())
    );
    let listed = token_command(&member, &["list"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let row = text(&listed.stdout)
        .lines()
        .find(|line| line.starts_with(&token.id))
        .map(str::to_owned);
    let row = row.unwrap_or_else(|| panic!("{} not listed: {}", token.id, text(&listed.stdout)));
    assert!(row.contains("agent"), "{row}");

    // The token authenticates on the agent join path (the body is wrong: 400, not 401).
    let join_agent = async |token: &Token| {
        anonymous
            .post(format!("{}/skiff/v1/join/agent", member.api))
            .bearer_auth(token.bearer())
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(join_agent(&token).await, StatusCode::BAD_REQUEST);

    let revoked = token_command(&member, &["revoke", &token.id]).await;
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let listed = token_command(&member, &["list"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        !text(&listed.stdout).contains(&token.id),
        "{}",
        text(&listed.stdout)
    );
    // Revocation takes effect once the authenticator's token cache (10 s) expires.
    let deadline = Instant::now() + Duration::from_secs(20);
    while join_agent(&token).await != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < deadline, "a revoked token still works");
        sleep(Duration::from_millis(250)).await;
    }

    // Joining with a token the cluster does not know (right CA hash): refused.
    let server_token = Token::parse(&member.token()).unwrap();
    let unknown = Token::generate(server_token.ca_hash.as_deref().unwrap());
    let stderr = join_fails(&member, &unknown.to_string()).await;
    assert!(stderr.contains("invalid bearer token"), "{stderr}");

    // The right id and secret with another CA's hash: the fetched CA is refused.
    let wrong_ca = Token {
        ca_hash: Some(skiff_pki::ca_hash("not the cluster's CA")),
        ..server_token
    };
    let stderr = join_fails(&member, &wrong_ca.to_string()).await;
    assert!(
        stderr.contains("does not match the token's CA hash"),
        "{stderr}"
    );
}
