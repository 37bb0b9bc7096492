//! The service proxy: Services + Endpoints → one nftables table. (Being written.)
#![allow(missing_docs)]
use std::net::Ipv4Addr;
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}
pub struct ServiceProxy;
impl ServiceProxy {
    pub async fn remove(_table: &str) -> Result<(), super::NetworkError> {
        Ok(())
    }
}
#[derive(Default)]
pub struct ProxyConfig {
    pub table: String,
    pub node_ips: Vec<Ipv4Addr>,
    pub cluster_cidr: ipnet::Ipv4Net,
    pub pod_cidr: ipnet::Ipv4Net,
    pub bridge: String,
}
impl ServiceProxy {
    pub fn new(_c: ProxyConfig) -> Self {
        Self
    }
    pub async fn sync(
        &mut self,
        _s: &[k8s_openapi::api::core::v1::Service],
        _e: &[k8s_openapi::api::core::v1::Endpoints],
        _h: &[HostPort],
    ) -> Result<(), super::NetworkError> {
        Ok(())
    }
}
