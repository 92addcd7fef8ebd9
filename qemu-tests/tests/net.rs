//! The network in the rescue system: `rescue.net=` brings links up at boot, before any command. With
//! `dhcp`, the virtio NIC's driver (from the initramfs's module rules) is loaded by coldplug and our DHCP
//! client takes QEMU's lease (10.0.2.15 from 10.0.2.2); a static address is set as given; a mistake in
//! `rescue.net=` is named with an example. The guest's network is `restrict`ed: nothing leaves QEMU.
//! Images on an SMB share (Samba's smbd on the host's 127.0.0.1, 10.0.2.2 in the guest): captured there
//! and restored from there, the share mounted by the kernel (encrypted SMB 3.1.1). The same on an NFS
//! export (nfs-ganesha, NFSv4.2), and NFS locations that fail (a wrong export, a missing image, nothing
//! listening, root squashed) named with the URL and what to do. Images restored from nginx over HTTP
//! and HTTPS (a test CA on a drive, given with `--ca-file`; without it, refused).
//! Images captured onto and restored from OpenSSH's SFTP (a key on a drive, the host key pinned; a
//! different pin refused before anything is sent). A share that disappears mid-capture, a full share
//! and an unknown host: each named, no image claimed, the source unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;

use builder::qemu::{Bus, Disk, UserNet, Vm};
use serde_json::Value;

mod common;
use builder::servers::{self, Ganesha, Nginx, Smbd, Sshd, TestCa};
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

const PASSWORD: &str = "Sm8-pass,word";

