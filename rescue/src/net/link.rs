//! The machine's network links, from sysfs (`/sys/class/net`) and the kernel's address list.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use super::netlink::{LinkAddress, Netlink};

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: String,
    /// A wired Ethernet adapter (not loopback, a bridge or a tunnel).
    pub ethernet: bool,
    pub driver: Option<String>,
    pub up: bool,
    /// A cable is in and the other end answers (`None` while the link is down: the kernel cannot tell).
    pub carrier: Option<bool>,
    /// `address/prefix`, usable ones (tentative IPv6 addresses left out).
    pub addresses: Vec<String>,
}

impl Link {
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        let v: Vec<u8> = self
            .mac
            .split(':')
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        v.try_into().ok()
    }

    /// An IPv4 address that is not link-local: the link can reach servers.
    pub fn has_ipv4(&self) -> bool {
        self.addresses.iter().any(|a| {
            a.split('/')
                .next()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .is_some_and(
                    |ip| matches!(ip, IpAddr::V4(v) if !v.is_link_local() && !v.is_loopback()),
                )
        })
    }
}

const SYS_NET: &str = "/sys/class/net";

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether the link `name` has a carrier (`None` while it is down: the kernel cannot tell).
pub fn carrier(name: &str) -> Option<bool> {
    read(&Path::new(SYS_NET).join(name).join("carrier")).map(|c| c == "1")
}

/// Every link, sorted by name, with its addresses.
pub fn links() -> Vec<Link> {
    let addrs: Vec<LinkAddress> = Netlink::open()
        .and_then(|mut n| n.addresses())
        .unwrap_or_default();
    let mut out: Vec<Link> = std::fs::read_dir(SYS_NET)
        .map(|d| {
            d.flatten()
                .filter_map(|e| link(&e.path(), &addrs))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn link(dir: &Path, addrs: &[LinkAddress]) -> Option<Link> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let index: u32 = read(&dir.join("ifindex"))?.parse().ok()?;
    let flags = read(&dir.join("flags"))
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let up = flags & 1 != 0;
    // ARPHRD_ETHER with a device behind it: a real (or virtual machine's) adapter, not a bridge or veth.
    let ethernet = read(&dir.join("type")).as_deref() == Some("1") && dir.join("device").exists();
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let carrier = if up { carrier(&name) } else { None };
    let addresses = addrs
        .iter()
        .filter(|a| a.index == index && !a.tentative)
        .map(|a| format!("{}/{}", a.address, a.prefix))
        .collect();
    Some(Link {
        name,
        index,
        mac: read(&dir.join("address")).unwrap_or_default(),
        ethernet,
        driver,
        up,
        carrier,
        addresses,
    })
}
