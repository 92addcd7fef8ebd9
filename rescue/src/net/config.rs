//! What `rescue.net=` asks for: nothing (links come up when a network location is used), `off`, `dhcp`
//! on every wired link with carrier, or per-link settings:
//!
//! ```text
//! rescue.net=dhcp
//! rescue.net=off
//! rescue.net=eth0:dhcp
//! rescue.net=eth0:192.168.1.20/24,gw=192.168.1.1,dns=192.168.1.1;eth1:dhcp
//! rescue.net=enp3s0:2001:db8::20/64,gw=2001:db8::1,dns=2001:db8::53
//! ```
//!
//! IPv6 router advertisements (SLAAC) are taken on every link that is up, whatever is asked here.

use std::net::IpAddr;

/// The whole `rescue.net=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetSpec {
    /// Bring nothing up.
    Off,
    /// DHCPv4 on every wired link with carrier.
    Dhcp,
    /// Only these links, each as said.
    Links(Vec<LinkSpec>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// The interface's kernel name (`eth0`, `enp3s0`).
    pub name: String,
    pub how: LinkConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkConfig {
    Dhcp,
    Static(StaticConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    pub address: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rescue.net={value}: {why}; write e.g. rescue.net=dhcp or rescue.net=eth0:192.168.1.20/24,gw=192.168.1.1,dns=192.168.1.1")]
pub struct NetSpecError {
    pub value: String,
    pub why: String,
}

impl NetSpec {
    pub fn parse(value: &str) -> Result<NetSpec, NetSpecError> {
        let err = |why: String| NetSpecError {
            value: value.to_string(),
            why,
        };
        let v = value.trim();
        match v.to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => return Ok(NetSpec::Off),
            "dhcp" | "on" | "1" | "" => return Ok(NetSpec::Dhcp),
            _ => {}
        }
        let mut links = Vec::new();
        for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, rest) = entry.split_once(':').ok_or_else(|| {
                err(format!(
                    "`{entry}` names no interface (IFACE:dhcp or IFACE:ADDR/PREFIX)"
                ))
            })?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
                || name.len() > 15
            {
                return Err(err(format!("`{name}` is not an interface name")));
            }
            if links.iter().any(|l: &LinkSpec| l.name == name) {
                return Err(err(format!("{name} is named twice")));
            }
            let how = if rest.eq_ignore_ascii_case("dhcp") {
                LinkConfig::Dhcp
            } else {
                LinkConfig::Static(parse_static(rest).map_err(|why| err(format!("{name}: {why}")))?)
            };
            links.push(LinkSpec {
                name: name.to_string(),
                how,
            });
        }
        if links.is_empty() {
            return Err(err("no link is named".into()));
        }
        Ok(NetSpec::Links(links))
    }
}

fn parse_static(text: &str) -> Result<StaticConfig, String> {
    let mut parts = text.split(',');
    let addr = parts.next().unwrap_or("");
    let (ip, prefix) = addr.split_once('/').ok_or_else(|| {
        format!("`{addr}` needs a prefix length (ADDR/PREFIX, e.g. 192.168.1.20/24)")
    })?;
    let address: IpAddr = ip
        .parse()
        .map_err(|_| format!("`{ip}` is not an IP address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max && *p > 0)
        .ok_or_else(|| format!("`{prefix}` is not a prefix length from 1 to {max}"))?;
    let mut cfg = StaticConfig {
        address,
        prefix,
        gateway: None,
        dns: vec![],
    };
    for part in parts {
        let (key, val) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not KEY=VALUE (gw=…, dns=…)"))?;
        if !matches!(key, "gw" | "gateway" | "dns") {
            return Err(format!("unknown setting `{key}` (gw, dns)"));
        }
        let ip: IpAddr = val
            .parse()
            .map_err(|_| format!("{key}: `{val}` is not an IP address"))?;
        match key {
            "gw" | "gateway" => {
                if ip.is_ipv4() != address.is_ipv4() {
                    return Err(format!("the gateway {ip} is not of the address's family"));
                }
                cfg.gateway = Some(ip)
            }
            _ => cfg.dns.push(ip),
        }
    }
    Ok(cfg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_forms_of_rescue_net() {
        assert_eq!(NetSpec::parse("dhcp").unwrap(), NetSpec::Dhcp);
        assert_eq!(NetSpec::parse("OFF").unwrap(), NetSpec::Off);
        let NetSpec::Links(l) = NetSpec::parse(
            "eth0:192.168.1.20/24,gw=192.168.1.1,dns=192.168.1.1,dns=9.9.9.9; eth1:dhcp",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].how, LinkConfig::Dhcp);
        let LinkConfig::Static(s) = &l[0].how else {
            panic!()
        };
        assert_eq!(s.prefix, 24);
        assert_eq!(s.gateway, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(s.dns.len(), 2);
        let NetSpec::Links(v6) = NetSpec::parse("enp3s0:2001:db8::20/64,gw=2001:db8::1").unwrap()
        else {
            panic!()
        };
        assert!(
            matches!(&v6[0].how, LinkConfig::Static(s) if s.address.is_ipv6() && s.prefix == 64)
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (v, want) in [
            ("eth0", "names no interface"),
            ("eth0:10.0.0.1", "needs a prefix length"),
            ("eth0:10.0.0.1/33", "from 1 to 32"),
            ("eth0:10.0.0.300/24", "not an IP address"),
            ("eth0:10.0.0.1/24,gw=fe80::1", "not of the address's family"),
            ("eth0:10.0.0.1/24,mtu=9000", "unknown setting `mtu`"),
            ("eth0:dhcp;eth0:dhcp", "named twice"),
            ("e th0:dhcp", "not an interface name"),
        ] {
            let e = NetSpec::parse(v).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
            assert!(e.contains("rescue.net=dhcp"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = NetSpec::parse(&s);
        }

        #[test]
        fn static_settings_read_back(a in any::<[u8; 4]>(), p in 1u8..=32, g in any::<[u8; 4]>(), name in "[a-z][a-z0-9]{0,10}") {
            let addr = std::net::Ipv4Addr::from(a);
            let gw = std::net::Ipv4Addr::from(g);
            let text = format!("{name}:{addr}/{p},gw={gw},dns={gw}");
            let NetSpec::Links(l) = NetSpec::parse(&text).unwrap() else { panic!() };
            let LinkConfig::Static(s) = &l[0].how else { panic!() };
            prop_assert_eq!(s.address, IpAddr::V4(addr));
            prop_assert_eq!(s.prefix, p);
            prop_assert_eq!(s.gateway, Some(IpAddr::V4(gw)));
            prop_assert_eq!(&l[0].name, &name);
        }
    }
}