/// A guest on the user network with the source disk (`SRC`) and the target disk (`DST`).
fn vm_with(src: &Path, target: &Path) -> Vm {
    let mut vm = vm();
    vm.user_net = Some(UserNet::default());
    vm.disks.push(Disk::new(src, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(target, Bus::Virtio).serial("DST"));
    vm
}

/// In one boot: capture the demo source disk onto the share at `url`, verify the image there and
/// restore it onto a blank disk. Then on the host: `folder` (where the server keeps what the share
/// holds) has the finished image and no `.partial`, the image verifies against the source and the
/// restored disk, and both outcomes say the share was `mounted with …`. Returns what the guest
/// printed.
fn round_trip_through_share(
    url: &str,
    folder: &Path,
    mounted_with: &str,
    server_log: &dyn Fn() -> String,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = source_disk(dir.path());
    let target = dir.path().join("target.img");
    blank(&target, src.spec.size_mib);
    let run = run_chain(
        vm_with(&src.path, &target),
        &format!(
            "capture serial=SRC -o {url} --json ; verify {url} ; restore {url} serial=DST --yes --json"
        ),
    );
    assert_eq!(
        run.rc,
        0,
        "{}\nserver:\n{}",
        tail(&run.serial, 60),
        tail(&server_log(), 20)
    );
    let captured = &json_lines_with(&run.stdout, "root_hash")[0];
    let restored = &json_lines_with(&run.stdout, "bytes_written")[0];
    // The outcomes name the image without its password; `url` holds it.
    eprintln!("capture: {captured}\nrestore: {restored}");
    for outcome in [captured, restored] {
        assert!(
            outcome["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().contains(mounted_with)),
            "{outcome}"
        );
    }
    let image = folder.join("disk.rimg");
    assert!(image.exists(), "no image in {}", folder.display());
    assert!(!folder.join("disk.rimg.partial").exists());
    let v = verify_on_host(&image, Some(&src.path));
    assert!(v.ok, "{:?} {:?}", v.error, v.problems);
    assert_eq!(v.root_hash.as_deref(), captured["root_hash"].as_str());
    let v = verify_on_host(&image, Some(&target));
    assert!(
        v.ok,
        "the restored disk differs: {:?} {:?}",
        v.error, v.problems
    );
    run.stdout
}

#[test]
fn capture_onto_an_smb_share_and_restore_from_it() {
    let smb = Smbd::start(PASSWORD);
    // The comma in the password is percent-encoded in the URL.
    let url = format!(
        "smb://root:{}@10.0.2.2:{}/images/disk.rimg",
        PASSWORD.replace(',', "%2C"),
        smb.port
    );
    let stdout = round_trip_through_share(
        &url,
        &smb.share_dir,
        "mounted with SMB 3.1.1, encrypted",
        &|| smb.log_text(),
    );
    // What the rescue system printed never holds the password (the kernel's own echo of its command
    // line, before it, is the test's doing).
    assert!(!stdout.contains("Sm8-pass"), "{stdout}");
    // PID 1 hands the password to each command in RESCUE_PASSWORD, not on its command line (readable
    // in /proc by every process), so the commands show the URL without one.
    assert!(stdout.contains("smb://root@10.0.2.2"), "{stdout}");
}

#[test]
fn a_wrong_smb_password_is_named_and_no_image_is_claimed() {
    let smb = Smbd::start(PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let src = source_disk(dir.path());
    let mut vm = vm();
    vm.user_net = Some(UserNet::default());
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    let before = std::fs::read(&src.path).unwrap();
    let url = format!(
        "smb://root:Wrong-one@10.0.2.2:{}/images/disk.rimg",
        smb.port
    );
    let run = run_chain(vm, &format!("capture serial=SRC -o {url}"));
    assert_ne!(run.rc, 0);
    assert!(
        run.stdout.contains("refused the user name or password"),
        "{}",
        tail(&run.serial, 30)
    );
    assert!(!run.stdout.contains("Wrong-one"), "{}", run.stdout);
    assert!(std::fs::read_dir(&smb.share_dir).unwrap().next().is_none());
    assert_eq!(
        std::fs::read(&src.path).unwrap(),
        before,
        "the source changed"
    );
}

#[test]
fn capture_onto_an_nfs_export_and_restore_from_it() {
    let nfs = Ganesha::start();
    // The export's pseudo path, as NFSv4 clients see the server.
    let url = format!("nfs://10.0.2.2:{}/images/disk.rimg", nfs.port);
    round_trip_through_share(&url, &nfs.export_dir, "mounted with NFS 4.", &|| {
        nfs.log_text()
    });
}

#[test]
fn nfs_locations_that_fail_are_named_and_nothing_is_written() {
    let nfs = Ganesha::start();
    let squashing = Ganesha::start_squashing_root();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);
    let before = std::fs::read(&src.path).unwrap();
    let base = format!("nfs://10.0.2.2:{}", nfs.port);
    let squashed = format!("nfs://10.0.2.2:{}/images/disk.rimg", squashing.port);
    let closed = servers::free_port();
    for (cmd, says) in [
        (
            format!("capture serial=SRC -o {base}/wrong/disk.rimg"),
            format!(
                "{base}/wrong/disk.rimg: the server has no export /wrong (it offers /images); \
                 correct the path in the URL"
            ),
        ),
        (
            format!("restore {base}/images/missing.rimg serial=DST --yes"),
            format!(
                "{base}/images/missing.rimg: there is no image /images/missing.rimg on the server \
                 (/images is empty)"
            ),
        ),
        (
            format!("verify nfs://10.0.2.2:{closed}/images/disk.rimg"),
            format!(
                "nfs://10.0.2.2:{closed}/images/disk.rimg: 10.0.2.2:/ (NFS 4.2 / NFS 4.1 / NFS 4.0), \
                 10.0.2.2:/images (NFS 3): the server refused the connection"
            ),
        ),
        // Root on this machine is the anonymous user on that server.
        (
            format!("capture serial=SRC -o {squashed}"),
            format!(
                "cannot create the image {squashed}: Permission denied (os error 13); the NFS server \
                 does not let this machine write there as root: export the folder to it with \
                 no_root_squash, or choose another folder"
            ),
        ),
    ] {
        let run = run_chain(vm_with(&src.path, &target), &cmd);
        assert_ne!(run.rc, 0, "{cmd}: {}", tail(&run.serial, 30));
        assert!(
            run.stdout.contains(&says),
            "{cmd}: {}",
            tail(&run.serial, 30)
        );
    }
    for export in [&nfs.export_dir, &squashing.export_dir] {
        assert!(
            std::fs::read_dir(export).unwrap().next().is_none(),
            "something was written into {}",
            export.display()
        );
    }
    assert_eq!(
        std::fs::read(&src.path).unwrap(),
        before,
        "the source changed"
    );
    assert!(
        std::fs::read(&target).unwrap().iter().all(|&b| b == 0),
        "the target was written"
    );
}

#[test]
fn restore_from_http_and_https_onto_blank_disks() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let root = work.join("www");
    std::fs::create_dir_all(&root).unwrap();
    host_capture(&src.path, &root.join("disk.rimg"));
    let ca = TestCa::new();
    let http = Nginx::start(&root, None, PASSWORD);
    let https = Nginx::start(&root, Some(&ca), PASSWORD);
    let ca_drive = work.join("ca.img");
    ext4_drive(&ca_drive, 8);
    put_file(&ca_drive, &ca.ca_cert, "ca.pem");
    let (one, two) = (work.join("one.img"), work.join("two.img"));
    blank(&one, src.spec.size_mib);
    blank(&two, src.spec.size_mib);
    let mut vm = vm();
    vm.user_net = Some(UserNet::default());
    vm.disks.push(Disk::new(&one, Bus::Virtio).serial("ONE"));
    vm.disks.push(Disk::new(&two, Bus::Virtio).serial("TWO"));
    vm.disks
        .push(Disk::new(&ca_drive, Bus::Virtio).serial("CA"));
    let plain = format!("http://10.0.2.2:{}/disk.rimg", http.port);
    let secure = format!("https://10.0.2.2:{}/disk.rimg", https.port);
    let run = run_chain(
        vm,
        &format!(
            "restore {plain} serial=ONE --yes --json ; mount serial=CA /mnt/ca --read-only ; \
             restore {secure} serial=TWO --yes --json --ca-file /mnt/ca/ca.pem ; verify {secure}"
        ),
    );
    // The last command fails: without the test CA, the server's certificate is not trusted.
    assert_ne!(run.rc, 0, "{}", tail(&run.serial, 60));
    assert!(
        run.stdout.contains("certificate is not trusted") && run.stdout.contains("--ca-file"),
        "{}\nnginx:\n{}",
        tail(&run.serial, 60),
        tail(&https.log_text(), 20)
    );
    let restored = json_lines_with(&run.stdout, "bytes_written");
    assert_eq!(restored.len(), 2, "{}", tail(&run.serial, 60));
    for (r, url) in restored.iter().zip([&plain, &secure]) {
        assert_eq!(r["verified"], true, "{r}");
        let via = format!("read from {url} by range requests");
        assert!(
            r["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().ends_with(&via)),
            "{r}"
        );
    }
    let image = root.join("disk.rimg");
    for target in [&one, &two] {
        let v = verify_on_host(&image, Some(target));
        assert!(
            v.ok,
            "{} differs: {:?} {:?}",
            target.display(),
            v.error,
            v.problems
        );
    }
    eprintln!(
        "restore over HTTP: {} bytes sent for a {}-byte image (the precheck reads it once more)",
        http.bytes_sent(),
        std::fs::metadata(&image).unwrap().len()
    );
}

/// The image a guest captured onto a server is there under its name (no `.partial` left), holds the
/// source (with the root hash the capture reported), and the disk restored from it holds it too.
fn round_trip_holds(
    image: &std::path::Path,
    captured: &Value,
    source: &std::path::Path,
    target: &std::path::Path,
) {
    assert!(
        image.is_file(),
        "no image {} on the server",
        image.display()
    );
    let mut partial = image.as_os_str().to_owned();
    partial.push(".partial");
    assert!(
        !std::path::Path::new(&partial).exists(),
        "a .partial was left"
    );
    let v = verify_on_host(image, Some(source));
    assert!(v.ok, "{:?} {:?}", v.error, v.problems);
    assert_eq!(v.root_hash.as_deref(), captured["root_hash"].as_str());
    let v = verify_on_host(image, Some(target));
    assert!(
        v.ok,
        "the restored disk differs: {:?} {:?}",
        v.error, v.problems
    );
}

/// A small filesystem mounted on a folder for the length of a test (a share that fills up).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, mib: u64) -> Tmpfs {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a {mib} MiB tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Capture the big source onto the share with `rescue.cmd`; `during` runs once the capture is under
/// way. Returns what the guest printed and its status; the source must be unchanged.
fn capture_onto(smb: &mut Smbd, during: impl FnOnce(&mut Smbd)) -> (String, i32) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.img");
    big_source(&src, 256, 160);
    let before = std::fs::read(&src).unwrap();
    let mut vm = vm();
    vm.user_net = Some(UserNet::default());
    vm.disks.push(Disk::new(&src, Bus::Virtio).serial("SRC"));
    let url = format!(
        "smb://root:{}@10.0.2.2:{}/images/big.rimg",
        PASSWORD.replace(',', "%2C"),
        smb.port
    );
    vm.append = format!("rescue.cmd=\"capture serial=SRC -o {url} --json\"");
    let mut g = qemu_tests::Guest::boot(vm).unwrap();
    let begin = g
        .wait_for(rescue::init::CMD_BEGIN, qemu_tests::BOOT_TIMEOUT)
        .unwrap();
    g.wait_for_from("\"phase\":\"capture\"", begin, CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    during(smb);
    let (out, rc) = g
        .marked_output(CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!out.contains("Sm8-pass"), "{out}");
    assert_eq!(std::fs::read(&src).unwrap(), before, "the source changed");
    (out, rc)
}

#[test]
fn a_share_that_disappears_mid_capture_is_named_and_no_image_is_claimed() {
    let mut smb = Smbd::start(PASSWORD);
    let (out, rc) = capture_onto(&mut smb, |smb| {
        std::thread::sleep(std::time::Duration::from_secs(2));
        smb.stop();
    });
    assert_ne!(rc, 0, "{out}");
    eprintln!("server stopped mid-capture: {}", tail(&out, 3));
    assert!(
        out.contains("no image was left at smb://root@10.0.2.2")
            && out.contains("the server stopped answering"),
        "{out}"
    );
    assert!(
        !servers::in_share(&smb, "big.rimg").exists(),
        "an image was claimed"
    );
}

#[test]
fn a_full_share_is_named_and_no_image_is_claimed() {
    let mut smb = Smbd::start(PASSWORD);
    let _small = Tmpfs::mount(&smb.share_dir.clone(), 48);
    let (out, rc) = capture_onto(&mut smb, |_| {});
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("is full"), "{}", tail(&out, 20));
    assert!(!servers::in_share(&smb, "big.rimg").exists());
    assert!(
        !servers::in_share(&smb, "big.rimg.partial").exists(),
        "the partial image was left on the full share"
    );
}

#[test]
fn an_unknown_host_is_named_and_nothing_is_sent() {
    // A restricted network: QEMU's DHCP gives an address but no name server and no way out.
    let mut vm = vm();
    vm.user_net = Some(UserNet {
        restrict: true,
        ..Default::default()
    });
    vm.append = "rescue.net=dhcp".into();
    let run = run_chain(vm, "inspect smb://u:Secret-9@nas.invalid/images/a.rimg");
    assert_ne!(run.rc, 0);
    assert!(
        run.stdout
            .contains("smb://u@nas.invalid/images/a.rimg: cannot find the server"),
        "{}",
        tail(&run.serial, 20)
    );
    assert!(!run.stdout.contains("Secret-9"), "{}", run.stdout);
}

#[test]
fn capture_onto_sftp_and_restore_from_it() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);
    let keys = work.join("keys.img");
    ext4_drive(&keys, 8);
    put_file(&keys, &sshd.client_key, "id_ed25519");
    let mut vm = vm();
    vm.user_net = Some(UserNet::default());
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    vm.disks.push(Disk::new(&keys, Bus::Virtio).serial("KEYS"));
    let url = |fp: &str| {
        format!(
            "sftp://root@10.0.2.2:{}{}/disk.rimg?fingerprint={fp}",
            sshd.port,
            sshd.root_dir.display()
        )
    };
    let good = url(&sshd.fingerprint);
    let bad = url("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let key = "--identity /mnt/k/id_ed25519";
    let run = run_chain(
        vm,
        &format!(
            "mount serial=KEYS /mnt/k --read-only ; capture serial=SRC -o {good} {key} --json ; \
             restore {good} serial=DST --yes {key} --json ; verify {bad} {key}"
        ),
    );
    // The last command fails: the pinned key is not the server's.
    assert_ne!(run.rc, 0, "{}", tail(&run.serial, 60));
    assert!(
        run.stdout.contains("is NOT the one the URL pins"),
        "{}\nsshd:\n{}",
        tail(&run.serial, 60),
        tail(&sshd.log_text(), 20)
    );
    let captured = &json_lines_with(&run.stdout, "root_hash")[0];
    eprintln!("capture onto SFTP: {captured}");
    round_trip_holds(
        &sshd.root_dir.join("disk.rimg"),
        captured,
        &src.path,
        &target,
    );
}
