//! The network in the rescue system: `rescue.net=` brings links up at boot, before any command. With
//! `dhcp`, the virtio NIC's driver (from the initramfs's module rules) is loaded by coldplug and our DHCP
//! client takes QEMU's lease (10.0.2.15 from 10.0.2.2); a static address is set as given; a mistake in
//! `rescue.net=` is named with an example. The guest's network is `restrict`ed: nothing leaves QEMU.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use builder::qemu::UserNet;
use serde_json::Value;

mod common;
use common::*;

fn links_of(stdout: &str) -> Vec<Value> {
    let start = stdout
        .find("\n[")
        .map(|i| i + 1)
        .or_else(|| stdout.starts_with('[').then_some(0));
    let text = &stdout[start.expect("no JSON list of links in the output")..];
    let mut it = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    it.next().unwrap().unwrap().as_array().unwrap().clone()
}

fn eth(links: &[Value]) -> &Value {
    links
        .iter()
        .find(|l| l["ethernet"] == true)
        .unwrap_or_else(|| panic!("no Ethernet link: {links:#?}"))
}

fn booted(net: &str) -> qemu_tests::CmdRun {
    let mut vm = vm();
    vm.user_net = Some(UserNet {
        restrict: true,
        ..Default::default()
    });
    vm.append = format!("rescue.net={net}");
    run_chain(vm, "net --json")
}

#[test]
fn dhcp_at_boot_takes_the_lease() {
    let run = booted("dhcp");
    assert_eq!(run.rc, 0, "{}", tail(&run.serial, 40));
    assert!(
        // A restricted QEMU network offers no router and no name server.
        run.serial
            .contains("eth0: DHCP lease 10.0.2.15/24 from 10.0.2.2, for 86400 s"),
        "the lease is logged: {}",
        tail(&run.serial, 40)
    );
    let links = links_of(&run.stdout);
    let e = eth(&links);
    assert_eq!(e["driver"], "virtio_net", "{e}");
    assert_eq!(e["carrier"], true, "{e}");
    assert!(
        e["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "10.0.2.15/24"),
        "{e}"
    );
}

#[test]
fn a_static_address_is_set_and_a_mistake_is_named() {
    let run = booted("eth0:10.0.2.20/24,gw=10.0.2.2");
    assert_eq!(run.rc, 0, "{}", tail(&run.serial, 40));
    assert!(
        run.serial.contains("eth0: 10.0.2.20/24 (static)"),
        "{}",
        tail(&run.serial, 40)
    );
    let links = links_of(&run.stdout);
    assert!(
        eth(&links)["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "10.0.2.20/24"),
        "{links:#?}"
    );

    let run = booted("eth0:10.0.2.20");
    assert!(
        run.serial.contains("needs a prefix length")
            && run.serial.contains("rescue.net=eth0:192.168.1.20/24"),
        "{}",
        tail(&run.serial, 40)
    );
    // The command still ran, with no address on the link.
    let links = links_of(&run.stdout);
    assert!(eth(&links)["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a != "10.0.2.20/24"));
}
