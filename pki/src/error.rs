//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `skiff-pki`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing or syncing a file failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done ("read", "write", "create directory", ...).
        action: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused to build or sign a key, certificate or CSR.
    #[error("failed to {action}")]
    Certificate {
        /// What was being built ("generate the CA key", "sign the certificate for ...").
        action: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM or DER input did not hold what it should.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being read ("CA certificate", "certificate signing request", ...).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A private key does not belong to the certificate stored next to it.
    #[error("{} does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A token is malformed; the message says what is wrong with it.
    #[error("{0}")]
    InvalidToken(String),
    /// rustls rejected a configuration (certificates, key or protocol versions).
    #[error("failed to build the TLS configuration")]
    Tls(#[from] rustls::Error),
    /// rustls could not build the client certificate verifier.
    #[error("failed to build the client certificate verifier")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The server URL given to [`crate::fetch_pinned_ca`] is not `https://host[:port]`.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting to the server, the TLS handshake or the transfer failed (retryable).
    #[error("failed to fetch {url}")]
    Fetch {
        /// The URL that was fetched.
        url: String,
        /// The underlying error (timeouts are `ErrorKind::TimedOut`).
        #[source]
        source: std::io::Error,
    },
    /// The server answered, but not with a CA (bad status or malformed HTTP).
    #[error("failed to fetch {url}: {reason}")]
    FetchResponse {
        /// The URL that was fetched.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The server's CA is not the one the token pins: wrong cluster or a machine in the middle.
    #[error(
        "the server's CA does not match the token's CA hash (expected {expected}, got {actual})"
    )]
    CaHashMismatch {
        /// The hash from the token.
        expected: String,
        /// The hash of what the server sent.
        actual: String,
    },
}

impl Error {
    /// Whether trying again later (or another server) may succeed: true only for network
    /// failures, never for bad input, bad files or a CA that does not match.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Fetch { .. })
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl ToString) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn certificate(action: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Error {
        let action = action.into();
        move |source| Error::Certificate { action, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
