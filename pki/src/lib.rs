//! Skiff's cluster PKI, shared by the control plane, the node agent, `skiff` and e2e.
//!
//! - `ca`: the cluster CA ([`Ca`]), leaf certificates it issues ([`Issue`], [`KeyPair`]),
//!   CSRs ([`generate_csr`]), the k3s-style CA hash ([`ca_hash`]) and who a certificate names
//!   ([`identity_of`]).
//! - `subject`: subjects with several organizations (groups), which rcgen cannot write.
//! - `files`: atomic, fsynced writes with private key modes.
//! - `token`: join and bearer tokens in k3s form ([`Token`]).
//! - `tls`: rustls server and client configs on the ring provider ([`server_config`],
//!   [`client_config`]).
//! - `fetch`: the one unverified HTTPS request, whose answer is pinned by hash
//!   ([`fetch_pinned_ca`]).
//! - `error`: the crate's one error type ([`Error`]).

mod ca;
mod error;
mod fetch;
mod files;
mod subject;
mod tls;
mod token;

pub use ca::{Ca, Identity, Issue, KeyPair, Usage, ca_hash, generate_csr, identity_of};
pub use error::{Error, Result};
pub use fetch::fetch_pinned_ca;
pub use files::write_atomic;
pub use tls::{
    ClientAuth, certs_from_pem, client_config, client_config_h2, private_key_from_pem,
    server_config,
};
pub use token::Token;
