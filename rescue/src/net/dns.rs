//! Names to addresses, asked of the name servers DHCP or the user gave (`/run/rescue/resolv.conf`): A and
//! AAAA queries over UDP (RFC 1035), written by hand. The static binary cannot use glibc's resolver (it
//! needs NSS libraries the initramfs does not have), and a crate for it costs 100–250 KB of initramfs.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot look up {name}: no name server is known (bring the network up with DHCP, or give dns= in rescue.net=, or use the server's IP address)")]
    NoServer { name: String },
    #[error("{name} is not a valid host name")]
    BadName { name: String },
    #[error("{name} has no address (the name server {server} says: {why})")]
    NotFound {
        name: String,
        server: IpAddr,
        why: &'static str,
    },
    #[error("no name server answered for {name} (asked {servers})")]
    NoAnswer {
        name: String,
        servers: String,
        #[source]
        source: io::Error,
    },
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// The addresses of `name` (IPv4 first); an IP address is returned as it is.
pub fn resolve(name: &str, servers: &[IpAddr], timeout: Duration) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(vec![ip]);
    }
    if servers.is_empty() {
        return Err(DnsError::NoServer {
            name: name.to_string(),
        });
    }
    let mut last = io::Error::from(io::ErrorKind::TimedOut);
    for &server in servers {
        let mut found = Vec::new();
        let mut answered = None;
        for kind in [TYPE_A, TYPE_AAAA] {
            match ask(name, kind, server, timeout) {
                Ok(Ok(addrs)) => {
                    answered = Some(Ok(()));
                    found.extend(addrs);
                }
                Ok(Err(why)) => {
                    answered.get_or_insert(Err(why));
                }
                Err(e) => last = e,
            }
        }
        if !found.is_empty() {
            return Ok(found);
        }
        match answered {
            Some(Err(why)) => {
                return Err(DnsError::NotFound {
                    name: name.to_string(),
                    server,
                    why,
                })
            }
            Some(Ok(())) => {
                return Err(DnsError::NotFound {
                    name: name.to_string(),
                    server,
                    why: "no A or AAAA record",
                })
            }
            None => {}
        }
    }
    Err(DnsError::NoAnswer {
        name: name.to_string(),
        servers: servers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        source: last,
    })
}

/// One query: `Ok(Ok(addresses))` on an answer, `Ok(Err(why))` when the server said no, `Err` when it
/// did not answer.
fn ask(
    name: &str,
    kind: u16,
    server: IpAddr,
    timeout: Duration,
) -> io::Result<Result<Vec<IpAddr>, &'static str>> {
    let id = query_id(name, kind);
    let q = query(name, kind, id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a valid host name"))?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(SocketAddr::new(server, 53))?;
    sock.set_read_timeout(Some(timeout))?;
    // Two tries: a lost datagram should not fail a capture.
    for _ in 0..2 {
        sock.send(&q)?;
        let mut buf = [0u8; 1500];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => match answer(&buf[..n], id, kind) {
                    Some(r) => return Ok(r),
                    None => continue,
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(io::Error::from(io::ErrorKind::TimedOut))
}

fn query_id(name: &str, kind: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let h = name
        .bytes()
        .fold(u32::from(kind), |h, b| h.rotate_left(5) ^ u32::from(b));
    ((h ^ nanos) & 0xFFFF) as u16
}

/// A recursive query for `name`'s records of `kind`; `None` for a name DNS cannot carry.
pub fn query(name: &str, kind: u16, id: u16) -> Option<Vec<u8>> {
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // recursion desired
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&kind.to_be_bytes());
    q.extend_from_slice(&[0, 1]); // class IN
    Some(q)
}

/// The position after the name starting at `at` (labels, or a compression pointer).
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2).filter(|&e| e <= b.len()),
            l if l & 0xC0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A response to query `id` for `kind`: `Some(Ok(addresses))`, `Some(Err(why))` when the server said no,
/// `None` when it is not a response to that query (or malformed).
pub fn answer(b: &[u8], id: u16, kind: u16) -> Option<Result<Vec<IpAddr>, &'static str>> {
    if u16_at(b, 0)? != id {
        return None;
    }
    let flags = u16_at(b, 2)?;
    if flags & 0x8000 == 0 {
        return None; // a query, not a response
    }
    match flags & 0x000F {
        0 => {}
        3 => return Some(Err("no such name")),
        2 => return Some(Err("server failure")),
        5 => return Some(Err("refused")),
        _ => return Some(Err("an error")),
    }
    let (questions, answers) = (u16_at(b, 4)?, u16_at(b, 6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(b, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(b, at)?;
        let (rtype, len) = (u16_at(b, at)?, usize::from(u16_at(b, at + 8)?));
        let data = b.get(at + 10..at + 10 + len)?;
        match (rtype, kind, len) {
            (TYPE_A, TYPE_A, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (TYPE_AAAA, TYPE_AAAA, 16) => out.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {} // CNAMEs and the like: their targets' records follow in the same answer
        }
        at += 10 + len;
    }
    Some(Ok(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A server's answer to `q`: the question echoed, a CNAME, then A records (names compressed).
    fn response(q: &[u8], rcode: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r[7] = (addrs.len() + 1) as u8;
        // CNAME: pointer to the question's name, type 5, class IN, TTL, rdata = pointer.
        r.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xC0, 12]);
        for a in addrs {
            r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(a);
        }
        r
    }

    #[test]
    fn answers_are_read_and_others_ignored() {
        let q = query("nas.lan", TYPE_A, 0x1234).unwrap();
        assert_eq!(&q[12..20], b"\x03nas\x03lan");
        let r = response(&q, 0, &[[10, 0, 2, 2], [10, 0, 2, 9]]);
        assert_eq!(
            answer(&r, 0x1234, TYPE_A),
            Some(Ok(vec![
                IpAddr::from([10, 0, 2, 2]),
                IpAddr::from([10, 0, 2, 9])
            ]))
        );
        assert_eq!(answer(&r, 0x1235, TYPE_A), None, "another query's answer");
        assert_eq!(answer(&q, 0x1234, TYPE_A), None, "a query is no answer");
        assert_eq!(
            answer(&response(&q, 3, &[]), 0x1234, TYPE_A),
            Some(Err("no such name"))
        );
        assert!(query("bad name", TYPE_A, 1).is_none());
        assert!(query(&"a".repeat(64), TYPE_A, 1).is_none());
    }

    #[test]
    fn addresses_need_no_server() {
        assert_eq!(
            resolve("10.0.2.2", &[], Duration::from_secs(1)).unwrap(),
            [IpAddr::from([10, 0, 2, 2])]
        );
        assert_eq!(
            resolve("[fe80::1]", &[], Duration::from_secs(1))
                .unwrap()
                .len(),
            1
        );
        let e = resolve("nas.lan", &[], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("no name server is known"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams(b in proptest::collection::vec(any::<u8>(), 0..300), kind in prop_oneof![Just(TYPE_A), Just(TYPE_AAAA)]) {
            let id = u16_at(&b, 0).unwrap_or(0);
            let _ = answer(&b, id, kind);
        }

        #[test]
        fn queries_of_valid_names_read_back(labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..5)) {
            let name = labels.join(".");
            let q = query(&name, TYPE_AAAA, 7).unwrap();
            prop_assert_eq!(skip_name(&q, 12), Some(q.len() - 4));
            let r = response(&q, 0, &[]);
            prop_assert_eq!(answer(&r, 7, TYPE_AAAA), Some(Ok(vec![])));
        }
    }
}
