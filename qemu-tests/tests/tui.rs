//! The TUI end to end: boot the rescue system with a source disk, an ext4 image drive and a larger blank
//! disk, and drive the full-screen interface with keystrokes over the serial console, reading the screen
//! with a terminal emulator (vt100). Capture the source into an image on the image drive, check that
//! restoring onto the image drive is refused on screen, restore onto the blank disk, verify the image, clone
//! the source onto a second blank disk, unmount the image drive, power off, and check the restored and
//! the cloned disk on the host with independent tools. And images on an SMB share (Samba's smbd on the
//! host) as network locations, their URL and password typed over the serial console: DHCP asked for on
//! the network screen, a capture onto the share, a restore from it onto another disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use builder::qemu::{Bus, Disk, UserNet};
use builder::servers::{self, S3Server, Smbd};
use qemu_tests::{Guest, BOOT_TIMEOUT};

mod common;
use common::*;

#[test]
fn capture_restore_verify_and_clone_through_the_tui() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let image_drive = work.join("images.img");
    ext4_drive(&image_drive, 256);
    // Larger than the source, so the restore also moves the GPT backup to the new end; and its size
    // tells it apart on screen (kernel names follow probe order, which is not stable).
    let target = work.join("target.img");
    blank(&target, 200);
    // The clone's target: larger still, so it too is told apart by its size.
    let clone = work.join("clone.img");
    blank(&clone, 220);

    let mut vm = vm();
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks
        .push(Disk::new(&image_drive, Bus::Virtio).serial("IMG"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    vm.disks.push(Disk::new(&clone, Bus::Virtio).serial("CLN"));
    let booted = Instant::now();
    let mut g = Guest::boot(vm).unwrap_or_else(|e| panic!("{e:#}"));
    let from = g
        .wait_for(rescue::init::READY, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut s = Session { g, from };
    s.wait("Disks (4)", STEP);
    let to_ui = booted.elapsed().as_secs_f64();

    // Overview: select the source disk by its serial in the details pane.
    s.select_disk("SRC");

    // Capture: whole disk → the ext4 drive (the only usable destination) → default name → start.
    let started = Instant::now();
    let (screen, result) = s.capture_whole_disk();
    let dest = line_with(&screen, "> ").to_string();
    assert!(
        dest.contains("ext4"),
        "the first destination is not the ext4 drive:\n{screen}"
    );
    assert!(
        screen.contains("it is on the disk being captured"),
        "the source's own filesystems are not refused as destinations:\n{screen}"
    );
    let screen = result;
    let capture_seconds = started.elapsed().as_secs_f64();
    assert!(screen.contains("Root hash:"), "{screen}");
    assert!(screen.contains("Log written to"), "{screen}");
    s.send(ENTER);
    s.wait("Disks (4)", STEP);

    // Restore: the drive (mounted by the capture; the source's ext4 is listed too but holds no images) →
    // the image → the whole image → targets.
    s.restore_to_targets("256.0 MiB");
    // The image drive (256 MiB) is refused, and says why on screen.
    s.select("256.0 MiB");
    s.send(ENTER);
    let screen = s.wait("refused:", STEP);
    assert!(
        screen.contains("the disk being overwritten") || screen.contains("-- refused"),
        "{screen}"
    );
    let refusal = line_with(&screen, "refused:").to_string();
    assert!(refusal.contains("the image"), "{screen}");
    // The whole reason and its advice are on the 80x24 serial screen, wrapped, not cut.
    let words = screen.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("the disk being overwritten; put the image on another disk"),
        "the refusal is cut:\n{screen}"
    );
    // The blank 200 MiB disk is accepted: type its name to confirm.
    let restore_seconds = s.restore_onto("200.0 MiB", "Disks (4)");

    // Verify: the image drive → the image → every chunk and the root hash, on screen.
    s.send("v");
    s.wait("Step 1 of 2", STEP);
    s.select("256.0 MiB");
    s.send(ENTER);
    s.wait("Step 2 of 2", STEP);
    s.send(ENTER);
    let screen = s.wait("SUCCESS", JOB_TIMEOUT);
    assert!(
        screen.contains("Every chunk and the root hash check out"),
        "{screen}"
    );
    s.send(ENTER);
    s.wait("Disks (4)", STEP);

    // Clone: the source → the 220 MiB disk, confirmed by typing its name.
    s.select_disk("SRC");
    s.send("x");
    s.wait("Step 1 of 2", STEP);
    s.select("220.0 MiB");
    s.send(ENTER);
    let (screen, clone_seconds) = s.confirm_destruction();
    assert!(screen.contains("read back and verified"), "{screen}");
    s.send(ENTER);
    s.wait("Disks (4)", STEP);

    // The image drive the capture mounted is unmounted from the overview (u), flushed first.
    s.select_disk("IMG");
    s.send("u");
    let screen = s.wait("the drive can be removed", STEP);
    assert!(screen.contains("unmounted"), "{screen}");

    // Power off from the menu: drives are flushed and unmounted.
    s.power_off();
    assert!(
        s.g.output().contains("syncing disks and powering off"),
        "power off says nothing while it flushes:\n{}",
        s.g.tail(20)
    );
    eprintln!(
        "TUI under TCG: UI after {to_ui:.1} s; capture (wizard keys and job) {capture_seconds:.1} s; restore with read-back \
         {restore_seconds:.1} s; clone with read-back {clone_seconds:.1} s (wall, as a person waits)"
    );

    // On the host: the image drive is clean and holds the image and its log; the target is the source.
    let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(&image_drive));
    assert!(ok, "the image drive's ext4 is not clean:\n{out}");
    let (_, listing) = tool(
        Command::new("debugfs")
            .args(["-R", "ls -l /images"])
            .arg(&image_drive),
    );
    assert!(
        listing.contains(".rimg.log"),
        "no log beside the image:\n{listing}"
    );
    assert!(
        !listing.contains(".partial"),
        "a .partial file was left:\n{listing}"
    );
    let want = host_report(&src.path);
    for (copy, what) in [(&target, "restored"), (&clone, "cloned")] {
        let (_, out) = tool(Command::new("sgdisk").arg("-v").arg(copy));
        assert!(
            out.contains("No problems found"),
            "sgdisk -v on the {what} disk:\n{out}"
        );
        assert_eq!(
            host_report(copy)["partitions"],
            want["partitions"],
            "{what} partitions differ"
        );
        for (e, p) in src.expected.iter().zip(&src.spec.parts) {
            let part = work.join(format!("{what}-part{}.img", e.number));
            extract(copy, e, &part);
            check_filesystem(p.fs, &part, &src.content, work);
            std::fs::remove_file(&part).unwrap();
        }
    }
}

