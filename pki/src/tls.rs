//! rustls server and client configs on the ring provider, trusting only the cluster CA.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::{Error, KeyPair, Result};

/// ALPN protocols offered by default: HTTP/2 first, HTTP/1.1 as fallback.
const ALPN_HTTP: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients may connect without a certificate (bearer tokens, anonymous); a certificate that
    /// is presented must still chain to the CA.
    Optional,
    /// Clients must present a certificate that chains to the CA.
    Required,
}

/// The one crypto backend Skiff uses, named explicitly so that no process-wide default is
/// needed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config serving `pair` and verifying client certificates against `ca_pem`;
/// offers ALPN `h2` and `http/1.1`.
pub fn server_config(
    ca_pem: &str,
    pair: &KeyPair,
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let roots = Arc::new(root_store(ca_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = match client_auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    }
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs_from_pem(&pair.cert_pem)?,
            private_key_from_pem(&pair.key_pem)?,
        )?;
    config.alpn_protocols = ALPN_HTTP.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A TLS client config trusting only `ca_pem` and presenting `identity` when given; offers
/// ALPN `h2` and `http/1.1` (for hyper/reqwest-style clients that speak either).
pub fn client_config(
    ca_pem: &str,
    identity: Option<&KeyPair>,
) -> Result<Arc<rustls::ClientConfig>> {
    client_config_with_alpn(ca_pem, identity, &ALPN_HTTP)
}

/// Like [`client_config`] but offering ALPN `h2` only, for gRPC (tonic) connectors: a server
/// that also offers `http/1.1` must not be allowed to pick it.
pub fn client_config_h2(
    ca_pem: &str,
    identity: Option<&KeyPair>,
) -> Result<Arc<rustls::ClientConfig>> {
    client_config_with_alpn(ca_pem, identity, &[b"h2"])
}

fn client_config_with_alpn(
    ca_pem: &str,
    identity: Option<&KeyPair>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_pem)?);
    let mut config = match identity {
        Some(pair) => builder.with_client_auth_cert(
            certs_from_pem(&pair.cert_pem)?,
            private_key_from_pem(&pair.key_pem)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every certificate in `pem`, in order (leaf first for a chain); errors if there is none.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::invalid("PEM certificate", error))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "PEM certificate",
            "no CERTIFICATE block found",
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `pem`.
pub fn private_key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|error| Error::invalid("PEM private key", error))
}

