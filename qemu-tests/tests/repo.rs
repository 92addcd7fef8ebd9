//! Repositories in the rescue system, on a rescue stick's exFAT data partition: a capture into a new
//! repository, a second one of the unchanged disk that adds almost nothing, the snapshot list, a full
//! check, a restore onto a blank disk and its verification; and a capture cut off by pulling the power
//! (QEMU killed), after which the repository lists no snapshot, checks out, and the next capture reuses
//! the chunks already written. And a repository on an S3 server (Ceph's radosgw on the host's
//! 127.0.0.1, 10.0.2.2 to the guest): two captures, a restore and a check from the rescue system; and the
//! same on an SMB share (Samba on the host) and an NFS export (NFS-Ganesha on the host), the repository
//! made there by the guest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use builder::image::{write_image, ImageOptions};
use builder::qemu::{Bus, Disk, UserNet, Vm};
use builder::servers::{Ganesha, S3Server, Smbd};
use qemu_tests::{boot_files, Guest};
use serde_json::Value;

mod common;
use common::*;

/// A rescue stick image of `mib` MiB: its exFAT data partition (RESCUE-DATA) takes the rest.
fn stick(path: &Path, mib: u64) {
    let files = boot_files();
    let opts = ImageOptions {
        size: mib * MIB,
        epoch: 1_700_000_000,
        ..Default::default()
    };
    write_image(path, &files.vmlinuz, &files.initramfs, &opts).unwrap();
}

/// Boot with `rescue.cmd="CMD"` (commands separated by `;`) and return the output between the markers
/// and the status.
fn run(vm: Vm, cmd: &str) -> (String, i32) {
    let mut vm = vm;
    vm.append = format!("{} rescue.cmd=\"{cmd}\"", vm.append);
    let mut g = Guest::boot(vm).unwrap();
    let (out, rc) = g
        .marked_output(CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    g.wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
    (out, rc)
}

/// The JSON documents (one per line) a run printed, in order.
fn documents(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn captures_into_a_repository_on_the_sticks_data_partition_and_restores_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let stick_img = work.join("stick.img");
    stick(&stick_img, 256);
    let src = source_disk(work);
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);
    let mut vm = vm();
    vm.disks
        .push(Disk::new(&stick_img, Bus::Virtio).serial("STICK"));
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    let started = Instant::now();
    let (out, rc) = run(
        vm,
        "mount label=RESCUE-DATA /mnt/d ; repo init /mnt/d/repo ; \
         capture serial=SRC --repo /mnt/d/repo --name pc --json ; \
         capture serial=SRC --repo /mnt/d/repo --name pc --json ; \
         snapshots /mnt/d/repo --json ; check /mnt/d/repo --read-data --json ; \
         restore /mnt/d/repo::pc serial=DST --yes --json ; \
         verify /mnt/d/repo::pc --against serial=DST --json ; umount /mnt/d",
    );
    assert_eq!(rc, 0, "{}", tail(&out, 40));
    eprintln!(
        "two captures, check, restore and verify in the guest: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let docs = documents(&out);
    let captures: Vec<&Value> = docs
        .iter()
        .filter(|d| d.get("snapshot").is_some())
        .collect();
    assert_eq!(captures.len(), 2, "{}", tail(&out, 40));
    let (first, second) = (
        captures[0]["new_bytes"].as_u64().unwrap(),
        captures[1]["new_bytes"].as_u64().unwrap(),
    );
    eprintln!("first capture stored {first} bytes, the second (unchanged disk) {second}");
    assert!(second * 100 < first, "{first} then {second}");
    let list = docs.iter().find(|d| d.get("snapshots").is_some()).unwrap();
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2, "{list}");
    let check = docs.iter().find(|d| d.get("read_bytes").is_some()).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    // The restored disk is the source in what was captured.
    let (want, have) = (host_report(&src.path), host_report(&target));
    assert_eq!(have["partitions"], want["partitions"]);
}

