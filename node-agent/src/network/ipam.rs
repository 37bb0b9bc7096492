//! Pod IP addresses from the node's podCIDR, persisted like the CNI `host-local`
//! plugin: one file per allocated address under `network/ipam/`, named by the address
//! and holding the pod's uid, created with `O_EXCL`. An agent restart therefore never
//! hands out an address a live pod still holds, and addresses are handed out
//! round-robin (after the last one given) so a just-freed address is not reused at
//! once while connections to it may still be tracked.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use super::NetworkError;

/// The file remembering the last address handed out.
const LAST: &str = "last_reserved_ip";

/// The address allocator of one node's podCIDR.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Net,
    /// Serializes allocations within this process (files guard against others).
    lock: Mutex<()>,
}

impl Ipam {
    /// The allocator for `range` keeping its records in `dir` (created if missing).
    pub fn open(dir: &Path, range: Ipv4Net) -> Result<Self, NetworkError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| NetworkError::io(format!("creating {}", dir.display()), e))?;
        if range.prefix_len() > 30 {
            return Err(NetworkError::Config(format!(
                "podCIDR {range} is too small for pods"
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
            range,
            lock: Mutex::new(()),
        })
    }

    /// The bridge's (gateway's) address: the first host of the range.
    pub fn gateway(&self) -> Ipv4Addr {
        first_host(self.range)
    }

    /// The address held by the pod with `uid`, or a new one for it. Idempotent.
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr, NetworkError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = self.lookup(uid) {
            return Ok(ip);
        }
        let hosts: Vec<Ipv4Addr> = self
            .range
            .hosts()
            .filter(|ip| *ip != self.gateway())
            .collect();
        let last = std::fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
        let start = last
            .and_then(|last| hosts.iter().position(|ip| *ip == last))
            .map_or(0, |i| i + 1);
        for offset in 0..hosts.len() {
            let ip = hosts[(start + offset) % hosts.len()];
            let path = self.dir.join(ip.to_string());
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            match created {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(uid.as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| NetworkError::io("recording a pod IP", e))?;
                    let _ = std::fs::write(self.dir.join(LAST), ip.to_string());
                    return Ok(ip);
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(NetworkError::io("recording a pod IP", error)),
            }
        }
        Err(NetworkError::Config(format!(
            "no free address left in podCIDR {}",
            self.range
        )))
    }

    /// The address recorded for `uid`, if any.
    pub fn lookup(&self, uid: &str) -> Option<Ipv4Addr> {
        self.records()
            .find(|(_, owner)| owner == uid)
            .map(|(ip, _)| ip)
    }

    /// Frees the address of `uid` (no-op when it holds none).
    pub fn release(&self, uid: &str) -> Result<(), NetworkError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for (ip, owner) in self.records() {
            if owner == uid {
                match std::fs::remove_file(self.dir.join(ip.to_string())) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        return Err(NetworkError::io("releasing a pod IP", error));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every (address, pod uid) recorded.
    pub fn records(&self) -> impl Iterator<Item = (Ipv4Addr, String)> + '_ {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let ip = entry.file_name().to_str()?.parse::<Ipv4Addr>().ok()?;
                let owner = std::fs::read_to_string(entry.path()).ok()?;
                Some((ip, owner.trim().to_owned()))
            })
    }
}

/// The first usable address of `net` (network address + 1).
pub fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(range: &str) -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(dir.path(), range.parse().expect("cidr")).expect("open");
        (dir, ipam)
    }

    #[test]
    fn addresses_skip_the_gateway_and_are_stable_per_pod() {
        let (_dir, ipam) = ipam("10.244.1.0/24");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        let a = ipam.allocate("a").expect("a");
        assert_eq!(a, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(ipam.allocate("a").expect("again"), a);
        assert_eq!(ipam.allocate("b").expect("b"), Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(ipam.lookup("b"), Some(Ipv4Addr::new(10, 244, 1, 3)));
    }

    #[test]
    fn a_released_address_is_not_reused_at_once_and_survives_a_restart() {
        let (dir, ipam) = ipam("10.244.1.0/24");
        let a = ipam.allocate("a").expect("a");
        ipam.release("a").expect("release");
        assert_eq!(ipam.lookup("a"), None);
        let b = ipam.allocate("b").expect("b");
        assert_ne!(a, b, "round robin: the freed address comes last");
        // A new allocator over the same directory (agent restart) sees b's record.
        let reopened =
            Ipam::open(dir.path(), "10.244.1.0/24".parse().expect("cidr")).expect("open");
        assert_eq!(reopened.lookup("b"), Some(b));
        assert_ne!(reopened.allocate("c").expect("c"), b);
    }

    #[test]
    fn exhaustion_is_a_clear_error() {
        let (_dir, ipam) = ipam("10.244.1.0/30");
        // /30: hosts .1 (gateway) and .2.
        ipam.allocate("a").expect("a");
        let error = ipam.allocate("b").expect_err("full");
        assert!(
            error
                .to_string()
                .contains("no free address left in podCIDR 10.244.1.0/30"),
            "{error}"
        );
        ipam.release("a").expect("release");
        ipam.allocate("b").expect("b after release");
    }
}
