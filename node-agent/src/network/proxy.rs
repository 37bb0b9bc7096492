//! The service proxy: Services + Endpoints → one nftables table.
