//! The few rtnetlink requests the rescue system needs, written by hand (a crate for them costs 300 KB of
//! initramfs): a link up, an address added, a default route added, and the addresses listed.

use std::io;
use std::net::IpAddr;

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_TENTATIVE: u32 = 0x40;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// An address of a link, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAddress {
    pub index: u32,
    pub address: IpAddr,
    pub prefix: u8,
    /// 0 global, 253 link, 254 host.
    pub scope: u8,
    /// Still being checked for duplicates (IPv6): not usable yet.
    pub tentative: bool,
}

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Netlink { fd, seq: 1 })
    }

    /// Set the link with this index up.
    pub fn link_up(&mut self, index: u32) -> io::Result<()> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
        body[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        body[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
        self.request(RTM_NEWLINK, NLM_F_ACK, &body)
    }

    /// Add `address/prefix` to the link (replacing the same address with other settings).
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> io::Result<()> {
        let (family, bytes) = family_bytes(address);
        let mut body = vec![family, prefix, 0, 0];
        body.extend_from_slice(&index.to_ne_bytes());
        attr(&mut body, IFA_LOCAL, &bytes);
        attr(&mut body, IFA_ADDRESS, &bytes);
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, &body)
    }

    /// A default route through `gateway` on the link.
    pub fn add_default_route(&mut self, index: u32, gateway: IpAddr) -> io::Result<()> {
        let (family, bytes) = family_bytes(gateway);
        // family, dst_len 0 (default), src_len, tos, table main, protocol boot, scope universe, unicast.
        let mut body = vec![family, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        attr(&mut body, RTA_GATEWAY, &bytes);
        attr(&mut body, RTA_OIF, &index.to_ne_bytes());
        match self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body) {
            // A default route is there already (another link's lease): keep it.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// Every address of every link.
    pub fn addresses(&mut self) -> io::Result<Vec<LinkAddress>> {
        let seq = self.send(RTM_GETADDR, NLM_F_DUMP, &[0u8; 8])?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            for (kind, msg_seq, payload) in messages(&buf[..n]) {
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => error_of(payload)?,
                    RTM_NEWADDR => out.extend(parse_address(payload)),
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        Ok(self.seq)
    }

    /// Send and wait for the kernel's acknowledgement (or its error).
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        let seq = self.send(kind, flags, body)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            for (kind, msg_seq, payload) in messages(&buf[..n]) {
                if kind == NLMSG_ERROR && msg_seq == seq {
                    return error_of(payload);
                }
            }
        }
    }
}

fn family_bytes(a: IpAddr) -> (u8, Vec<u8>) {
    match a {
        IpAddr::V4(v) => (AF_INET, v.octets().to_vec()),
        IpAddr::V6(v) => (AF_INET6, v.octets().to_vec()),
    }
}

/// Append an attribute (length, type, data, padded to 4 bytes).
fn attr(body: &mut Vec<u8>, kind: u16, data: &[u8]) {
    body.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(data);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages in one datagram: (type, sequence number, payload). Stops at the first malformed one.
pub fn messages(buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind), Some(seq)) =
        (u32_at(buf, at), u16_at(buf, at + 4), u32_at(buf, at + 8))
    {
        let len = len as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        out.push((kind, seq, &buf[at + 16..at + len]));
        at += len.div_ceil(4) * 4;
    }
    out
}

/// The `struct nlmsgerr` of an acknowledgement: 0 is success, else a negative errno.
fn error_of(payload: &[u8]) -> io::Result<()> {
    match u32_at(payload, 0).map(|e| e as i32) {
        Some(0) => Ok(()),
        Some(e) => Err(io::Error::from_raw_os_error(-e)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a malformed netlink acknowledgement",
        )),
    }
}

/// An `RTM_NEWADDR` payload: `struct ifaddrmsg` and its attributes.
pub fn parse_address(p: &[u8]) -> Option<LinkAddress> {
    let (family, prefix, scope) = (*p.first()?, *p.get(1)?, *p.get(3)?);
    let mut flags = u32::from(*p.get(2)?);
    let index = u32_at(p, 4)?;
    let (mut local, mut address) = (None, None);
    let mut at = 8;
    while let (Some(len), Some(kind)) = (u16_at(p, at), u16_at(p, at + 2)) {
        let len = usize::from(len);
        if len < 4 || at + len > p.len() {
            break;
        }
        let data = &p[at + 4..at + len];
        let ip = match (family, data.len()) {
            (AF_INET, 4) => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            (AF_INET6, 16) => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            IFA_FLAGS => flags = u32_at(data, 0).unwrap_or(flags),
            _ => {}
        }
        at += len.div_ceil(4) * 4;
    }
    Some(LinkAddress {
        index,
        // On a point-to-point link IFA_ADDRESS is the peer; IFA_LOCAL is ours when given.
        address: local.or(address)?,
        prefix,
        scope,
        tentative: flags & IFA_F_TENTATIVE != 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn address_msg(family: u8, prefix: u8, index: u32, ip: &[u8], flags: u32) -> Vec<u8> {
        let mut b = vec![family, prefix, 0, 0];
        b.extend_from_slice(&index.to_ne_bytes());
        attr(&mut b, IFA_ADDRESS, ip);
        attr(&mut b, IFA_FLAGS, &flags.to_ne_bytes());
        b
    }

    #[test]
    fn addresses_are_read_from_the_kernels_messages() {
        let a = parse_address(&address_msg(AF_INET, 24, 2, &[10, 0, 2, 15], 0)).unwrap();
        assert_eq!(a.address, IpAddr::from([10, 0, 2, 15]));
        assert_eq!((a.index, a.prefix, a.tentative), (2, 24, false));
        let mut v6 = [0u8; 16];
        v6[0] = 0xfe;
        v6[1] = 0x80;
        let b = parse_address(&address_msg(AF_INET6, 64, 3, &v6, IFA_F_TENTATIVE)).unwrap();
        assert!(b.tentative && b.address.is_ipv6());
        // Two messages in one datagram, each with its header.
        let mut dgram = Vec::new();
        for (seq, body) in [(7u32, vec![1u8, 2, 3]), (8, vec![])] {
            let len = 16 + body.len();
            dgram.extend_from_slice(&(len as u32).to_ne_bytes());
            dgram.extend_from_slice(&RTM_NEWADDR.to_ne_bytes());
            dgram.extend_from_slice(&0u16.to_ne_bytes());
            dgram.extend_from_slice(&seq.to_ne_bytes());
            dgram.extend_from_slice(&0u32.to_ne_bytes());
            dgram.extend_from_slice(&body);
            while !dgram.len().is_multiple_of(4) {
                dgram.push(0);
            }
        }
        let m = messages(&dgram);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].1, m[0].2), (7, &[1u8, 2, 3][..]));
    }

    proptest! {
        /// Whatever the kernel (or anything else) sends, reading it never panics.
        #[test]
        fn arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            for (_, _, p) in messages(&b) {
                let _ = parse_address(p);
            }
            let _ = parse_address(&b);
        }
    }
}
