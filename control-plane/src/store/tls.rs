//! Mutual TLS for peer traffic: the member's peer certificate served and presented, the
//! cluster CA both sides verify against, and the check that a verified client is a peer
//! (group `system:skiff-peers`) rather than some other holder of a cluster certificate.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use super::{Error, Result};

/// The certificate group (O) every member's peer certificate carries; only it may call
/// the peer services.
pub const PEER_GROUP: &str = "system:skiff-peers";

/// How long a TLS handshake with a member may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS material of one member's peer traffic (Raft and Kv on `listen_peer`).
pub struct PeerTls {
    /// The cluster CA (PEM): members verify each other's certificates against it.
    pub ca_pem: String,
    /// This member's peer certificate and key (ServerAndClient, O `system:skiff-peers`,
    /// SANs for its advertise address): served to members that connect, and presented
    /// to the members it connects to.
    pub identity: skiff_pki::KeyPair,
}

impl Clone for PeerTls {
    fn clone(&self) -> Self {
        Self {
            ca_pem: self.ca_pem.clone(),
            identity: skiff_pki::KeyPair {
                cert_pem: self.identity.cert_pem.clone(),
                key_pem: self.identity.key_pem.clone(),
            },
        }
    }
}

impl fmt::Debug for PeerTls {
    // Configs are logged; the private key must never be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("identity", &"<peer certificate and key>")
            .finish()
    }
}

impl PeerTls {
    /// Loads `pki_dir/peer.crt`, `pki_dir/peer.key` and `pki_dir/ca.crt` (a control-plane
    /// data dir's `pki/`); `None` when there is no `peer.crt` (a plain-HTTP member).
    pub fn load(pki_dir: &Path) -> Result<Option<Self>> {
        if !pki_dir.join("peer.crt").exists() {
            return Ok(None);
        }
        let identity = skiff_pki::KeyPair::load(pki_dir, "peer").map_err(|source| Error::Tls {
            context: format!("loading the peer certificate from {}", pki_dir.display()),
            source: Box::new(source),
        })?;
        let ca_path = pki_dir.join("ca.crt");
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(|source| Error::Tls {
            context: format!("reading {}", ca_path.display()),
            source: Box::new(source),
        })?;
        Ok(Some(Self { ca_pem, identity }))
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.identity.cert_pem, &self.identity.key_pem)
    }

    /// The server side: serve the peer certificate, require a client certificate
    /// signed by the CA (which peer it names is [`PeerAuth`]'s job).
    pub(super) fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The client side towards `host`: verify its certificate against the CA (and its
    /// name against `host`), present the peer certificate.
    pub(super) fn client_config(&self, host: &str) -> ClientTlsConfig {
        // URIs bracket IPv6 literals; certificate names do not.
        let server_name = host.trim_start_matches('[').trim_end_matches(']');
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(server_name)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// Admits only callers whose verified client certificate carries [`PEER_GROUP`]: the CA
/// also signs node and admin certificates, which must not reach Raft or the raw store.
/// Without TLS (`required` false) it admits everything.
#[derive(Clone, Copy)]
pub(super) struct PeerAuth {
    pub required: bool,
}

impl Interceptor for PeerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            return Ok(request);
        }
        let denied = || Status::permission_denied("peer certificate required");
        // The handshake already verified the chain to the CA; only the name is left.
        let certs = request.peer_certs().ok_or_else(denied)?;
        let leaf = certs.first().ok_or_else(denied)?;
        let identity = skiff_pki::identity_of(leaf.as_ref()).map_err(|_| denied())?;
        if identity.groups.iter().any(|group| group == PEER_GROUP) {
            Ok(request)
        } else {
            tracing::debug!(user = %identity.user, "refused a non-peer certificate on the peer port");
            Err(denied())
        }
    }
}

/// Why a call failed in a way retrying cannot fix: a TLS handshake error (an unknown CA,
/// a certificate without the right name) or the peer's refusal of our certificate.
pub(super) fn auth_failure(status: &Status) -> Option<String> {
    if matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
    ) {
        return Some(status.message().to_owned());
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(format!("TLS handshake failed: {tls}"));
        }
        // `io::Error::source` skips the wrapped error itself, so look inside.
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(format!("TLS handshake failed: {tls}"));
        }
        source = error.source();
    }
    None
}
