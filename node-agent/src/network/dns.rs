//! The node-local cluster DNS server.
//!
//! [`ClusterDns`] answers names in the cluster domain from the Services and Endpoints it
//! was last given, following the Kubernetes DNS specification (what CoreDNS's
//! `kubernetes` plugin serves), and forwards every other name to the host's upstream
//! servers. It is a hickory-server [`RequestHandler`] of our own; the record table
//! ([`RecordTable`]) is pure and swapped whole on [`ClusterDns::update`].
//!
//! - `svc.ns.svc.DOMAIN` A → the ClusterIP; for a headless service (`clusterIP: None`),
//!   the ready endpoint addresses; `ExternalName` → CNAME.
//! - `_port._proto.svc.ns.svc.DOMAIN` SRV for named ports (headless: one per ready
//!   endpoint, targeting the endpoint's name).
//! - `hostname.svc.ns.svc.DOMAIN` (or the dashed address) A for headless endpoints.
//! - Unknown names in the domain are NXDOMAIN with the zone's SOA; names that exist
//!   only as parents of others (`ns.svc.DOMAIN`) are NODATA. TTL 5 s, case-insensitive.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use skiff_api::types::{Endpoints, Service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use super::NetworkError;

/// The TTL of every cluster record (CoreDNS's default).
pub const TTL: u32 = 5;
/// How long one upstream server gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay idle before the server closes its connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the cluster domain holds for one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    /// A records.
    pub a: BTreeSet<Ipv4Addr>,
    /// SRV records: (port, target name without the trailing dot).
    pub srv: BTreeSet<(u16, String)>,
    /// A CNAME (`ExternalName` services), target without the trailing dot.
    pub cname: Option<String>,
}

/// The answer to one question about a name in the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name has records of the asked type (or a CNAME).
    Found(&'a NameRecords),
    /// The name exists but has no records of the asked type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// The name is outside the cluster domain.
    NotInDomain,
}

/// Every cluster name and its records, built from Services and Endpoints (pure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordTable {
    /// The cluster domain, lowercase, without the trailing dot.
    domain: String,
    /// Lowercase names without the trailing dot → records.
    names: HashMap<String, NameRecords>,
    /// Names that exist only because names below them do (empty non-terminals).
    parents: HashSet<String>,
}

