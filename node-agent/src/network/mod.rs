//! The node's share of the cluster network (DESIGN.md §7): the pod bridge, one veth
//! pair and IP per pod sandbox (`ipam`, `bridge`), routes to other nodes' podCIDRs
//! (`routes`), the service proxy that programs nftables from Services and Endpoints
//! (`proxy`), and the node-local cluster DNS (`dns`).
//!
//! Everything here talks to the kernel through netlink (rtnetlink) and nftables (one
//! `nft -f -` transaction per sync, as kube-proxy's nftables mode does); nothing shells
//! out to `ip`.

pub mod dns;
pub mod proxy;

/// A failure to set up or update the node's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A setting the network cannot work with (a bad CIDR, an exhausted range).
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A netlink request failed.
    #[error("netlink: {what}: {message}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        message: String,
    },
    /// `nft` refused a ruleset or could not run.
    #[error("nftables: {0}")]
    Nft(String),
    /// The DNS server failed.
    #[error("dns: {0}")]
    Dns(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl NetworkError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
