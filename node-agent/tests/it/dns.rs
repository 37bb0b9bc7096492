//! The cluster DNS server over real UDP and TCP sockets, with a fake upstream server.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::op::{MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_api::types::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use skiff_node_agent::network::dns::ClusterDns;
use skiff_node_agent::network::proxy::test_objects::{endpoints, service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// The answer of the fake upstream to every question.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn query(name: &str, record_type: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.id = rand::random();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    message
}

async fn ask_udp(server: SocketAddr, name: &str, record_type: RecordType) -> Message {
    let message = query(name, record_type);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&message.to_vec().unwrap()).await.unwrap();
    let mut buffer = vec![0; 65535];
    let length = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .expect("no answer within 5 s")
        .unwrap();
    let answer = Message::from_vec(&buffer[..length]).unwrap();
    assert_eq!(answer.metadata.id, message.metadata.id);
    answer
}

async fn ask_tcp(server: SocketAddr, name: &str, record_type: RecordType) -> Message {
    let message = query(name, record_type);
    let bytes = message.to_vec().unwrap();
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    stream
        .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let length = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .expect("no answer within 5 s")
        .unwrap();
    let mut buffer = vec![0; usize::from(length)];
    stream.read_exact(&mut buffer).await.unwrap();
    let answer = Message::from_vec(&buffer).unwrap();
    assert_eq!(answer.metadata.id, message.metadata.id);
    answer
}

fn addresses(message: &Message) -> Vec<Ipv4Addr> {
    let mut addresses: Vec<Ipv4Addr> = message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses
}

fn ips(texts: &[&str]) -> Vec<Ipv4Addr> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

/// A headless service `db` in `shop` with two ready endpoints (one with a hostname).
fn headless() -> (Service, Endpoints) {
    let service = Service {
        metadata: ObjectMeta {
            namespace: Some("shop".to_owned()),
            name: Some("db".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            ports: Some(vec![ServicePort {
                name: Some("pg".to_owned()),
                port: 5432,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let endpoints = Endpoints {
        metadata: service.metadata.clone(),
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
            not_ready_addresses: None,
            ports: Some(vec![EndpointPort {
                name: Some("pg".to_owned()),
                port: 5432,
                protocol: Some("TCP".to_owned()),
                ..EndpointPort::default()
            }]),
        }]),
    };
    (service, endpoints)
}

/// A fake upstream on 127.0.0.1 (UDP and TCP, same port) answering every A question with
/// [`UPSTREAM_ANSWER`].
struct Upstream {
    address: SocketAddr,
    _tasks: tokio::task::JoinSet<()>,
}

fn upstream_answer(bytes: &[u8]) -> Vec<u8> {
    let request = Message::from_vec(bytes).unwrap();
    let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = ResponseCode::NoError;
    for question in &request.queries {
        reply.add_query(question.clone());
        reply.add_answer(Record::from_rdata(
            question.name().clone(),
            300,
            RData::A(A(UPSTREAM_ANSWER)),
        ));
    }
    reply.to_vec().unwrap()
}

impl Upstream {
    async fn start() -> Self {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(address).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut buffer = vec![0; 65535];
            while let Ok((length, peer)) = udp.recv_from(&mut buffer).await {
                let _ = udp.send_to(&upstream_answer(&buffer[..length]), peer).await;
            }
        });
        tasks.spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let Ok(length) = stream.read_u16().await else {
                    continue;
                };
                let mut buffer = vec![0; usize::from(length)];
                if stream.read_exact(&mut buffer).await.is_err() {
                    continue;
                }
                let answer = upstream_answer(&buffer);
                let _ = stream
                    .write_all(&u16::try_from(answer.len()).unwrap().to_be_bytes())
                    .await;
                let _ = stream.write_all(&answer).await;
            }
        });
        Self {
            address,
            _tasks: tasks,
        }
    }
}

/// A running server on 127.0.0.1; stopped (and checked to stop) on `stop`.
struct Running {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), skiff_node_agent::network::NetworkError>>>,
}

impl Running {
    fn start(dns: &ClusterDns) -> Self {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = udp.local_addr().unwrap();
        let tcp = std::net::TcpListener::bind(address).unwrap();
        let shutdown = CancellationToken::new();
        let server = dns.clone();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { server.serve(udp, tcp, token).await });
        Self {
            address,
            shutdown,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let task = self.task.take().unwrap();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_names_are_answered_and_others_forwarded() {
    let upstream = Upstream::start().await;
    let dns = ClusterDns::new("cluster.local", vec![upstream.address]);
    let (db, db_endpoints) = headless();
    dns.update(
        &[
            service("shop", "web", "10.96.0.10", &[(Some("http"), 80, "TCP")]),
            db.clone(),
        ],
        &[
            endpoints(
                "shop",
                "web",
                &ips(&["10.244.1.9"]),
                &[(Some("http"), 8080, "TCP")],
            ),
            db_endpoints.clone(),
        ],
    );
    let running = Running::start(&dns);
    let server = running.address;

    let answer = ask_udp(server, "web.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(addresses(&answer), ips(&["10.96.0.10"]));
    assert_eq!(answer.answers[0].ttl, 5);
    // Case-insensitive, and the same over TCP.
    let answer = ask_tcp(server, "Web.SHOP.svc.Cluster.Local.", RecordType::A).await;
    assert_eq!(addresses(&answer), ips(&["10.96.0.10"]));

    let answer = ask_udp(server, "db.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&answer), ips(&["10.244.1.5", "10.244.2.6"]));
    let answer = ask_udp(server, "db-0.db.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&answer), ips(&["10.244.1.5"]));

    let answer = ask_udp(
        server,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    let RData::SRV(srv) = &answer.answers[0].data else {
        panic!("not an SRV answer: {answer:?}");
    };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target.to_ascii(), "web.shop.svc.cluster.local.");
    let answer = ask_tcp(
        server,
        "_pg._tcp.db.shop.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(answer.answers.len(), 2, "{answer:?}");
    let mut additionals = answer.clone();
    additionals.answers = answer.additionals.clone();
    assert_eq!(addresses(&additionals), ips(&["10.244.1.5", "10.244.2.6"]));

    let answer = ask_udp(server, "nope.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.authorities.len(), 1);
    assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);

    // Outside the domain: the upstream's answer, over UDP and over TCP.
    let answer = ask_udp(server, "example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(!answer.metadata.authoritative);
    assert_eq!(addresses(&answer), vec![UPSTREAM_ANSWER]);
    let answer = ask_tcp(server, "example.org.", RecordType::A).await;
    assert_eq!(addresses(&answer), vec![UPSTREAM_ANSWER]);

    // An update is visible to the next query.
    dns.update(
        &[
            service("shop", "web", "10.96.0.11", &[(Some("http"), 80, "TCP")]),
            db,
        ],
        &[db_endpoints],
    );
    let answer = ask_udp(server, "web.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&answer), ips(&["10.96.0.11"]));

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_is_a_servfail() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = ClusterDns::new("cluster.local", vec![silent.local_addr().unwrap()]);
    let running = Running::start(&dns);
    let answer = ask_udp(running.address, "example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    // Cluster names still work without any upstream.
    let answer = ask_udp(running.address, "cluster.local.", RecordType::SOA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers[0].record_type(), RecordType::SOA);
    running.stop().await;
}
