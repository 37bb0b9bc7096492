//! Netlink operations on the node's links: the pod bridge, a veth pair per pod
//! sandbox, and routes to other nodes' podCIDRs. Pure requests, no policy: `mod.rs`
//! decides what to ask for.

use std::net::Ipv4Addr;
use std::path::Path;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::NetworkError;

/// The route protocol number Skiff's routes carry (like `proto 0xd7` in `ip route`),
/// so a restarted agent finds and replaces exactly its own routes.
pub const ROUTE_PROTOCOL: u8 = 0xd7;

/// The errno of "File exists".
const EEXIST: i32 = 17;

/// A netlink connection in the calling thread's network namespace; its I/O task
/// runs on the current runtime until the handle is dropped.
pub fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetworkError::io("opening a netlink socket", e))?;
    tokio::spawn(connection);
    Ok(handle)
}

fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |error| NetworkError::Netlink {
        what,
        message: error.to_string(),
    }
}

fn exists(error: &rtnetlink::Error) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -EEXIST)
}

/// The index of the link named `name`, if it exists.
pub async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -19 => Ok(None),
        Err(error) => Err(failed(format!("looking up link {name}"))(error)),
    }
}

/// Makes the bridge `name` exist, hold exactly `address` (the gateway of the pod
/// range) and be up; returns its index.
pub async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    address: Ipv4Net,
) -> Result<u32, NetworkError> {
    let index = match index_of(handle, name).await? {
        Some(index) => index,
        None => {
            match handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(error) if exists(&error) => {}
                Err(error) => return Err(failed(format!("creating bridge {name}"))(error)),
            }
            index_of(handle, name)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    what: format!("creating bridge {name}"),
                    message: "the bridge vanished".to_owned(),
                })?
        }
    };
    // Addresses from an earlier podCIDR go; ours is added once.
    let mut present = false;
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut stale = Vec::new();
    while let Some(message) = addresses
        .try_next()
        .await
        .map_err(failed(format!("listing addresses of {name}")))?
    {
        let ip = message.attributes.iter().find_map(|a| match a {
            rtnetlink::packet_route::address::AddressAttribute::Address(std::net::IpAddr::V4(
                ip,
            )) => Some(*ip),
            _ => None,
        });
        if ip == Some(address.addr()) && message.header.prefix_len == address.prefix_len() {
            present = true;
        } else if ip.is_some() {
            stale.push(message);
        }
    }
    for message in stale {
        handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(failed(format!("removing a stale address of {name}")))?;
    }
    if !present {
        match handle
            .address()
            .add(index, address.addr().into(), address.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(error) if exists(&error) => {}
            Err(error) => return Err(failed(format!("adding {address} to {name}"))(error)),
        }
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(failed(format!("setting {name} up")))?;
    Ok(index)
}

/// Deletes the link `name` if it exists.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<(), NetworkError> {
    if let Some(index) = index_of(handle, name).await? {
        match handle.link().del(index).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -19 => {}
            Err(error) => return Err(failed(format!("deleting link {name}"))(error)),
        }
    }
    Ok(())
}

/// Creates the veth pair `host_name` ↔ `eth0` for a pod: the host end joins the
/// bridge and goes up; the other end moves into the namespace at `netns`, where
/// `configure_pod_side` gives it `address` and a default route via `gateway`. Any
/// leftover of an earlier attempt (host end, or `eth0` in the pod) is replaced.
pub async fn attach_veth(
    handle: &Handle,
    host_name: &str,
    bridge_index: u32,
    netns: &Path,
    address: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    delete_link(handle, host_name).await?;
    let peer = format!("{host_name}p");
    let peer = if peer.len() > 15 {
        format!("p{}", &host_name[host_name.len() - 14..])
    } else {
        peer
    };
    delete_link(handle, &peer).await?;
    handle
        .link()
        .add(LinkVeth::new(host_name, &peer).build())
        .execute()
        .await
        .map_err(failed(format!("creating veth {host_name}")))?;
    let namespace = std::fs::File::open(netns)
        .map_err(|e| NetworkError::io(format!("opening {}", netns.display()), e))?;
    {
        use std::os::fd::AsRawFd;
        handle
            .link()
            .set(
                LinkUnspec::new_with_name(&peer)
                    .setns_by_fd(namespace.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(failed(format!("moving {peer} into the pod's namespace")))?;
    }
    let host_index = index_of(handle, host_name)
        .await?
        .ok_or_else(|| NetworkError::Netlink {
            what: format!("creating veth {host_name}"),
            message: "the host end vanished".to_owned(),
        })?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(host_index)
                .controller(bridge_index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(failed(format!("attaching {host_name} to the bridge")))?;
    in_namespace(netns, move || configure_pod_side(peer, address, gateway)).await
}

/// Runs `work` (netlink requests through its own connection) on a thread inside the
/// network namespace at `netns`; the thread ends afterwards, so no pooled thread is
/// ever left inside a pod's namespace.
async fn in_namespace<F, Fut>(netns: &Path, work: F) -> Result<(), NetworkError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), NetworkError>>,
{
    let netns = netns.to_owned();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-pod-net".to_owned())
        .spawn(move || {
            let result = (|| {
                let namespace = std::fs::File::open(&netns)
                    .map_err(|e| NetworkError::io(format!("opening {}", netns.display()), e))?;
                nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetworkError::io("entering the pod's namespace", e.into()))?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|e| NetworkError::io("starting a netlink runtime", e))?
                    .block_on(work())
            })();
            let _ = sender.send(result);
        })
        .map_err(|e| NetworkError::io("starting a namespace thread", e))?;
    receiver.await.unwrap_or_else(|_| {
        Err(NetworkError::Netlink {
            what: "configuring the pod's interface".to_owned(),
            message: "the namespace thread ended without a result".to_owned(),
        })
    })
}

