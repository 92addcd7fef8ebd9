//! Boots the rescue initramfs under QEMU with fixture disks on each bus a PC has, and checks that
//! `rescue disks --json`, run by PID 1 from the kernel command line, reports exactly the fixture's layout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use builder::fixtures::{self, DiskSpec, Expected};
use builder::qemu::{Bus, Disk, Vm};
use qemu_tests::{boot_files, run_command, Guest, BOOT_TIMEOUT};
use serde_json::Value;

fn vm() -> Vm {
    let f = boot_files();
    Vm::new(&f.vmlinuz, &f.initramfs)
}

fn make(dir: &Path, name: &str, spec: &DiskSpec) -> (std::path::PathBuf, Vec<Expected>) {
    let path = dir.join(name);
    let expected = fixtures::create_disk(&path, spec).expect("creating the fixture disk");
    (path, expected)
}

fn disk_with_serial<'a>(report: &'a Value, serial: &str, serial_log: &str) -> &'a Value {
    report["disks"]
        .as_array()
        .expect("disks is an array")
        .iter()
        .find(|d| d["serial"].as_str() == Some(serial))
        .unwrap_or_else(|| panic!("no disk with serial {serial} in the report:\n{report:#}\nserial log:\n{serial_log}"))
}

/// Compare one reported disk with the fixture it was made from.
fn assert_layout(disk: &Value, spec: &DiskSpec, expected: &[Expected], transport: &str) {
    let ctx = format!("{disk:#}");
    assert_eq!(
        disk["size_bytes"],
        spec.size_mib * 1024 * 1024,
        "size: {ctx}"
    );
    assert_eq!(
        disk["logical_sector_size"], spec.sector_size,
        "sector size: {ctx}"
    );
    assert_eq!(disk["transport"], transport, "transport: {ctx}");
    let table = match spec.table {
        fixtures::Table::Gpt => "gpt",
        fixtures::Table::Mbr => "mbr",
    };
    assert_eq!(disk["table"], table, "table: {ctx}");
    if table == "gpt" {
        assert_eq!(disk["gpt"]["primary_header_valid"], true, "{ctx}");
        assert_eq!(disk["gpt"]["backup_header_valid"], true, "{ctx}");
    }
    let parts: Vec<&Value> = disk["partitions"]
        .as_array()
        .expect("partitions array")
        .iter()
        .filter(|p| p["type_name"] != "Extended")
        .collect();
    assert_eq!(parts.len(), expected.len(), "partition count: {ctx}");
    for (p, e) in parts.iter().zip(expected) {
        assert_eq!(p["number"], e.number, "number: {ctx}");
        assert_eq!(
            p["start_bytes"], e.start_bytes,
            "start of {}: {ctx}",
            e.number
        );
        assert_eq!(p["size_bytes"], e.size_bytes, "size of {}: {ctx}", e.number);
        assert_eq!(
            p["type"].as_str().map(str::to_lowercase),
            Some(e.type_id.to_lowercase()),
            "type of {}: {ctx}",
            e.number
        );
        assert_eq!(
            p["fs"].as_str(),
            e.fs.as_deref(),
            "fs of {}: {ctx}",
            e.number
        );
        assert_eq!(
            p["fs_label"].as_str(),
            e.label.as_deref(),
            "label of {}: {ctx}",
            e.number
        );
        assert_eq!(
            p["fs_uuid"].as_str().map(str::to_lowercase),
            e.uuid.as_ref().map(|u| u.to_lowercase()),
            "uuid of {}: {ctx}",
            e.number
        );
    }
}

/// Boot with the fixture on `bus`, check its report, and return it. `stick` marks the disk as the medium we
/// booted from (its GPT disk GUID on the kernel command line, as the stick's boot menu passes it).
fn detect_on_bus(bus: Bus, spec: DiskSpec, serial: &str, transport: &str, stick: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = make(dir.path(), "disk.img", &spec);
    let mut vm = vm();
    if stick {
        let out = std::process::Command::new("sfdisk")
            .arg("--disk-id")
            .arg(&path)
            .output()
            .unwrap();
        let guid = String::from_utf8(out.stdout).unwrap().trim().to_string();
        vm.append = format!("rescue.stick={guid}");
    }
    vm.disks.push(
        Disk::new(&path, bus)
            .serial(serial)
            .block_size(spec.sector_size),
    );
    let run = run_command(vm, "disks --json").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(run.rc, 0, "rescue disks failed:\n{}", run.serial);
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}):\n{}\n\nserial log:\n{}",
            run.stdout, run.serial
        )
    });
    let disk = disk_with_serial(&report, serial, &run.serial);
    assert_layout(disk, &spec, &expected, transport);
    assert!(
        run.serial.contains("all disks detected"),
        "PID 1 did not report detection time:\n{}",
        run.serial
    );
    assert_eq!(disk["boot_medium"], stick, "boot medium flag: {disk:#}");
    disk.clone()
}

#[test]
fn virtio_gpt_disk() {
    detect_on_bus(
        Bus::Virtio,
        fixtures::demo_gpt(),
        "VIRTIO-GPT",
        "virtio",
        false,
    );
}

#[test]
fn ahci_mbr_disk_with_logical_partitions() {
    let disk = detect_on_bus(Bus::Ahci, fixtures::demo_mbr(), "AHCI-MBR", "sata", false);
    assert_eq!(disk["model"], "QEMU HARDDISK");
}

#[test]
fn nvme_gpt_disk() {
    detect_on_bus(Bus::Nvme, fixtures::demo_gpt(), "NVME-GPT", "nvme", false);
}

#[test]
fn usb_storage_mbr_disk() {
    detect_on_bus(Bus::Usb, fixtures::demo_mbr(), "USB-MBR", "usb", false);
}

#[test]
fn virtio_4kn_gpt_disk() {
    detect_on_bus(
        Bus::Virtio,
        fixtures::demo_4kn(),
        "VIRTIO-4KN",
        "virtio",
        false,
    );
}

#[test]
fn the_boot_medium_is_recognised_by_its_disk_guid() {
    detect_on_bus(Bus::Virtio, fixtures::demo_gpt(), "STICK", "virtio", true);
}

#[test]
fn usb_disk_plugged_in_after_boot_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make(dir.path(), "hot.img", &fixtures::demo_mbr());
    let mut g = Guest::boot(vm()).unwrap();
    let ready = g
        .wait_for(rescue::init::READY, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The full-screen disk list is up (no disks yet); now plug a USB stick in.
    g.wait_screen(ready, "Disks: none found yet", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    g.qmp(
        "blockdev-add",
        serde_json::json!({"node-name": "hot0", "driver": "raw",
            "file": {"driver": "file", "filename": path.to_string_lossy()}}),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    g.qmp(
        "device_add",
        serde_json::json!({"driver": "usb-storage", "bus": "xhci.0", "drive": "hot0", "serial": "HOTPLUG1", "id": "hotusb"}),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let plugged = std::time::Instant::now();
    let screen = g
        .wait_screen(ready, "Disks (1)", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        screen.contains("HOTPLUG1") && screen.contains("usb"),
        "the new disk's row does not show its serial and bus:\n{screen}"
    );
    eprintln!(
        "hotplugged USB disk shown {:.1} s after device_add",
        plugged.elapsed().as_secs_f64()
    );
}
