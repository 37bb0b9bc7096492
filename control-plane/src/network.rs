//! The cluster's network settings (kube-apiserver's and kube-controller-manager's
//! `--cluster-cidr`, `--node-cidr-mask-size`, `--service-cluster-ip-range`,
//! `--service-node-port-range`, `--cluster-domain`) and the pure arithmetic of the
//! ranges they define: which value an index names, and which free index an allocator
//! picks. The store side of allocation (reservation keys) is in the API server's
//! registry.
//!
//! Only IPv4 is supported: Services are single-stack `IPv4`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation with no host bits set (`10.244.0.0/16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `network/prefix`; fails when the prefix is over 32 or host bits
    /// are set.
    pub fn try_new(network: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        let text = format!("{network}/{prefix}");
        if prefix > 32 {
            return Err(Error::cidr(&text, "the prefix length is over 32"));
        }
        let cidr = Self { network, prefix };
        let masked = Ipv4Addr::from(u32::from(network) & cidr.mask());
        if masked != network {
            return Err(Error::cidr(
                &text,
                format!("host bits are set (the network is {masked}/{prefix})"),
            ));
        }
        Ok(cidr)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// How many addresses the network spans, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The address `offset` addresses after the network address.
    fn address(&self, offset: u64) -> Ipv4Addr {
        let offset = u32::try_from(offset).expect("offsets stay below the network's size");
        Ipv4Addr::from(u32::from(self.network).wrapping_add(offset))
    }

    /// How many subnets of `prefix` the network holds.
    pub fn subnet_count(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            return 0;
        }
        1u64 << (prefix - self.prefix)
    }

    /// The `index`th subnet of `prefix`, in address order.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Self> {
        if index >= self.subnet_count(prefix) {
            return None;
        }
        let subnet_size = 1u64 << (32 - u32::from(prefix));
        let network = self.address(index * subnet_size);
        Some(Self { network, prefix })
    }

    /// The position of `subnet` among the network's subnets of its prefix, if it is one.
    pub fn subnet_index(&self, subnet: &Self) -> Option<u64> {
        if subnet.prefix < self.prefix || !self.contains(subnet.network) {
            return None;
        }
        let offset = u64::from(u32::from(subnet.network) - u32::from(self.network));
        Some(offset >> (32 - u32::from(subnet.prefix)))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| Error::cidr(text, "expected ADDRESS/PREFIX"))?;
        if address.contains(':') {
            return Err(Error::cidr(text, "IPv6 is not supported yet"));
        }
        let network: Ipv4Addr = address
            .parse()
            .map_err(|_| Error::cidr(text, format!("{address:?} is not an IPv4 address")))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| Error::cidr(text, format!("{prefix:?} is not a prefix length")))?;
        Self::try_new(network, prefix)
    }
}

/// A range of ports, both ends included (`30000-32767`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// The ports `first..=last`; fails when the range is empty or starts at 0.
    pub fn try_new(first: u16, last: u16) -> Result<Self, Error> {
        if first == 0 || last < first {
            return Err(Error::PortRange {
                value: format!("{first}-{last}"),
                reason: "expected FIRST-LAST with 0 < FIRST <= LAST <= 65535".to_owned(),
            });
        }
        Ok(Self { first, last })
    }

    /// The first port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// How many ports the range holds.
    pub fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: i64) -> bool {
        (i64::from(self.first)..=i64::from(self.last)).contains(&port)
    }

    /// The `index`th port of the range.
    pub fn port(&self, index: u64) -> u16 {
        let index = u16::try_from(index).expect("indexes stay below the range's size");
        self.first + index
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = Error;

    /// `FIRST-LAST` or, as Kubernetes also accepts, `FIRST+COUNT` (COUNT more ports).
    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::PortRange {
            value: text.to_owned(),
            reason: reason.to_owned(),
        };
        let number = |part: &str| {
            part.trim()
                .parse::<u16>()
                .map_err(|_| invalid("expected FIRST-LAST with ports from 1 to 65535"))
        };
        let (first, last) = if let Some((first, last)) = text.split_once('-') {
            (number(first)?, number(last)?)
        } else if let Some((first, count)) = text.split_once('+') {
            let first = number(first)?;
            let last = first
                .checked_add(number(count)?)
                .ok_or_else(|| invalid("the range ends past port 65535"))?;
            (first, last)
        } else {
            let port = number(text)?;
            (port, port)
        };
        Self::try_new(first, last).map_err(|_| invalid("expected FIRST-LAST with FIRST <= LAST"))
    }
}

