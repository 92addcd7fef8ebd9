//! What the network hands the rescue system: rtnetlink datagrams, DHCP and DNS answers, and `rescue.net=` from
//! the kernel command line. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::net::{config::NetSpec, dhcp, dns, netlink};

fuzz_target!(|data: &[u8]| {
    for (_, _, payload) in netlink::messages(data) {
        let _ = netlink::parse_address(payload);
    }
    let _ = netlink::parse_address(data);
    let kinds = [
        dhcproto::v4::MessageType::Offer,
        dhcproto::v4::MessageType::Ack,
        dhcproto::v4::MessageType::Nak,
    ];
    if let Some(m) = dhcp::answer(data, u32::from_le_bytes([1, 2, 3, 4]), &kinds) {
        let _ = dhcp::lease_of(&m, std::net::Ipv4Addr::UNSPECIFIED);
    }
    if data.len() >= 2 {
        let id = u16::from_be_bytes([data[0], data[1]]);
        let _ = dns::answer(data, id, 1);
        let _ = dns::answer(data, id, 28);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NetSpec::parse(text);
    }
});
