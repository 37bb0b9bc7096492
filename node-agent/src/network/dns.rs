//! The node-local cluster DNS server.