/// Why network settings are not usable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CIDR does not parse or is not a network address.
    #[error("invalid CIDR {value:?}: {reason}")]
    Cidr {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A port range does not parse.
    #[error("invalid port range {value:?}: {reason}")]
    PortRange {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// One setting does not fit the others (or Kubernetes' limits).
    #[error("invalid {setting} {value}: {reason}")]
    Setting {
        /// The flag that sets it.
        setting: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    fn cidr(value: &str, reason: impl Into<String>) -> Self {
        Self::Cidr {
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    fn setting(setting: &'static str, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self::Setting {
            setting,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// The cluster's address plan: where pod, node and service addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The pod network; every Node gets one subnet of it as `spec.podCIDR`
    /// (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Cidr,
    /// The prefix length of each node's subnet (`--node-cidr-mask-size`).
    pub node_cidr_mask_size: u8,
    /// Where Services' cluster IPs come from (`--service-cluster-ip-range`).
    pub service_cidr: Ipv4Cidr,
    /// Where NodePort and LoadBalancer services' node ports come from
    /// (`--service-node-port-range`).
    pub node_port_range: PortRange,
    /// The DNS domain of the cluster, for `name.namespace.svc.<domain>`
    /// (`--cluster-domain`).
    pub cluster_domain: String,
}

impl Default for NetworkSettings {
    /// Kubernetes' defaults: 10.244.0.0/16 in /24s, 10.96.0.0/12, 30000-32767,
    /// cluster.local.
    fn default() -> Self {
        Self {
            cluster_cidr: Ipv4Cidr {
                network: Ipv4Addr::new(10, 244, 0, 0),
                prefix: 16,
            },
            node_cidr_mask_size: 24,
            service_cidr: Ipv4Cidr {
                network: Ipv4Addr::new(10, 96, 0, 0),
                prefix: 12,
            },
            node_port_range: PortRange {
                first: 30000,
                last: 32767,
            },
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// The widest service range kube-apiserver accepts for IPv4 (`/12`: 2^20 addresses).
const MAX_SERVICE_CIDR_BITS: u8 = 20;
/// kube-controller-manager's limit on how many node subnets a cluster CIDR splits into
/// (2^16).
const MAX_NODE_SUBNET_BITS: u8 = 16;

impl NetworkSettings {
    /// Settings from their flag values, checked as [`NetworkSettings::validate`] does.
    pub fn build(
        cluster_cidr: &str,
        node_cidr_mask_size: u8,
        service_cluster_ip_range: &str,
        service_node_port_range: &str,
        cluster_domain: &str,
    ) -> Result<Self, Error> {
        let settings = Self {
            cluster_cidr: cluster_cidr.parse()?,
            node_cidr_mask_size,
            service_cidr: service_cluster_ip_range.parse()?,
            node_port_range: service_node_port_range.parse()?,
            cluster_domain: cluster_domain.trim_end_matches('.').to_owned(),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that the settings fit together and within Kubernetes' limits: node
    /// subnets inside the cluster CIDR (at most 2^16 of them, each with room for pods),
    /// a service range of /12 to /30 that does not overlap the pod network, and a
    /// DNS-1123 cluster domain.
    pub fn validate(&self) -> Result<(), Error> {
        let mask = self.node_cidr_mask_size;
        let cluster = self.cluster_cidr;
        if mask < cluster.prefix() || mask > 30 {
            return Err(Error::setting(
                "--node-cidr-mask-size",
                mask,
                format!(
                    "must be between the --cluster-cidr prefix length ({}) and 30",
                    cluster.prefix()
                ),
            ));
        }
        if mask - cluster.prefix() > MAX_NODE_SUBNET_BITS {
            return Err(Error::setting(
                "--node-cidr-mask-size",
                mask,
                format!(
                    "splits --cluster-cidr {cluster} into more than 2^{MAX_NODE_SUBNET_BITS} node subnets"
                ),
            ));
        }
        let service = self.service_cidr;
        if service.prefix() < 32 - MAX_SERVICE_CIDR_BITS {
            return Err(Error::setting(
                "--service-cluster-ip-range",
                service,
                "is too large; for 32-bit addresses, the mask must be >= 12",
            ));
        }
        if service.prefix() > 30 {
            return Err(Error::setting(
                "--service-cluster-ip-range",
                service,
                "is too small; the mask must be <= 30",
            ));
        }
        if service.overlaps(&cluster) {
            return Err(Error::setting(
                "--service-cluster-ip-range",
                service,
                format!("overlaps --cluster-cidr {cluster}"),
            ));
        }
        let problems = skiff_api::validation::names::dns1123_subdomain(&self.cluster_domain);
        if let Some(problem) = problems.first() {
            return Err(Error::setting(
                "--cluster-domain",
                &self.cluster_domain,
                problem.clone(),
            ));
        }
        Ok(())
    }

    /// The service IPs that can be allocated.
    pub fn service_ips(&self) -> ServiceIpRange {
        ServiceIpRange {
            cidr: self.service_cidr,
        }
    }

    /// The first service IP, which kube-apiserver gives the `default/kubernetes`
    /// Service (10.96.0.1 by default).
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.service_ips().ip(0)
    }

    /// How many node subnets the cluster CIDR holds.
    pub fn pod_cidr_count(&self) -> u64 {
        self.cluster_cidr.subnet_count(self.node_cidr_mask_size)
    }

    /// The `index`th node subnet.
    pub fn pod_cidr(&self, index: u64) -> Option<Ipv4Cidr> {
        self.cluster_cidr.subnet(self.node_cidr_mask_size, index)
    }

    /// The index of `cidr` among the node subnets, if it is one of them.
    pub fn pod_cidr_index(&self, cidr: &Ipv4Cidr) -> Option<u64> {
        if cidr.prefix() != self.node_cidr_mask_size {
            return None;
        }
        self.cluster_cidr.subnet_index(cidr)
    }

    /// The first free node subnet in address order, as kube-controller-manager's
    /// range allocator gives them out.
    pub fn free_pod_cidr(&self, taken: impl Fn(u64) -> bool) -> Option<Ipv4Cidr> {
        let index = (0..self.pod_cidr_count()).find(|index| !taken(*index))?;
        self.pod_cidr(index)
    }
}

/// The allocatable addresses of a service CIDR: all but the network and broadcast
/// addresses, as kube-apiserver's IP allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceIpRange {
    cidr: Ipv4Cidr,
}

impl ServiceIpRange {
    /// How many addresses can be allocated.
    pub fn size(&self) -> u64 {
        self.cidr.size().saturating_sub(2)
    }

    /// The `index`th allocatable address.
    pub fn ip(&self, index: u64) -> Ipv4Addr {
        self.cidr.address(index + 1)
    }

    /// The index of `ip`, if it can be allocated.
    pub fn index(&self, ip: Ipv4Addr) -> Option<u64> {
        if !self.cidr.contains(ip) {
            return None;
        }
        let offset = u64::from(u32::from(ip) - u32::from(self.cidr.network));
        (1..=self.size()).contains(&offset).then(|| offset - 1)
    }

    /// The size of the static band at the start of the range that dynamic allocation
    /// leaves for IPs users ask for (kube's `calculateRangeOffset`:
    /// min(max(16, size/16), 256), none for ranges under 16 addresses).
    pub fn static_band(&self) -> u64 {
        let size = self.cidr.size();
        if size < 16 {
            return 0;
        }
        (size / 16).clamp(16, 256)
    }
}

/// The static band of a node port range (kube's port allocator:
/// min(max(16, size/32), 128), none for ranges of 16 ports or fewer).
pub fn node_port_static_band(range: &PortRange) -> u64 {
    let size = range.size();
    if size <= 16 {
        return 0;
    }
    (size / 32).clamp(16, 128)
}

/// Picks a free index of `0..size` as kube's allocators do: a scan from a random
/// start (`seed`) over the dynamic band `static_band..size`, then over the static band
/// `0..static_band`, so that values users ask for by hand (10.96.0.10 for DNS) stay
/// free as long as possible. `None` when everything is taken.
pub fn pick_free(
    size: u64,
    static_band: u64,
    seed: u64,
    taken: impl Fn(u64) -> bool,
) -> Option<u64> {
    let static_band = static_band.min(size);
    let scan = |from: u64, len: u64| {
        if len == 0 {
            return None;
        }
        let start = seed % len;
        (0..len)
            .map(|step| from + (start + step) % len)
            .find(|index| !taken(*index))
    };
    scan(static_band, size - static_band).or_else(|| scan(0, static_band))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn check_cidr(text: &str, expected: Result<(&str, u64), &str>) {
        match (text.parse::<Ipv4Cidr>(), expected) {
            (Ok(cidr), Ok((display, size))) => {
                assert_eq!(
                    (cidr.to_string().as_str(), cidr.size()),
                    (display, size),
                    "{text}"
                );
            }
            (Err(error), Err(message)) => assert_eq!(error.to_string(), message, "{text}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn cidrs_parse_strictly() {
        check_cidr("10.244.0.0/16", Ok(("10.244.0.0/16", 65536)));
        check_cidr("0.0.0.0/0", Ok(("0.0.0.0/0", 1 << 32)));
        check_cidr("10.0.0.1/32", Ok(("10.0.0.1/32", 1)));
        check_cidr(
            "10.244.0.1/16",
            Err(
                r#"invalid CIDR "10.244.0.1/16": host bits are set (the network is 10.244.0.0/16)"#,
            ),
        );
        check_cidr(
            "10.244.0.0",
            Err(r#"invalid CIDR "10.244.0.0": expected ADDRESS/PREFIX"#),
        );
        check_cidr(
            "10.244.0.0/33",
            Err(r#"invalid CIDR "10.244.0.0/33": the prefix length is over 32"#),
        );
        check_cidr(
            "fd00::/64",
            Err(r#"invalid CIDR "fd00::/64": IPv6 is not supported yet"#),
        );
        check_cidr(
            "10.300.0.0/16",
            Err(r#"invalid CIDR "10.300.0.0/16": "10.300.0.0" is not an IPv4 address"#),
        );
    }

    #[test]
    fn port_ranges_parse_like_kubernetes() {
        let range: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(
            (range.to_string(), range.size()),
            ("30000-32767".into(), 2768)
        );
        assert_eq!(
            "30000+9".parse::<PortRange>().unwrap().to_string(),
            "30000-30009"
        );
        assert_eq!(
            "8080".parse::<PortRange>().unwrap().to_string(),
            "8080-8080"
        );
        for bad in ["32767-30000", "0-10", "a-b", "1-70000", "65535+1", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        assert!(range.contains(30000) && range.contains(32767));
        assert!(!range.contains(29999) && !range.contains(32768));
    }

    #[test]
    fn settings_are_checked_together() {
        let build = |cluster: &str, mask: u8, service: &str, ports: &str, domain: &str| {
            NetworkSettings::build(cluster, mask, service, ports, domain).map_err(|e| e.to_string())
        };
        assert_eq!(
            build(
                "10.244.0.0/16",
                24,
                "10.96.0.0/12",
                "30000-32767",
                "cluster.local"
            )
            .unwrap(),
            NetworkSettings::default()
        );
        assert_eq!(
            build(
                "10.244.0.0/16",
                12,
                "10.96.0.0/12",
                "30000-32767",
                "cluster.local"
            )
            .unwrap_err(),
            "invalid --node-cidr-mask-size 12: must be between the --cluster-cidr prefix length (16) and 30"
        );
        assert_eq!(
            build(
                "10.0.0.0/8",
                25,
                "10.96.0.0/12",
                "30000-32767",
                "cluster.local"
            )
            .unwrap_err(),
            "invalid --node-cidr-mask-size 25: splits --cluster-cidr 10.0.0.0/8 into more than 2^16 node subnets"
        );
        assert_eq!(
            build(
                "10.244.0.0/16",
                24,
                "10.0.0.0/8",
                "30000-32767",
                "cluster.local"
            )
            .unwrap_err(),
            "invalid --service-cluster-ip-range 10.0.0.0/8: is too large; for 32-bit addresses, the mask must be >= 12"
        );
        assert_eq!(
            build(
                "10.244.0.0/16",
                24,
                "10.96.0.0/31",
                "30000-32767",
                "cluster.local"
            )
            .unwrap_err(),
            "invalid --service-cluster-ip-range 10.96.0.0/31: is too small; the mask must be <= 30"
        );
        assert_eq!(
            build(
                "10.96.0.0/16",
                24,
                "10.96.0.0/12",
                "30000-32767",
                "cluster.local"
            )
            .unwrap_err(),
            "invalid --service-cluster-ip-range 10.96.0.0/12: overlaps --cluster-cidr 10.96.0.0/16"
        );
        assert!(
            build(
                "10.244.0.0/16",
                24,
                "10.96.0.0/12",
                "30000-32767",
                "Cluster_Local"
            )
            .unwrap_err()
            .starts_with("invalid --cluster-domain Cluster_Local: ")
        );
        assert_eq!(
            build("10.244.0.0/16", 24, "10.96.0.0/12", "x", "cluster.local").unwrap_err(),
            r#"invalid port range "x": expected FIRST-LAST with ports from 1 to 65535"#
        );
    }

    #[test]
    fn service_ips_skip_network_and_broadcast() {
        let settings = NetworkSettings::default();
        let range = settings.service_ips();
        assert_eq!(range.size(), (1 << 20) - 2);
        assert_eq!(
            settings.kubernetes_service_ip(),
            Ipv4Addr::new(10, 96, 0, 1)
        );
        assert_eq!(range.index(Ipv4Addr::new(10, 96, 0, 10)), Some(9));
        assert_eq!(range.index(Ipv4Addr::new(10, 96, 0, 0)), None, "network");
        assert_eq!(
            range.index(Ipv4Addr::new(10, 111, 255, 255)),
            None,
            "broadcast"
        );
        assert_eq!(
            range.index(Ipv4Addr::new(10, 111, 255, 254)),
            Some(range.size() - 1)
        );
        assert_eq!(range.index(Ipv4Addr::new(10, 112, 0, 1)), None, "outside");
        assert_eq!(range.static_band(), 256);
        let small = ServiceIpRange {
            cidr: "10.96.0.0/29".parse().unwrap(),
        };
        assert_eq!((small.size(), small.static_band()), (6, 0));
        assert_eq!(node_port_static_band(&settings.node_port_range), 86);
    }

    #[test]
    fn pod_cidrs_go_in_address_order() {
        let settings = NetworkSettings {
            cluster_cidr: "10.244.0.0/22".parse().unwrap(),
            ..NetworkSettings::default()
        };
        assert_eq!(settings.pod_cidr_count(), 4);
        let taken: HashSet<u64> = [0, 2].into();
        let free = settings.free_pod_cidr(|i| taken.contains(&i)).unwrap();
        assert_eq!(free.to_string(), "10.244.1.0/24");
        assert_eq!(settings.pod_cidr_index(&free), Some(1));
        assert_eq!(
            settings.pod_cidr_index(&"10.244.3.0/24".parse().unwrap()),
            Some(3)
        );
        assert_eq!(
            settings.pod_cidr_index(&"10.244.4.0/24".parse().unwrap()),
            None
        );
        assert_eq!(
            settings.pod_cidr_index(&"10.244.0.0/25".parse().unwrap()),
            None
        );
        assert_eq!(settings.free_pod_cidr(|_| true), None);
    }

    #[test]
    fn picks_prefer_the_dynamic_band_then_fall_back() {
        // Any seed lands in the dynamic band while it has room.
        for seed in 0..50 {
            let index = pick_free(100, 16, seed, |_| false).unwrap();
            assert!((16..100).contains(&index), "{seed}: {index}");
        }
        // A full dynamic band falls back to the static one; a full range yields None.
        assert_eq!(pick_free(100, 16, 7, |i| i >= 16), Some(7));
        assert_eq!(pick_free(100, 16, 7, |i| i != 3), Some(3));
        assert_eq!(pick_free(100, 16, 7, |_| true), None);
        assert_eq!(pick_free(6, 0, 4, |i| i == 4), Some(5));
        assert_eq!(pick_free(0, 0, 4, |_| false), None);
    }
}