const PASSWORD: &str = "Sm8-pass,word";

/// Boot on the user network with the demo source disk (serial SRC) and a blank 200 MiB target (DST,
/// told apart from the source by its size), up to the overview.
fn boot_networked(dir: &std::path::Path) -> (Session, Source, std::path::PathBuf) {
    let src = source_disk(dir);
    let target = dir.join("target.img");
    blank(&target, 200);
    let mut vm = vm();
    vm.user_net = Some(UserNet::default());
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    (Session::boot(vm, "Disks (2)"), src, target)
}

#[test]
fn network_screen_then_capture_onto_and_restore_from_an_smb_share_through_the_tui() {
    let smb = Smbd::start(PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (mut s, src, target) = boot_networked(dir.path());

    // The network screen: the NIC with its driver, no address yet; d takes QEMU's DHCP lease.
    s.send("n");
    let screen = s.wait("Network links (1)", STEP);
    assert!(
        line_with(&screen, "virtio_net").contains("eth0"),
        "{screen}"
    );
    s.send("d");
    let screen = s.wait("done: eth0 up", Duration::from_secs(90));
    assert!(
        screen.contains("eth0: DHCP lease 10.0.2.15/24 from 10.0.2.2"),
        "{screen}"
    );
    let screen = s.wait("10.0.2.15/24", STEP);
    eprintln!("the network screen after DHCP:\n{screen}");
    assert!(
        line_with(&screen, "10.0.2.15/24").contains("carrier yes"),
        "{screen}"
    );
    s.send(ESC);
    s.wait("Disks (2)", STEP);

    // Capture: whole disk → Network location → URL (no .rimg: it is added) and password → summary.
    s.capture_to_network_location();
    s.type_location(&format!("smb://root@10.0.2.2:{}/images/pc/tui", smb.port));
    let shown = format!("smb://root:***@10.0.2.2:{}/images/pc/tui.rimg", smb.port);
    let screen = s.wait("Step 4 of 4", STEP);
    assert!(screen.contains(&shown), "{screen}");
    assert!(
        screen.contains("unknown until the share is mounted"),
        "{screen}"
    );
    let started = Instant::now();
    s.send(ENTER);
    let screen = s.wait("SUCCESS", JOB_TIMEOUT);
    let seconds = started.elapsed().as_secs_f64();
    assert!(screen.contains(&format!("Image: {shown}")), "{screen}");
    assert!(screen.contains("Root hash:"), "{screen}");
    s.send(ENTER);
    s.wait("Disks (2)", STEP);

    // Restore from the share: Network location → the URL and password → the image read there → the
    // 200 MiB disk, confirmed by its name.
    s.restore_from_network_location();
    s.type_location(&format!(
        "smb://root@10.0.2.2:{}/images/pc/tui.rimg",
        smb.port
    ));
    let screen = s.wait("Step 3 of 5", JOB_TIMEOUT);
    assert!(screen.contains(&shown), "{screen}");
    s.send(ENTER);
    s.wait("Step 4 of 5", STEP);
    let restore_seconds = s.restore_onto("200.0 MiB", "Disks (2)");
    s.power_off();
    eprintln!("TUI capture onto SMB under TCG: {seconds:.1} s from Enter to SUCCESS; restore from it {restore_seconds:.1} s");

    // Nothing the guest printed holds the password (the field shows * and the URL ***).
    let serial = s.g.output();
    assert!(
        !serial.contains("Sm8-pass"),
        "the password is in the serial log"
    );
    // On the host: the image in the share (the folder made for it), complete, and the source's copy.
    let image = servers::in_share(&smb, "pc/tui.rimg");
    assert!(image.exists(), "no image in the share");
    assert!(!servers::in_share(&smb, "pc/tui.rimg.partial").exists());
    let log = std::fs::read_to_string(servers::in_share(&smb, "pc/tui.rimg.log")).unwrap();
    assert!(!log.contains("Sm8-pass"), "{log}");
    let v = verify_on_host(&image, Some(&src.path));
    assert!(v.ok, "{:?} {:?}", v.error, v.problems);
    let v = verify_on_host(&image, Some(&target));
    assert!(
        v.ok,
        "the restored disk differs: {:?} {:?}",
        v.error, v.problems
    );
}

/// A repository on an S3 server through the interface: the capture wizard, given `URL::NAME` as the
/// network location with the secret key as its password, finds no repository there and makes one,
/// encrypted (`e` on the summary, the passphrase typed twice); the restore wizard, given the
/// repository's URL, says it is encrypted, refuses a wrong passphrase on screen, lists the snapshot
/// once the right one is typed, and restores it onto a blank disk. Neither the secret nor the
/// passphrase is ever on the serial console.
#[test]
fn an_encrypted_repository_on_s3_through_the_tui() {
    const PASSPHRASE: &str = "Tui-vault-9";
    let server = S3Server::start();
    server.create_bucket("tui");
    let port = server.endpoint.rsplit(':').next().unwrap();
    let repo_at = |host: &str| {
        format!(
            "s3://{}@tui/site?endpoint=http://{host}:{port}&region={}",
            server.access_key, server.region
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut s, src, target) = boot_networked(dir.path());

    // Capture: whole disk → Network location → URL::pc and the secret key → a new repository.
    s.capture_to_network_location();
    s.send(&format!("{}::pc", repo_at("10.0.2.2")));
    s.send(TAB);
    s.send(&server.secret_key);
    s.send(ENTER);
    let screen = s.wait("e encrypts it", JOB_TIMEOUT);
    assert!(screen.contains("new, made by this capture"), "{screen}");
    s.send("e");
    s.wait("will be encrypted", STEP);
    s.send(PASSPHRASE);
    s.send(ENTER);
    s.send(PASSPHRASE);
    let screen = s.wait(
        &format!("Again:      {}", "*".repeat(PASSPHRASE.len())),
        STEP,
    );
    assert!(!screen.contains(PASSPHRASE), "{screen}");
    s.send(ENTER);
    let screen = s.wait("encrypted with the passphrase typed", STEP);
    assert!(screen.contains("Step 4 of 4"), "{screen}");
    let started = Instant::now();
    s.send(ENTER);
    let screen = s.wait("SUCCESS", JOB_TIMEOUT);
    let capture_seconds = started.elapsed().as_secs_f64();
    assert!(screen.contains("Root hash:"), "{screen}");
    s.send(ENTER);
    s.wait("Disks (2)", STEP);

    // Restore: Network location → the repository's URL → its passphrase (a wrong one first) → the
    // snapshot → the whole image → the 200 MiB disk.
    s.restore_from_network_location();
    s.send(&repo_at("10.0.2.2"));
    s.send(TAB);
    s.send(&server.secret_key);
    s.send(ENTER);
    s.wait("is encrypted", JOB_TIMEOUT);
    s.send("not the passphrase");
    s.send(ENTER);
    s.wait("wrong passphrase", JOB_TIMEOUT);
    s.send(PASSPHRASE);
    s.send(ENTER);
    let screen = s.wait("pc@", JOB_TIMEOUT);
    assert!(screen.contains("Step 2 of 5: the image"), "{screen}");
    s.send(ENTER);
    s.wait("Step 3 of 5", JOB_TIMEOUT);
    s.send(ENTER);
    s.wait("Step 4 of 5", STEP);
    let restore_seconds = s.restore_onto("200.0 MiB", "Disks (2)");
    s.power_off();
    eprintln!(
        "TUI capture into an encrypted S3 repository under TCG: {capture_seconds:.1} s; restore {restore_seconds:.1} s"
    );
    let serial = s.g.output();
    assert!(
        !serial.contains(PASSPHRASE),
        "the passphrase is in the serial log"
    );
    assert!(
        !serial.contains(&server.secret_key),
        "the secret is in the serial log"
    );

    // On the host: the repository is encrypted (nothing listed without the passphrase), the snapshot
    // verifies with it, and the restored disk has the source's partitions.
    use rescue::ops::{self, Location, Secret};
    let host_repo = format!(
        "s3://{}:{}@tui/site?endpoint={}&region={}",
        server.access_key, server.secret_key, server.endpoint, server.region
    );
    let repo = Location::parse(&host_repo).unwrap();
    let state = ops::look_at_repo(&repo, &Default::default()).unwrap();
    assert!(
        state.exists && state.encrypted && !state.unlocked,
        "{state:?}"
    );
    let Location::Snapshot(mut snap) = Location::parse(&format!("{host_repo}::pc")).unwrap() else {
        panic!()
    };
    snap.passphrase = Some(Secret::new(PASSPHRASE));
    let req = ops::Request::Verify(ops::VerifySpec {
        image: Location::Snapshot(snap),
        against: None,
    });
    let v = ops::run(
        &req,
        &Default::default(),
        &Default::default(),
        ops::Control::default(),
    );
    assert!(
        v.ok,
        "{:?} {:?}\n{}",
        v.error,
        v.problems,
        server.log_text()
    );
    let (want, have) = (host_report(&src.path), host_report(&target));
    assert_eq!(have["partitions"], want["partitions"]);
}

impl Session {
    /// From the overview: capture the whole SRC disk, to the *Network location* row, up to its URL step.
    fn capture_to_network_location(&mut self) {
        self.select_disk("SRC");
        self.send("c");
        self.wait("Step 1 of 4", STEP);
        self.send(ENTER);
        self.wait("Step 2 of 4", STEP);
        self.select("Network location");
        self.send(ENTER);
        self.wait("Step 3 of 4", STEP);
    }

    /// From the overview: restore from the *Network location* row, up to its URL step.
    fn restore_from_network_location(&mut self) {
        self.send("r");
        self.wait("Step 1 of 5", STEP);
        self.select("Network location");
        self.send(ENTER);
        self.wait("Step 2 of 5", STEP);
    }

    /// On a network location step: type `url`, Tab, the password (checked to show as `*` only), Enter.
    fn type_location(&mut self, url: &str) {
        self.send(url);
        self.send(TAB);
        self.send(PASSWORD);
        let stars = format!("Password: {}", "*".repeat(PASSWORD.len()));
        let screen = self.wait(&stars, STEP);
        assert!(!screen.contains("Sm8"), "{screen}");
        self.send(ENTER);
    }
}
