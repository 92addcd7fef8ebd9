//! The network, for image locations on other machines: which links there are, bringing them up (DHCPv4,
//! static addresses; IPv6 router advertisements are taken by the kernel once a link is up) and the name
//! servers to ask. PID 1 brings links up at boot when `rescue.net=` asks (through `rescue net up`);
//! otherwise they come up when a network location is first used.
//!
//! - `config`: what `rescue.net=` asks for;
//! - `link`: the links, from sysfs and the kernel's address list;
//! - `netlink`: the rtnetlink requests (link up, address, route, address list), by hand;
//! - `dhcp`: the DHCPv4 client;
//! - `dns`: names to addresses, asked of the name servers learnt.

pub mod config;
pub mod dhcp;
pub mod dns;
pub mod link;
pub mod netlink;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use self::config::{LinkConfig, NetSpec, StaticConfig};
pub use self::link::{links, Link};

/// Where the name servers learnt (DHCP, static settings) are kept, one `nameserver ADDR` per line.
pub const RESOLV_CONF: &str = "/run/rescue/resolv.conf";

/// How long a link that was just set up may take to see its carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(6);
/// How long to wait for a DHCP lease.
const DHCP_WAIT: Duration = Duration::from_secs(20);

/// What bringing one link up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub link: String,
    /// `Ok(what was configured)` or why not.
    pub result: Result<String, String>,
}

/// Bring the links `spec` names up (every wired link with carrier for `dhcp`). `say` is told each step.
/// Name servers learnt are added to [`RESOLV_CONF`].
pub fn bring_up(spec: &NetSpec, say: &mut dyn FnMut(String)) -> Vec<Outcome> {
    let wanted: Vec<(String, LinkConfig)> = match spec {
        NetSpec::Off => return vec![],
        NetSpec::Dhcp => links()
            .into_iter()
            .filter(|l| l.ethernet)
            .map(|l| (l.name, LinkConfig::Dhcp))
            .collect(),
        NetSpec::Links(l) => l.iter().map(|l| (l.name.clone(), l.how.clone())).collect(),
    };
    if wanted.is_empty() {
        say("no wired network adapter found".into());
    }
    let mut out = Vec::new();
    for (name, how) in wanted {
        let result = configure(&name, &how, matches!(spec, NetSpec::Dhcp), say);
        match &result {
            Ok(what) => say(format!("{name}: {what}")),
            Err(why) => say(format!("{name}: {why}")),
        }
        out.push(Outcome { link: name, result });
    }
    out
}

fn configure(
    name: &str,
    how: &LinkConfig,
    skip_without_carrier: bool,
    say: &mut dyn FnMut(String),
) -> Result<String, String> {
    let link = links()
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| format!("no such network link (links: {})", link_names()))?;
    let mut nl = netlink::Netlink::open()
        .map_err(|e| format!("cannot talk to the kernel (netlink): {e}"))?;
    nl.link_up(link.index)
        .map_err(|e| format!("cannot set the link up: {e}"))?;
    let started = Instant::now();
    let carrier = loop {
        // Only the carrier flag: listing every link and its addresses five times a second is waste.
        if link::carrier(name) == Some(true) {
            break true;
        }
        if started.elapsed() > CARRIER_WAIT {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !carrier && skip_without_carrier {
        return Err(format!(
            "no carrier after {} s (no cable, or nothing at the other end); left alone",
            CARRIER_WAIT.as_secs()
        ));
    }
    match how {
        LinkConfig::Dhcp => {
            let mac = link
                .mac_bytes()
                .ok_or_else(|| format!("has no Ethernet address ({})", link.mac))?;
            say(format!("{name}: asking for a DHCP lease"));
            let lease = dhcp::lease(name, mac, DHCP_WAIT).map_err(|e| crate::units::chain(&e))?;
            let stat = StaticConfig {
                address: IpAddr::V4(lease.address),
                prefix: lease.prefix,
                gateway: lease.router.map(IpAddr::V4),
                dns: lease.dns.iter().copied().map(IpAddr::V4).collect(),
            };
            apply(&mut nl, link.index, &stat)?;
            Ok(format!("DHCP lease {lease}"))
        }
        LinkConfig::Static(s) => {
            apply(&mut nl, link.index, s)?;
            Ok(format!("{}/{} (static)", s.address, s.prefix))
        }
    }
}

fn apply(nl: &mut netlink::Netlink, index: u32, s: &StaticConfig) -> Result<(), String> {
    nl.add_address(index, s.address, s.prefix)
        .map_err(|e| format!("cannot add the address {}/{}: {e}", s.address, s.prefix))?;
    if let Some(gw) = s.gateway {
        nl.add_default_route(index, gw)
            .map_err(|e| format!("cannot add the default route through {gw}: {e}"))?;
    }
    if !s.dns.is_empty() {
        add_name_servers(&s.dns);
    }
    Ok(())
}

fn link_names() -> String {
    let names: Vec<String> = links().into_iter().map(|l| l.name).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Name servers to ask, in the order learnt.
pub fn name_servers() -> Vec<IpAddr> {
    // The rescue system's own file, written from DHCP leases and `rescue.net=`; on a host, the host's.
    std::fs::read_to_string(RESOLV_CONF)
        .or_else(|_| std::fs::read_to_string("/etc/resolv.conf"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

fn add_name_servers(new: &[IpAddr]) {
    let mut all = name_servers();
    for a in new {
        if !all.contains(a) {
            all.push(*a);
        }
    }
    let text: String = all.iter().map(|a| format!("nameserver {a}\n")).collect();
    if let Some(dir) = std::path::Path::new(RESOLV_CONF).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(RESOLV_CONF, text);
}

/// Bring the network up with DHCP on every link with carrier, unless a link has an IPv4 address already
/// (from `rescue.net=`, an earlier location, or the host's own network).
pub fn ensure_up() {
    if !links().iter().any(|l| l.has_ipv4()) {
        bring_up(&config::NetSpec::Dhcp, &mut |_| {});
    }
}

/// The addresses of a host name (or the address itself; `localhost` is 127.0.0.1), asked of the name
/// servers learnt, IPv4 first: a rescue network often has IPv6 addresses that route nowhere.
pub fn resolve(name: &str) -> Result<Vec<IpAddr>, dns::DnsError> {
    if name.eq_ignore_ascii_case("localhost") {
        return Ok(vec![IpAddr::from([127, 0, 0, 1])]);
    }
    let mut found = dns::resolve(name, &name_servers(), Duration::from_secs(3))?;
    found.sort_by_key(IpAddr::is_ipv6);
    Ok(found)
}

/// The address to connect to for `name` ([`resolve`]'s first), or why there is none, in words.
pub fn address(name: &str) -> Result<IpAddr, String> {
    resolve(name)
        .map_err(|e| crate::units::chain(&e))?
        .into_iter()
        .next()
        .ok_or_else(|| "no address".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost_need_no_name_server() {
        assert_eq!(address("localhost").unwrap(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(address("10.0.2.2").unwrap(), IpAddr::from([10, 0, 2, 2]));
        assert_eq!(
            address("[fd00::2]").unwrap(),
            "fd00::2".parse::<IpAddr>().unwrap()
        );
    }
}
