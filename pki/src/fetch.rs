//! `GET https://server/cacerts` without verifying the server, pinned by the token's CA hash.
//!
//! A joiner does not trust anything yet, so it cannot verify the server's certificate. It
//! does not need to: it keeps the answer only if its hash equals the hash in the token, which
//! came out of band. One hand-written HTTP/1.1 request keeps the dependencies small.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{Error, Result, ca_hash, tls};

/// The whole exchange (connect, handshake, request, answer) must finish within this.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A CA bundle is a few KiB; anything far larger is not one.
const MAX_RESPONSE: u64 = 1024 * 1024;

/// Fetches `{server_url}/cacerts` without verifying the server and returns the PEM only if
/// `ca_hash(pem) == expected_hash`.
///
/// `server_url` is `https://host[:port]` (port 443 by default) with a DNS name, an IPv4
/// address or a bracketed IPv6 address. Network failures are [`Error::Fetch`] (retryable); a
/// CA that does not match is [`Error::CaHashMismatch`].
pub async fn fetch_pinned_ca(server_url: &str, expected_hash: &str) -> Result<String> {
    let target = Target::parse(server_url)?;
    let url = format!("https://{}{}/cacerts", target.authority, target.path_prefix);
    let body = match tokio::time::timeout(TIMEOUT, get(&target, &url)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::Fetch {
                url,
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", TIMEOUT.as_secs()),
                ),
            });
        }
    };
    let pem = String::from_utf8(body).map_err(|_| Error::FetchResponse {
        url: url.clone(),
        reason: "the body is not UTF-8 text".to_owned(),
    })?;
    let actual = ca_hash(&pem);
    if !actual.eq_ignore_ascii_case(expected_hash) {
        return Err(Error::CaHashMismatch {
            expected: expected_hash.to_owned(),
            actual,
        });
    }
    Ok(pem)
}

/// The parts of `https://host[:port][/prefix]` a request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port` as given (brackets kept), for the `Host` header.
    authority: String,
    /// The host without brackets, for DNS resolution and SNI.
    host: String,
    port: u16,
    /// A path the server is mounted under, without a trailing slash ("" usually).
    path_prefix: String,
}