impl RecordTable {
    /// The table of `domain` for these objects.
    pub fn build(domain: &str, services: &[Service], endpoints: &[Endpoints]) -> Self {
        let mut table = Self {
            domain: normalize(domain),
            ..Self::default()
        };
        let endpoints_by_key: HashMap<(&str, &str), &Endpoints> = endpoints
            .iter()
            .filter_map(|endpoints| {
                let namespace = endpoints.metadata.namespace.as_deref().unwrap_or("default");
                Some(((namespace, endpoints.metadata.name.as_deref()?), endpoints))
            })
            .collect();
        for service in services {
            let (Some(name), Some(spec)) = (service.metadata.name.as_deref(), &service.spec) else {
                continue;
            };
            let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
            let base = format!("{name}.{namespace}.svc.{}", table.domain).to_ascii_lowercase();
            table.names.entry(base.clone()).or_default();
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref() {
                    table.entry(&base).cname = Some(normalize(target));
                }
                continue;
            }
            let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
            if cluster_ip == "None" {
                let Some(endpoints) = endpoints_by_key.get(&(namespace, name)) else {
                    continue;
                };
                table.add_headless(&base, endpoints);
            } else if let Ok(ip) = cluster_ip.parse::<Ipv4Addr>() {
                table.entry(&base).a.insert(ip);
                for port in spec.ports.as_deref().unwrap_or_default() {
                    let (Some(port_name), Ok(number)) =
                        (port.name.as_deref(), u16::try_from(port.port))
                    else {
                        continue;
                    };
                    if port_name.is_empty() {
                        continue;
                    }
                    let protocol = port.protocol.as_deref().unwrap_or("TCP");
                    let srv_name = format!("_{port_name}._{protocol}.{base}").to_ascii_lowercase();
                    table.entry(&srv_name).srv.insert((number, base.clone()));
                }
            }
        }
        let mut parents = HashSet::new();
        for name in table.names.keys() {
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() < table.domain.len() {
                    break;
                }
                parents.insert(parent.to_owned());
                rest = parent;
            }
        }
        parents.insert(table.domain.clone());
        table.parents = parents;
        table
    }

    fn entry(&mut self, name: &str) -> &mut NameRecords {
        self.names.entry(name.to_owned()).or_default()
    }

    /// A headless service: the service name lists every ready address, each address has
    /// its own name (its `hostname`, or its dashed address), and named ports get one SRV
    /// record per address.
    fn add_headless(&mut self, base: &str, endpoints: &Endpoints) {
        for subset in endpoints.subsets.as_deref().unwrap_or_default() {
            let mut targets = Vec::new();
            for address in subset.addresses.as_deref().unwrap_or_default() {
                let Ok(ip) = address.ip.parse::<Ipv4Addr>() else {
                    continue;
                };
                self.entry(base).a.insert(ip);
                let label = match address.hostname.as_deref() {
                    Some(hostname) if !hostname.is_empty() => hostname.to_ascii_lowercase(),
                    _ => ip.to_string().replace('.', "-"),
                };
                let target = format!("{label}.{base}");
                self.entry(&target).a.insert(ip);
                targets.push(target);
            }
            for port in subset.ports.as_deref().unwrap_or_default() {
                let (Some(port_name), Ok(number)) =
                    (port.name.as_deref(), u16::try_from(port.port))
                else {
                    continue;
                };
                if port_name.is_empty() {
                    continue;
                }
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let srv_name = format!("_{port_name}._{protocol}.{base}").to_ascii_lowercase();
                for target in &targets {
                    self.entry(&srv_name).srv.insert((number, target.clone()));
                }
            }
        }
    }

    /// The cluster domain (lowercase, no trailing dot).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` (any case, with or without the trailing dot) is in the domain.
    pub fn in_domain(&self, name: &str) -> bool {
        let name = normalize(name);
        name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }

    /// What the table says about `name` for `record_type`.
    pub fn lookup(&self, name: &str, record_type: RecordType) -> Lookup<'_> {
        if !self.in_domain(name) {
            return Lookup::NotInDomain;
        }
        let name = normalize(name);
        let Some(records) = self.names.get(&name) else {
            return if self.parents.contains(&name) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        let found = records.cname.is_some()
            || match record_type {
                RecordType::A => !records.a.is_empty(),
                RecordType::SRV => !records.srv.is_empty(),
                RecordType::ANY => !records.a.is_empty() || !records.srv.is_empty(),
                _ => false,
            };
        if found {
            Lookup::Found(records)
        } else {
            Lookup::NoData
        }
    }

    /// The A records of `name`, if it has any (SRV targets' additional records).
    fn addresses(&self, name: &str) -> Option<&BTreeSet<Ipv4Addr>> {
        self.names
            .get(name)
            .map(|records| &records.a)
            .filter(|a| !a.is_empty())
    }
}

/// Lowercase, without the trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

struct Inner {
    upstreams: Vec<SocketAddr>,
    soa: Record,
    table: RwLock<Arc<RecordTable>>,
}

/// The node's cluster DNS server; cheap to clone (the clones share the record table).
#[derive(Clone)]
pub struct ClusterDns {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDns")
            .field("upstreams", &self.inner.upstreams)
            .finish_non_exhaustive()
    }
}

impl ClusterDns {
    /// A server for `cluster_domain` (e.g. `cluster.local`) with no services yet, that
    /// forwards other names to `upstreams`.
    pub fn new(cluster_domain: &str, upstreams: Vec<SocketAddr>) -> Self {
        let table = RecordTable::build(cluster_domain, &[], &[]);
        let origin = name_of(table.domain());
        let soa = Record::from_rdata(
            origin.clone(),
            TTL,
            RData::SOA(SOA::new(
                name_of(&format!("ns.dns.{}", table.domain())),
                name_of(&format!("hostmaster.{}", table.domain())),
                1,
                7200,
                1800,
                86400,
                TTL,
            )),
        );
        Self {
            inner: Arc::new(Inner {
                upstreams,
                soa,
                table: RwLock::new(Arc::new(table)),
            }),
        }
    }