/// Inside the pod's namespace: `peer` becomes `eth0` with `address`, up, with a
/// default route via `gateway`.
async fn configure_pod_side(
    peer: String,
    address: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let handle = connect()?;
    delete_link(&handle, "eth0").await?;
    let index = index_of(&handle, &peer)
        .await?
        .ok_or_else(|| NetworkError::Netlink {
            what: "configuring eth0".to_owned(),
            message: format!("{peer} is not in the pod's namespace"),
        })?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name("eth0".to_owned())
                .build(),
        )
        .execute()
        .await
        .map_err(failed("renaming the pod's interface to eth0"))?;
    handle
        .address()
        .add(index, address.addr().into(), address.prefix_len())
        .execute()
        .await
        .map_err(failed(format!("adding {address} to eth0")))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(failed("setting eth0 up"))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(failed(format!("adding the default route via {gateway}")))?;
    Ok(())
}

/// A route Skiff owns: `destination` via `gateway`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The remote node's podCIDR.
    pub destination: Ipv4Net,
    /// The remote node's address.
    pub gateway: Ipv4Addr,
}

fn route_message(route: &Route) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.destination.addr(), route.destination.prefix_len())
        .gateway(route.gateway)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
        .build()
}

/// Skiff's routes in the main table (marked with [`ROUTE_PROTOCOL`]).
pub async fn own_routes(handle: &Handle) -> Result<Vec<Route>, NetworkError> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut own = Vec::new();
    while let Some(message) = routes.try_next().await.map_err(failed("listing routes"))? {
        if message.header.protocol != RouteProtocol::from(ROUTE_PROTOCOL) {
            continue;
        }
        let mut destination = None;
        let mut gateway = None;
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                _ => {}
            }
        }
        if let (Some(destination), Some(gateway)) = (destination, gateway)
            && let Ok(destination) =
                Ipv4Net::new(destination, message.header.destination_prefix_length)
        {
            own.push(Route {
                destination,
                gateway,
            });
        }
    }
    Ok(own)
}

/// Adds (or replaces) `route`.
pub async fn add_route(handle: &Handle, route: &Route) -> Result<(), NetworkError> {
    handle
        .route()
        .add(route_message(route))
        .replace()
        .execute()
        .await
        .map_err(failed(format!(
            "adding route {} via {}",
            route.destination, route.gateway
        )))
}

/// Deletes `route` (gone already is fine).
pub async fn delete_route(handle: &Handle, route: &Route) -> Result<(), NetworkError> {
    match handle.route().del(route_message(route)).execute().await {
        Ok(()) => Ok(()),
        // ESRCH: no such route.
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -3 => Ok(()),
        Err(error) => Err(failed(format!(
            "deleting route {} via {}",
            route.destination, route.gateway
        ))(error)),
    }
}

/// The IPv4 networks directly attached to this namespace's interfaces (to tell
/// whether another node is on our L2 segment).
pub async fn local_networks(handle: &Handle) -> Result<Vec<Ipv4Net>, NetworkError> {
    let mut addresses = handle.address().get().execute();
    let mut networks = Vec::new();
    while let Some(message) = addresses
        .try_next()
        .await
        .map_err(failed("listing addresses"))?
    {
        for attribute in &message.attributes {
            if let rtnetlink::packet_route::address::AddressAttribute::Address(
                std::net::IpAddr::V4(ip),
            ) = attribute
                && let Ok(net) = Ipv4Net::new(*ip, message.header.prefix_len)
            {
                networks.push(net.trunc());
            }
        }
    }
    Ok(networks)
}