impl Target {
    fn parse(server_url: &str) -> Result<Target> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: server_url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = server_url
            .strip_prefix("https://")
            .ok_or_else(|| invalid("it must start with https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(invalid("it must not have a query or fragment"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("the IPv6 address has no closing bracket"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(invalid("the bracketed host is not an IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| invalid("expected :port after the IPv6 address"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let bracketed = authority.starts_with('[');
        if host.is_empty() || host.contains('@') || (!bracketed && host.contains(':')) {
            return Err(invalid("the host is missing or malformed"));
        }
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| invalid("the port is not a number from 0 to 65535"))?,
            None => 443,
        };
        Ok(Target {
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            path_prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    fn server_name(&self) -> Result<ServerName<'static>> {
        // An IP becomes an IP server name, which rustls never sends as SNI.
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
            Err(_) => ServerName::try_from(self.host.clone()).map_err(|_| Error::InvalidUrl {
                url: format!("https://{}", self.authority),
                reason: "the host is not a valid DNS name".to_owned(),
            }),
        }
    }
}

async fn get(target: &Target, url: &str) -> Result<Vec<u8>> {
    let fetch_error = |source| Error::Fetch {
        url: url.to_owned(),
        source,
    };
    let server_name = target.server_name()?;
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(tls::provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(fetch_error)?;
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(fetch_error)?;
    let request = format!(
        "GET {}/cacerts HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path_prefix, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(fetch_error)?;
    let mut response = Vec::new();
    let read = (&mut stream)
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .await;
    match read {
        Ok(_) => {}
        // Servers often close without TLS close_notify after `Connection: close`; the length
        // checks in `parse_response` catch a truncated answer.
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(error) => return Err(fetch_error(error)),
    }
    parse_response(&response).map_err(|reason| Error::FetchResponse {
        url: url.to_owned(),
        reason,
    })
}

/// The body of a complete `200` HTTP/1.1 response (Content-Length, chunked, or until close).
fn parse_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let header_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("the response has no complete HTTP header")?;
    let head = std::str::from_utf8(&response[..header_end])
        .map_err(|_| "the HTTP header is not text".to_owned())?;
    let body = &response[header_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| format!("malformed status line {status_line:?}"))?;
    if status != "200" {
        return Err(format!("the server answered {status_line:?}"));
    }
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    if chunked {
        return decode_chunked(body);
    }
    match content_length {
        Some(length) if body.len() < length => Err(format!(
            "the body was cut off after {} of {length} bytes",
            body.len()
        )),
        Some(length) => Ok(body[..length].to_vec()),
        None => Ok(body.to_vec()),
    }
}

fn decode_chunked(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoded = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("the chunked body was cut off")?;
        let size_text =
            std::str::from_utf8(&body[..line_end]).map_err(|_| "bad chunk size".to_owned())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(decoded);
        }
        if body.len() < size + 2 {
            return Err("the chunked body was cut off".to_owned());
        }
        decoded.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Accepts any server certificate, but still checks the handshake signatures so the peer holds
/// the key of the certificate it shows. Used only by `fetch_pinned_ca`, whose answer is
/// pinned by hash.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::{Ca, ClientAuth, Issue, Usage, server_config};

    #[track_caller]
    fn check_target(url: &str, expected: Result<(&str, &str, u16, &str), &str>) {
        let actual = Target::parse(url).map(|target| {
            (
                target.authority,
                target.host,
                target.port,
                target.path_prefix,
            )
        });
        match (actual, expected) {
            (Ok(actual), Ok((authority, host, port, prefix))) => assert_eq!(
                actual,
                (
                    authority.to_owned(),
                    host.to_owned(),
                    port,
                    prefix.to_owned()
                ),
                "{url}"
            ),
            (Err(error), Err(reason)) => {
                assert!(error.to_string().contains(reason), "{url}: {error}")
            }
            (actual, expected) => panic!("{url}: got {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn server_urls_parse() {
        check_target("https://cp-1:6443", Ok(("cp-1:6443", "cp-1", 6443, "")));
        check_target("https://cp-1", Ok(("cp-1", "cp-1", 443, "")));
        check_target(
            "https://10.0.0.5:6443/",
            Ok(("10.0.0.5:6443", "10.0.0.5", 6443, "")),
        );
        check_target("https://[::1]:6443", Ok(("[::1]:6443", "::1", 6443, "")));
        check_target("https://[::1]", Ok(("[::1]", "::1", 443, "")));
        check_target("https://lb/skiff/", Ok(("lb", "lb", 443, "/skiff")));
        check_target("http://cp-1:6443", Err("it must start with https://"));
        check_target("cp-1:6443", Err("it must start with https://"));
        check_target("https://:6443", Err("the host is missing"));
        check_target("https://cp-1:port", Err("the port is not a number"));
        check_target("https://cp-1:70000", Err("the port is not a number"));
        check_target("https://[::1:6443", Err("no closing bracket"));
        check_target("https://[cp-1]:6443", Err("not an IPv6 address"));
        check_target("https://::1:6443", Err("malformed"));
        check_target("https://cp-1/?x", Err("query"));
    }

    #[test]
    fn responses_parse() {
        let ok = |response: &str| parse_response(response.as_bytes()).map(String::from_utf8);
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
                .unwrap()
                .unwrap(),
            "abc"
        );
        assert_eq!(ok("HTTP/1.1 200 OK\r\n\r\nabc").unwrap().unwrap(), "abc");
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1;x\r\nc\r\n0\r\n\r\n")
                .unwrap()
                .unwrap(),
            "abc"
        );
        assert_eq!(
            ok("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").unwrap_err(),
            "the server answered \"HTTP/1.1 404 Not Found\""
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc").unwrap_err(),
            "the body was cut off after 3 of 5 bytes"
        );
        assert!(ok("HTTP/1.1 200 OK\r\nContent").is_err());
        assert!(ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err());
    }

    /// Serves `GET /cacerts` with `ca_pem` over TLS to every connection, like the API server.
    async fn serve_cacerts(ca: &Ca) -> (String, tokio::task::JoinHandle<()>) {
        let pair = ca
            .issue(&Issue {
                common_name: "skiff-apiserver".to_owned(),
                organizations: vec![],
                dns_names: vec!["localhost".to_owned()],
                ips: vec!["127.0.0.1".parse().unwrap()],
                usage: Usage::Server,
                validity_days: 1,
            })
            .unwrap();
        let acceptor =
            TlsAcceptor::from(server_config(&ca.cert_pem, &pair, ClientAuth::Optional).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ca_pem = ca.cert_pem.clone();
        let server = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut stream = tokio::io::BufStream::new(acceptor.accept(tcp).await.unwrap());
                let mut request_line = String::new();
                stream.read_line(&mut request_line).await.unwrap();
                let mut line = String::new();
                while line != "\r\n" {
                    line.clear();
                    stream.read_line(&mut line).await.unwrap();
                }
                let response = if request_line == "GET /cacerts HTTP/1.1\r\n" {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ca_pem}",
                        ca_pem.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                stream.write_all(response.as_bytes()).await.unwrap();
                stream.flush().await.unwrap();
                stream.shutdown().await.unwrap();
            }
        });
        (format!("https://localhost:{port}"), server)
    }

    #[tokio::test]
    async fn the_ca_is_returned_only_when_its_hash_matches() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let (url, server) = serve_cacerts(&ca).await;

        assert_eq!(
            fetch_pinned_ca(&url, &ca.hash()).await.unwrap(),
            ca.cert_pem
        );
        let ip_url = url.replace("localhost", "127.0.0.1");
        assert_eq!(
            fetch_pinned_ca(&ip_url, &ca.hash()).await.unwrap(),
            ca.cert_pem
        );

        let other_hash = Ca::generate("skiff-ca").unwrap().hash();
        let error = fetch_pinned_ca(&url, &other_hash).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the server's CA does not match the token's CA hash (expected {other_hash}, got {})",
                ca.hash()
            )
        );
        assert!(!error.is_retryable());

        let error = fetch_pinned_ca(&format!("{url}/prefix"), &ca.hash())
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("the server answered \"HTTP/1.1 404 Not Found\""),
            "{error}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_retryable_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("https://127.0.0.1:{port}");
        let error = fetch_pinned_ca(&url, &"0".repeat(64)).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert_eq!(error.to_string(), format!("failed to fetch {url}/cacerts"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out() {
        // Accepts TCP but never answers the TLS handshake.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let error = fetch_pinned_ca(&url, &"0".repeat(64)).await.unwrap_err();
        let Error::Fetch { source, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(source.kind(), io::ErrorKind::TimedOut);
        drop(listener);
    }
}
