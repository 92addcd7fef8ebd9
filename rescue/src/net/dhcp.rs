//! A DHCPv4 client for one link: DISCOVER, OFFER, REQUEST, ACK (RFC 2131), messages by `dhcproto`. It
//! sends from a UDP socket bound to port 68 on that link, with the BROADCAST flag set so that the server's
//! answers reach a link that has no address yet (a server that ignores the flag gets no lease here).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use nix::sys::socket::{setsockopt, sockopt};

/// What a server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub seconds: u32,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} from {}", self.address, self.prefix, self.server)?;
        if let Some(r) = self.router {
            write!(f, ", router {r}")?;
        }
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
            write!(f, ", DNS {}", dns.join(" "))?;
        }
        write!(f, ", for {} s", self.seconds)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP on {link}: {what}")]
    Io {
        link: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("DHCP on {link}: no server answered within {seconds} s (is the cable in, and a DHCP server on that network?)")]
    NoAnswer { link: String, seconds: u64 },
    #[error("DHCP on {link}: the server {server} refused the address {address} (DHCPNAK)")]
    Refused {
        link: String,
        server: Ipv4Addr,
        address: Ipv4Addr,
    },
}

/// Ask for a lease on `link` (its MAC address `mac`), trying for at most `wait`.
pub fn lease(link: &str, mac: [u8; 6], wait: Duration) -> Result<Lease, DhcpError> {
    let io = |what| {
        let link = link.to_string();
        move |source| DhcpError::Io { link, what, source }
    };
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))
        .map_err(io("binding UDP port 68"))?;
    setsockopt(&sock.as_fd(), sockopt::Broadcast, &true)
        .map_err(|e| io("allowing broadcasts")(e.into()))?;
    setsockopt(
        &sock.as_fd(),
        sockopt::BindToDevice,
        &std::ffi::OsString::from(link),
    )
    .map_err(|e| io("binding to the link")(e.into()))?;
    let started = Instant::now();
    let xid = xid_for(mac);
    let mut tries = 0u32;
    while started.elapsed() < wait {
        tries += 1;
        // Resend every 2, 4, 4… seconds (RFC 2131 backs off further; a rescue boot should not wait).
        let round = Duration::from_secs(if tries == 1 { 2 } else { 4 });
        let discover = request(MessageType::Discover, xid, mac, None, None);
        send(&sock, &discover).map_err(io("sending DHCPDISCOVER"))?;
        let Some(offer) = receive(&sock, xid, &[MessageType::Offer], round, started, wait)
            .map_err(io("receiving"))?
        else {
            continue;
        };
        let server = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => offer.siaddr(),
        };
        let req = request(
            MessageType::Request,
            xid,
            mac,
            Some(offer.yiaddr()),
            Some(server),
        );
        send(&sock, &req).map_err(io("sending DHCPREQUEST"))?;
        match receive(
            &sock,
            xid,
            &[MessageType::Ack, MessageType::Nak],
            round,
            started,
            wait,
        )
        .map_err(io("receiving"))?
        {
            Some(ack) if ack.opts().msg_type() == Some(MessageType::Ack) => {
                return Ok(lease_of(&ack, server))
            }
            Some(_) => {
                return Err(DhcpError::Refused {
                    link: link.to_string(),
                    server,
                    address: offer.yiaddr(),
                })
            }
            None => continue,
        }
    }
    Err(DhcpError::NoAnswer {
        link: link.to_string(),
        seconds: wait.as_secs(),
    })
}

/// A transaction id that differs between machines (their MAC) and between runs (the clock).
fn xid_for(mac: [u8; 6]) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let m = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    m.rotate_left(7) ^ nanos
}

/// A DISCOVER or REQUEST (with the offered address and the server that offered it).
pub(crate) fn request(
    kind: MessageType,
    xid: u32,
    mac: [u8; 6],
    address: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Message {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.set_flags(Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&mac);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
    ]));
    opts.insert(DhcpOption::Hostname("rescue".into()));
    if let Some(a) = address {
        opts.insert(DhcpOption::RequestedIpAddress(a));
    }
    if let Some(s) = server {
        opts.insert(DhcpOption::ServerIdentifier(s));
    }
    m
}

fn send(sock: &UdpSocket, m: &Message) -> io::Result<()> {
    let mut buf = Vec::with_capacity(576);
    m.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    sock.send_to(&buf, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))?;
    Ok(())
}

/// The next answer to our transaction of one of `kinds`, within `round` (and the whole `wait`).
fn receive(
    sock: &UdpSocket,
    xid: u32,
    kinds: &[MessageType],
    round: Duration,
    started: Instant,
    wait: Duration,
) -> io::Result<Option<Message>> {
    let until = (Instant::now() + round).min(started + wait);
    let mut buf = [0u8; 1500];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if let Some(m) = answer(&buf[..n], xid, kinds) {
            return Ok(Some(m));
        }
    }
}

/// `bytes` as a server's answer to transaction `xid` of one of `kinds`; anything else is ignored.
pub fn answer(bytes: &[u8], xid: u32, kinds: &[MessageType]) -> Option<Message> {
    // dhcproto checks some option lengths with `debug_assert!` only: a malformed datagram panics a debug
    // build (found by the property test below). Anything that does not decode is not an answer.
    let m = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)).ok()).ok()??;
    let kind = m.opts().msg_type()?;
    (m.opcode() == Opcode::BootReply && m.xid() == xid && kinds.contains(&kind)).then_some(m)
}

pub fn lease_of(ack: &Message, server: Ipv4Addr) -> Lease {
    let opts = ack.opts();
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => u32::from(*m).leading_ones() as u8,
        // No mask: the class's (a /24 is what every home and office network has).
        _ => 24,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => vec![],
    };
    let seconds = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => *s,
        _ => 0,
    };
    Lease {
        address: ack.yiaddr(),
        prefix,
        router,
        dns,
        server,
        seconds,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn encode(m: &Message) -> Vec<u8> {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    /// What a server answers, as bytes on the wire.
    fn reply(kind: MessageType, xid: u32) -> Vec<u8> {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        encode(&m)
    }

    #[test]
    fn a_request_asks_for_the_offered_address_with_the_broadcast_flag() {
        let m = request(
            MessageType::Request,
            7,
            MAC,
            Some(Ipv4Addr::new(10, 0, 2, 15)),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
        );
        let back = Message::decode(&mut Decoder::new(&encode(&m))).unwrap();
        assert_eq!(back.xid(), 7);
        assert!(back.flags().broadcast());
        assert_eq!(back.chaddr()[..6], MAC);
        assert_eq!(
            back.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
    }

    #[test]
    fn only_our_transactions_answers_count() {
        let ack = answer(&reply(MessageType::Ack, 9), 9, &[MessageType::Ack]).unwrap();
        let l = lease_of(&ack, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(l.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(
            l.to_string(),
            "10.0.2.15/24 from 10.0.2.2, router 10.0.2.2, DNS 10.0.2.3, for 86400 s"
        );
        assert!(answer(&reply(MessageType::Ack, 8), 9, &[MessageType::Ack]).is_none());
        assert!(answer(&reply(MessageType::Offer, 9), 9, &[MessageType::Ack]).is_none());
        // Our own broadcast, heard back: a request, not a reply.
        let ours = encode(&request(MessageType::Discover, 9, MAC, None, None));
        assert!(answer(&ours, 9, &[MessageType::Offer]).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_are_ignored_or_read(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Some(m) = answer(&b, 1, &[MessageType::Offer, MessageType::Ack]) {
                let _ = lease_of(&m, Ipv4Addr::UNSPECIFIED);
            }
        }
    }
}
