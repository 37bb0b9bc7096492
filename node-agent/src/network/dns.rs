//! The node-local cluster DNS server. (Being written.)
#![allow(missing_docs)]
pub fn resolv_conf(nameserver: std::net::IpAddr, namespace: &str, domain: &str) -> String {
    format!(
        "nameserver {nameserver}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    )
}
#[derive(Clone)]
pub struct ClusterDns;
impl ClusterDns {
    pub fn new(_d: &str, _u: Vec<std::net::SocketAddr>) -> Self {
        Self
    }
    pub fn update(
        &self,
        _s: &[k8s_openapi::api::core::v1::Service],
        _e: &[k8s_openapi::api::core::v1::Endpoints],
    ) {
    }
    pub async fn serve(
        &self,
        _u: std::net::UdpSocket,
        _t: std::net::TcpListener,
        _s: tokio_util::sync::CancellationToken,
    ) -> Result<(), super::NetworkError> {
        Ok(())
    }
}
pub fn host_upstreams(_t: &str) -> Vec<std::net::SocketAddr> {
    Vec::new()
}
