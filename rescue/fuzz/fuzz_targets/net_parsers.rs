//! What the network hands the rescue system: rtnetlink datagrams, DHCP answers, and `rescue.net=` from
//! the kernel command line. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::net::{config::NetSpec, dhcp, netlink};

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
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NetSpec::parse(text);
    }
});