    /// Replaces the records with those of these objects; the next query sees them.
    pub fn update(&self, services: &[Service], endpoints: &[Endpoints]) {
        let table = Arc::new(RecordTable::build(
            &self.table().domain,
            services,
            endpoints,
        ));
        match self.inner.table.write() {
            Ok(mut current) => *current = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    fn table(&self) -> Arc<RecordTable> {
        match self.inner.table.read() {
            Ok(table) => Arc::clone(&table),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Serves DNS on these sockets (bound by the caller, e.g. on the bridge address in the
    /// node's network namespace) until `shutdown`, then drains and returns.
    pub async fn serve(
        &self,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), NetworkError> {
        udp.set_nonblocking(true)
            .map_err(|error| NetworkError::io("making the dns udp socket nonblocking", error))?;
        tcp.set_nonblocking(true)
            .map_err(|error| NetworkError::io("making the dns tcp listener nonblocking", error))?;
        let udp = tokio::net::UdpSocket::from_std(udp)
            .map_err(|error| NetworkError::io("registering the dns udp socket", error))?;
        let tcp = tokio::net::TcpListener::from_std(tcp)
            .map_err(|error| NetworkError::io("registering the dns tcp listener", error))?;
        let mut server = hickory_server::Server::new(self.clone());
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
        let server_shutdown = server.shutdown_token().clone();
        let done = server.block_until_done();
        tokio::pin!(done);
        tokio::select! {
            result = &mut done => {
                return result.map_err(|error| NetworkError::Dns(format!("server stopped: {error}")));
            }
            () = shutdown.cancelled() => {}
        }
        server_shutdown.cancel();
        done.await
            .map_err(|error| NetworkError::Dns(format!("server shutdown: {error}")))
    }

    /// Sends the raw query to each upstream in turn; the first answer with the query's id
    /// wins. TCP clients are forwarded over TCP (their answers may be large).
    async fn forward(&self, raw: &[u8], id: u16, over_tcp: bool) -> Option<Message> {
        for upstream in &self.inner.upstreams {
            let exchange = async {
                if over_tcp {
                    exchange_tcp(*upstream, raw).await
                } else {
                    exchange_udp(*upstream, raw, id).await
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
                Ok(Ok(bytes)) => match Message::from_vec(&bytes) {
                    Ok(message) if message.metadata.id == id => return Some(message),
                    Ok(_) => tracing::debug!(%upstream, "upstream answered another query id"),
                    Err(error) => tracing::debug!(%upstream, %error, "unreadable upstream answer"),
                },
                Ok(Err(error)) => tracing::debug!(%upstream, %error, "upstream failed"),
                Err(_) => tracing::debug!(%upstream, "upstream timed out"),
            }
        }
        None
    }
}

async fn exchange_udp(upstream: SocketAddr, raw: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(raw).await?;
    let mut buffer = vec![0; 65535];
    loop {
        let length = socket.recv(&mut buffer).await?;
        // A stray datagram is skipped; the caller's timeout bounds the wait.
        if length >= 2 && u16::from_be_bytes([buffer[0], buffer[1]]) == id {
            buffer.truncate(length);
            return Ok(buffer);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u16::try_from(raw.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(raw.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(raw);
    stream.write_all(&framed).await?;
    let answer_length = stream.read_u16().await?;
    let mut answer = vec![0; usize::from(answer_length)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// A name from text that came from our own tables or configuration; the root name if it
/// is not a valid name (which cannot answer anything, so nothing wrong is served).
fn name_of(text: &str) -> Name {
    let mut name = Name::from_ascii(text).unwrap_or_else(|_| Name::root());
    name.set_fqdn(true);
    name
}

/// The answer, authority (SOA) and additional records for one cluster question.
struct ClusterAnswer {
    response_code: ResponseCode,
    answers: Vec<Record>,
    soa: Vec<Record>,
    additionals: Vec<Record>,
}

impl ClusterDns {
    fn answer_cluster(
        &self,
        table: &RecordTable,
        query_name: &Name,
        record_type: RecordType,
    ) -> ClusterAnswer {
        let key = normalize(&query_name.to_ascii());
        let mut answer = ClusterAnswer {
            response_code: ResponseCode::NoError,
            answers: Vec::new(),
            soa: Vec::new(),
            additionals: Vec::new(),
        };
        if key == table.domain() && matches!(record_type, RecordType::SOA | RecordType::ANY) {
            answer.answers.push(self.inner.soa.clone());
            return answer;
        }
        match table.lookup(&key, record_type) {
            Lookup::Found(records) => {
                if let Some(target) = &records.cname {
                    answer.answers.push(Record::from_rdata(
                        query_name.clone(),
                        TTL,
                        RData::CNAME(CNAME(name_of(target))),
                    ));
                    return answer;
                }
                if matches!(record_type, RecordType::A | RecordType::ANY) {
                    for ip in &records.a {
                        answer.answers.push(Record::from_rdata(
                            query_name.clone(),
                            TTL,
                            RData::A(A(*ip)),
                        ));
                    }
                }
                if matches!(record_type, RecordType::SRV | RecordType::ANY) {
                    // Weights split evenly, as CoreDNS does.
                    let weight = u16::try_from(100 / records.srv.len().max(1)).unwrap_or(100);
                    for (port, target) in &records.srv {
                        answer.answers.push(Record::from_rdata(
                            query_name.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, weight, *port, name_of(target))),
                        ));
                        for ip in table.addresses(target).into_iter().flatten() {
                            answer.additionals.push(Record::from_rdata(
                                name_of(target),
                                TTL,
                                RData::A(A(*ip)),
                            ));
                        }
                    }
                }
            }
            Lookup::NoData => answer.soa.push(self.inner.soa.clone()),
            Lookup::NxDomain | Lookup::NotInDomain => {
                answer.response_code = ResponseCode::NXDomain;
                answer.soa.push(self.inner.soa.clone());
            }
        }
        answer
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let queries = request.queries.queries();
        let (OpCode::Query, [query]) = (request.metadata.op_code, queries) else {
            let code = if request.metadata.op_code == OpCode::Query {
                ResponseCode::FormErr
            } else {
                ResponseCode::NotImp
            };
            let response = builder.error_msg(&request.metadata, code);
            return send(&mut response_handle, response, &request.metadata).await;
        };
        let table = self.table();
        let query_name = query.original().name();
        if table.in_domain(&query_name.to_ascii()) {
            let answer = self.answer_cluster(&table, query_name, query.query_type());
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = true;
            metadata.recursion_available = true;
            metadata.response_code = answer.response_code;
            let mut builder = builder;
            if let Some(edns) = &request.edns {
                builder.edns(edns);
            }
            let response = builder.build(
                metadata,
                answer.answers.iter(),
                std::iter::empty(),
                answer.soa.iter(),
                answer.additionals.iter(),
            );
            return send(&mut response_handle, response, &request.metadata).await;
        }

        let over_tcp = request.protocol() != hickory_server::net::xfer::Protocol::Udp;
        let Some(reply) = self
            .forward(request.as_slice(), request.metadata.id, over_tcp)
            .await
        else {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.recursion_available = true;
            metadata.response_code = ResponseCode::ServFail;
            let response = builder.build_no_records(metadata);
            return send(&mut response_handle, response, &request.metadata).await;
        };
        let mut metadata = reply.metadata;
        metadata.id = request.metadata.id;
        let mut builder = builder;
        if let Some(edns) = &reply.edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        send(&mut response_handle, response, &request.metadata).await
    }
}

/// Sends a response; if that fails, what the server logs is a SERVFAIL.
async fn send<'a, R: ResponseHandler>(
    response_handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request_metadata: &Metadata,
) -> ResponseInfo {
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "sending a dns response failed");
            let mut metadata = Metadata::response_from_request(request_metadata);
            metadata.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header {
                metadata,
                counts: hickory_proto::op::HeaderCounts::default(),
            }
            .into()
        }
    }
}

/// A pod's `/etc/resolv.conf` for `dnsPolicy: ClusterFirst`, as kubelet writes it.
pub fn resolv_conf(nameserver: IpAddr, namespace: &str, cluster_domain: &str) -> String {
    let domain = cluster_domain.trim_end_matches('.');
    format!(
        "nameserver {nameserver}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    )
}

/// The nameservers (port 53) of a host's `resolv.conf`, in order.
pub fn host_upstreams(resolv_conf_text: &str) -> Vec<SocketAddr> {
    resolv_conf_text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (`fe80::1%eth0`) cannot be used from here.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use skiff_api::types::{
        EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceSpec,
    };

    use super::*;

    fn service(name: &str, cluster_ip: &str, ports: &[(&str, i32, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("shop".to_owned()),
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(port_name, port, protocol)| ServicePort {
                            name: Some((*port_name).to_owned()),
                            port: *port,
                            protocol: Some((*protocol).to_owned()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn headless_endpoints() -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                namespace: Some("shop".to_owned()),
                name: Some("db".to_owned()),
                ..ObjectMeta::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![
                    EndpointAddress {
                        ip: "10.244.1.5".to_owned(),
                        hostname: Some("db-0".to_owned()),
                        ..EndpointAddress::default()
                    },
                    EndpointAddress {
                        ip: "10.244.2.6".to_owned(),
                        ..EndpointAddress::default()
                    },
                ]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.244.3.7".to_owned(),
                    ..EndpointAddress::default()
                }]),
                ports: Some(vec![EndpointPort {
                    name: Some("pg".to_owned()),
                    port: 5432,
                    protocol: Some("TCP".to_owned()),
                    ..EndpointPort::default()
                }]),
            }]),
        }
    }

    fn table() -> RecordTable {
        let mut external = service("ext", "", &[]);
        let spec = external.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".to_owned());
        spec.external_name = Some("example.com".to_owned());
        RecordTable::build(
            "cluster.local.",
            &[
                service("web", "10.96.0.10", &[("http", 80, "TCP"), ("", 81, "TCP")]),
                service("db", "None", &[("pg", 5432, "TCP")]),
                external,
            ],
            &[headless_endpoints()],
        )
    }

    /// A and SRV records expected of a found name.
    type Found<'a> = (&'a [&'a str], &'a [(u16, &'a str)]);

    /// Checks one question: the A addresses and SRV (port, target) pairs found, or which
    /// empty answer it gets.
    fn check(name: &str, record_type: RecordType, expected: Result<Found<'_>, Lookup<'static>>) {
        let table = table();
        let lookup = table.lookup(name, record_type);
        match expected {
            Ok((a, srv)) => {
                let Lookup::Found(records) = lookup else {
                    panic!("{name} {record_type}: {lookup:?}");
                };
                let found_a: Vec<String> = records.a.iter().map(ToString::to_string).collect();
                assert_eq!(found_a, a, "{name}");
                let found_srv: Vec<(u16, &str)> = records
                    .srv
                    .iter()
                    .map(|(port, target)| (*port, target.as_str()))
                    .collect();
                assert_eq!(found_srv, srv, "{name}");
            }
            Err(expected) => assert_eq!(lookup, expected, "{name} {record_type}"),
        }
    }

    #[test]
    fn cluster_names_follow_the_kubernetes_dns_spec() {
        let a = RecordType::A;
        let srv = RecordType::SRV;
        check("web.shop.svc.cluster.local.", a, Ok((&["10.96.0.10"], &[])));
        check("WEB.Shop.SVC.cluster.LOCAL", a, Ok((&["10.96.0.10"], &[])));
        check(
            "_http._tcp.web.shop.svc.cluster.local",
            srv,
            Ok((&[], &[(80, "web.shop.svc.cluster.local")])),
        );
        // Unnamed ports have no SRV records.
        check(
            "__tcp.web.shop.svc.cluster.local",
            srv,
            Err(Lookup::NxDomain),
        );
        check(
            "web.shop.svc.cluster.local",
            RecordType::AAAA,
            Err(Lookup::NoData),
        );
        check("web.shop.svc.cluster.local", srv, Err(Lookup::NoData));
        // Headless: ready addresses only, each with its own name.
        check(
            "db.shop.svc.cluster.local",
            a,
            Ok((&["10.244.1.5", "10.244.2.6"], &[])),
        );
        check(
            "db-0.db.shop.svc.cluster.local",
            a,
            Ok((&["10.244.1.5"], &[])),
        );
        check(
            "10-244-2-6.db.shop.svc.cluster.local",
            a,
            Ok((&["10.244.2.6"], &[])),
        );
        check(
            "10-244-3-7.db.shop.svc.cluster.local",
            a,
            Err(Lookup::NxDomain),
        );
        check(
            "_pg._tcp.db.shop.svc.cluster.local",
            srv,
            Ok((
                &[],
                &[
                    (5432, "10-244-2-6.db.shop.svc.cluster.local"),
                    (5432, "db-0.db.shop.svc.cluster.local"),
                ],
            )),
        );
        // Parents exist without records; unknown names do not exist.
        check("shop.svc.cluster.local", a, Err(Lookup::NoData));
        check("svc.cluster.local", a, Err(Lookup::NoData));
        check("cluster.local", a, Err(Lookup::NoData));
        check("nope.shop.svc.cluster.local", a, Err(Lookup::NxDomain));
        check("web.other.svc.cluster.local", a, Err(Lookup::NxDomain));
        check("example.com", a, Err(Lookup::NotInDomain));
        check("notcluster.local", a, Err(Lookup::NotInDomain));
        let table = table();
        let Lookup::Found(external) = table.lookup("ext.shop.svc.cluster.local", a) else {
            panic!("ExternalName service not found");
        };
        assert_eq!(external.cname.as_deref(), Some("example.com"));
    }

    #[test]
    fn answers_carry_ttl_soa_and_additional_addresses() {
        let dns = ClusterDns::new("cluster.local", Vec::new());
        dns.update(
            &[service("db", "None", &[("pg", 5432, "TCP")])],
            &[headless_endpoints()],
        );
        let table = dns.table();
        let name = Name::from_ascii("_pg._tcp.db.shop.svc.cluster.local.").unwrap();
        let answer = dns.answer_cluster(&table, &name, RecordType::SRV);
        assert_eq!(answer.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 2);
        assert!(answer.answers.iter().all(|record| record.ttl == TTL));
        assert_eq!(answer.additionals.len(), 2);
        let missing = Name::from_ascii("nope.shop.svc.cluster.local.").unwrap();
        let answer = dns.answer_cluster(&table, &missing, RecordType::A);
        assert_eq!(answer.response_code, ResponseCode::NXDomain);
        assert_eq!(answer.soa.len(), 1);
        assert_eq!(answer.soa[0].record_type(), RecordType::SOA);
        assert_eq!(answer.soa[0].name.to_ascii(), "cluster.local.");
    }

    #[test]
    fn resolv_conf_is_kubelets_cluster_first() {
        assert_eq!(
            resolv_conf("10.244.1.1".parse().unwrap(), "shop", "cluster.local"),
            "nameserver 10.244.1.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_upstreams_are_the_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 192.168.1.1\nnameserver  2001:db8::1 \nnameserver fe80::1%eth0\noptions edns0\nnameserver bogus\n";
        assert_eq!(
            host_upstreams(text),
            vec![
                "192.168.1.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap(),
            ]
        );
    }
}