#[test]
fn a_power_cut_during_a_capture_leaves_no_snapshot_and_the_chunks_are_used_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let stick_img = work.join("stick.img");
    stick(&stick_img, 512);
    let src = work.join("big.img");
    big_source(&src, 256, 120);
    let disks = |vm: &mut Vm| {
        vm.disks
            .push(Disk::new(&stick_img, Bus::Virtio).serial("STICK"));
        vm.disks.push(Disk::new(&src, Bus::Virtio).serial("SRC"));
    };

    // A capture, with the power pulled once it has stored some chunks.
    let mut vm = vm();
    disks(&mut vm);
    vm.append = "rescue.cmd=\"mount label=RESCUE-DATA /mnt/d ; repo init /mnt/d/repo ; \
                 capture serial=SRC --repo /mnt/d/repo --name big --json --threads 1\""
        .into();
    let mut g = Guest::boot(vm).unwrap();
    let from = g
        .wait_for("\"phase\":\"capture\"", CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // About a third of the way: progress lines report what was stored so far.
    let deadline = Instant::now() + CHAIN_TIMEOUT;
    loop {
        let text = g.output()[from..].to_string();
        let stored = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .filter_map(|v| v["bytes_done"].as_u64())
            .max()
            .unwrap_or(0);
        if stored > 40 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", g.tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(g);

    let mut vm = common::vm();
    disks(&mut vm);
    let (out, rc) = run(
        vm,
        "mount label=RESCUE-DATA /mnt/d ; snapshots /mnt/d/repo --json ; \
         check /mnt/d/repo --read-data --json ; \
         capture serial=SRC --repo /mnt/d/repo --name big --json ; \
         check /mnt/d/repo --json ; umount /mnt/d",
    );
    assert_eq!(rc, 0, "{}", tail(&out, 40));
    let docs = documents(&out);
    let list = docs.iter().find(|d| d.get("snapshots").is_some()).unwrap();
    assert_eq!(
        list["snapshots"].as_array().unwrap().len(),
        0,
        "a cut capture is listed: {list}"
    );
    let checks: Vec<&Value> = docs
        .iter()
        .filter(|d| d.get("chunk_bytes").is_some())
        .collect();
    assert_eq!(checks[0]["ok"], true, "{}", checks[0]);
    let capture = docs.iter().find(|d| d.get("snapshot").is_some()).unwrap();
    let added = capture["new_bytes"].as_u64().unwrap();
    let total = checks[1]["chunk_bytes"].as_u64().unwrap();
    eprintln!(
        "after the power cut, {} unreferenced chunks were in the repository; the next capture added \
         {added} of {total} bytes",
        checks[0]["unreferenced_chunks"]
    );
    assert!(
        checks[0]["unreferenced_chunks"].as_u64().unwrap() > 0,
        "the cut capture stored nothing: {}",
        checks[0]
    );
    assert!(
        added < total,
        "the chunks of the cut capture were not used: {added} of {total}"
    );
    assert_eq!(checks[1]["ok"], true, "{}", checks[1]);
}

/// In one boot on the user network: make the repository at `repo`, capture the demo disk into it twice
/// (the second adds nothing), restore it onto a blank disk and check the repository reading every chunk;
/// `secret` is printed nowhere. Returns the seconds it took.
fn network_round_trip(repo: &str, secret: &str, server_log: &dyn Fn() -> String) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);
    let mut vm = vm();
    vm.user_net = Some(UserNet::default());
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    let started = Instant::now();
    let (out, rc) = run(
        vm,
        &format!(
            "repo init {repo} ; capture serial=SRC --repo {repo} --name pc --json ; \
             capture serial=SRC --repo {repo} --name pc --json ; \
             restore {repo}::pc serial=DST --yes ; check {repo} --read-data --json"
        ),
    );
    assert_eq!(rc, 0, "{}\n{}", tail(&out, 40), server_log());
    assert!(!out.contains(secret), "the secret was printed");
    let docs = documents(&out);
    let captures: Vec<&Value> = docs
        .iter()
        .filter(|d| d.get("snapshot").is_some())
        .collect();
    assert_eq!(captures.len(), 2, "{}", tail(&out, 40));
    assert!(captures[0]["new_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(captures[1]["new_bytes"], 0, "{}", captures[1]);
    let check = docs.iter().find(|d| d.get("read_bytes").is_some()).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    let (want, have) = (host_report(&src.path), host_report(&target));
    assert_eq!(have["partitions"], want["partitions"]);
    started.elapsed().as_secs_f64()
}

#[test]
fn captures_into_and_restores_from_a_repository_on_an_s3_server() {
    let server = S3Server::start();
    server.create_bucket("fleet");
    // The guest reaches the host's 127.0.0.1 as 10.0.2.2; the keys are in the URL (PID 1 hands the
    // secret to the commands in RESCUE_PASSWORD, not on their command line).
    let port = server.endpoint.rsplit(':').next().unwrap();
    let repo = format!(
        "s3://{}:{}@fleet/pcs?endpoint=http://10.0.2.2:{port}&region={}",
        server.access_key, server.secret_key, server.region
    );
    let took = network_round_trip(&repo, &server.secret_key, &|| server.log_text());
    eprintln!("two captures into S3, a restore and a check in the guest: {took:.1} s");
}

#[test]
fn a_repository_on_an_smb_share() {
    const PASSWORD: &str = "Smb-repo-pw";
    let smb = Smbd::start(PASSWORD);
    let repo = format!("smb://root:{PASSWORD}@10.0.2.2:{}/images/repo", smb.port);
    let took = network_round_trip(&repo, PASSWORD, &|| smb.log_text());
    eprintln!("two captures onto SMB, a restore and a check in the guest: {took:.1} s");
    // On the server: the repository with its two snapshots.
    let snaps = std::fs::read_dir(smb.share_dir.join("repo/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 2);
}

#[test]
fn a_repository_on_an_nfs_export() {
    let nfs = Ganesha::start();
    // The export's pseudo path, as NFSv4 clients see the server.
    let repo = format!("nfs://10.0.2.2:{}/images/repo", nfs.port);
    let took = network_round_trip(&repo, "no secret on NFS", &|| nfs.log_text());
    eprintln!("two captures onto NFS, a restore and a check in the guest: {took:.1} s");
    let snaps = std::fs::read_dir(nfs.export_dir.join("repo/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 2);
}