fn root_store(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem)? {
        roots
            .add(cert)
            .map_err(|error| Error::invalid("CA certificate", error))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::{Ca, Identity, Issue, Usage, identity_of};

    fn issue(ca: &Ca, common_name: &str, organizations: &[&str], usage: Usage) -> KeyPair {
        ca.issue(&Issue {
            common_name: common_name.to_owned(),
            organizations: organizations.iter().map(|&o| o.to_owned()).collect(),
            dns_names: vec!["localhost".to_owned()],
            ips: vec!["127.0.0.1".parse().unwrap()],
            usage,
            validity_days: 1,
        })
        .unwrap()
    }

    /// What each side saw of one connection.
    #[derive(Debug)]
    struct Outcome {
        /// The server's handshake: the client's identity if it sent a certificate.
        server: Result<Option<Identity>, String>,
        /// Whether the client got the server's greeting.
        client_greeted: bool,
        /// The ALPN protocol the client negotiated.
        alpn: Option<Vec<u8>>,
    }

    async fn connect(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let serve = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .map_err(|error| error.to_string())?;
            let identity = match stream.get_ref().1.peer_certificates() {
                Some(certs) => Some(identity_of(&certs[0]).map_err(|error| error.to_string())?),
                None => None,
            };
            stream.write_all(b"hello").await.unwrap();
            stream.shutdown().await.unwrap();
            Ok(identity)
        };
        let server_name = ServerName::try_from(server_name.to_owned()).unwrap();
        let dial = async {
            let tcp = TcpStream::connect(address).await.unwrap();
            let Ok(mut stream) = TlsConnector::from(client).connect(server_name, tcp).await else {
                return (false, None);
            };
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let mut greeting = Vec::new();
            let greeted = stream.read_to_end(&mut greeting).await.is_ok() && greeting == b"hello";
            (greeted, alpn)
        };
        let (server, (client_greeted, alpn)) = tokio::join!(serve, dial);
        Outcome {
            server,
            client_greeted,
            alpn,
        }
    }

    #[tokio::test]
    async fn mutual_tls_hands_the_client_identity_to_the_server() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let server_pair = issue(&ca, "skiff-apiserver", &[], Usage::Server);
        let admin = issue(
            &ca,
            "skiff-admin",
            &["system:masters", "skiff:view"],
            Usage::Client,
        );
        let server = server_config(&ca.cert_pem, &server_pair, ClientAuth::Required).unwrap();
        let expected = Identity {
            user: "skiff-admin".to_owned(),
            groups: vec!["system:masters".to_owned(), "skiff:view".to_owned()],
        };
        for server_name in ["localhost", "127.0.0.1"] {
            let client = client_config(&ca.cert_pem, Some(&admin)).unwrap();
            let outcome = connect(server.clone(), client, server_name).await;
            assert_eq!(outcome.server, Ok(Some(expected.clone())), "{server_name}");
            assert!(outcome.client_greeted);
            assert_eq!(outcome.alpn.as_deref(), Some(&b"h2"[..]));
        }
    }

    #[tokio::test]
    async fn required_client_auth_refuses_a_client_without_a_certificate() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let server_pair = issue(&ca, "skiff-apiserver", &[], Usage::Server);
        let server = server_config(&ca.cert_pem, &server_pair, ClientAuth::Required).unwrap();
        let client = client_config(&ca.cert_pem, None).unwrap();
        let outcome = connect(server, client, "localhost").await;
        assert!(outcome.server.is_err(), "{outcome:?}");
        assert!(!outcome.client_greeted);
    }

    #[tokio::test]
    async fn optional_client_auth_accepts_a_client_without_a_certificate() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let server_pair = issue(&ca, "skiff-apiserver", &[], Usage::Server);
        let server = server_config(&ca.cert_pem, &server_pair, ClientAuth::Optional).unwrap();
        let client = client_config(&ca.cert_pem, None).unwrap();
        let outcome = connect(server, client, "localhost").await;
        assert_eq!(outcome.server, Ok(None));
        assert!(outcome.client_greeted);
    }

    #[tokio::test]
    async fn a_client_certificate_from_another_ca_is_refused_even_when_optional() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let other_ca = Ca::generate("skiff-ca").unwrap();
        let server_pair = issue(&ca, "skiff-apiserver", &[], Usage::Server);
        let intruder = issue(&other_ca, "skiff-admin", &["system:masters"], Usage::Client);
        for client_auth in [ClientAuth::Required, ClientAuth::Optional] {
            let server = server_config(&ca.cert_pem, &server_pair, client_auth).unwrap();
            let client = client_config(&ca.cert_pem, Some(&intruder)).unwrap();
            let outcome = connect(server, client, "localhost").await;
            assert!(outcome.server.is_err(), "{client_auth:?}: {outcome:?}");
            assert!(!outcome.client_greeted);
        }
    }

    #[tokio::test]
    async fn a_client_refuses_a_server_from_another_ca_or_with_a_client_only_certificate() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let other_ca = Ca::generate("skiff-ca").unwrap();
        let impostor = issue(&other_ca, "skiff-apiserver", &[], Usage::Server);
        let client_only = issue(&ca, "skiff-apiserver", &[], Usage::Client);
        for server_pair in [impostor, client_only] {
            let server = server_config(&ca.cert_pem, &server_pair, ClientAuth::Optional).unwrap();
            let client = client_config(&ca.cert_pem, None).unwrap();
            let outcome = connect(server, client, "localhost").await;
            assert!(outcome.server.is_err(), "{outcome:?}");
            assert!(!outcome.client_greeted);
        }
    }

    #[tokio::test]
    async fn the_grpc_client_config_negotiates_h2_only() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let peer = issue(
            &ca,
            "system:skiff-peer:a",
            &["system:skiff-peers"],
            Usage::ServerAndClient,
        );
        let server = server_config(&ca.cert_pem, &peer, ClientAuth::Required).unwrap();
        let client = client_config_h2(&ca.cert_pem, Some(&peer)).unwrap();
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
        let outcome = connect(server, client, "localhost").await;
        assert_eq!(outcome.server.unwrap().unwrap().user, "system:skiff-peer:a");
        assert_eq!(outcome.alpn.as_deref(), Some(&b"h2"[..]));
    }

    #[test]
    fn bad_pem_is_reported() {
        let ca = Ca::generate("skiff-ca").unwrap();
        let pair = KeyPair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: "garbage".to_owned(),
        };
        let error = server_config(&ca.cert_pem, &pair, ClientAuth::Optional).unwrap_err();
        assert!(
            error.to_string().starts_with("invalid PEM private key"),
            "{error}"
        );
        let error = client_config("garbage", None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid PEM certificate: no CERTIFICATE block found"
        );
    }
}
