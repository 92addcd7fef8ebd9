//! A room of machines deployed with no stick and no keyboard: guests netbooted through iPXE from the
//! `builder netboot` files (with `--job URL`) fetch the same job from nginx on the host (10.0.2.2 in the
//! guests), restore the same image it names from the same server onto the one disk its rules select,
//! send their result files back (WebDAV `PUT`) and power off. Every result says success and every disk
//! verifies on the host. Prints, for one guest and for three at once, the time per guest and the bytes
//! the server sent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::time::{Duration, Instant};

use builder::image::write_ipxe_script;
use builder::qemu::{Bus, Disk, Vm};
use builder::servers::Nginx;
use qemu_tests::{boot_files, Guest};

mod common;
use common::*;

/// Boot `n` guests from the netboot files in `tftp` at once; each gets a blank disk (serial `FLEETi`)
/// and must power off on its own. Returns each guest's time from start to power off.
fn deploy(n: usize, tftp: &Path, size_mib: u64, work: &Path, tag: &str) -> Vec<f64> {
    let files = boot_files();
    let mut guests = Vec::new();
    for i in 0..n {
        let disk = work.join(format!("{tag}-{i}.img"));
        blank(&disk, size_mib);
        let mut vm = Vm::new(&files.vmlinuz, &files.initramfs);
        vm.netboot = Some(tftp.to_path_buf());
        vm.disks
            .push(Disk::new(&disk, Bus::Virtio).serial(&format!("FLEET{tag}{i}")));
        guests.push((Guest::boot(vm).unwrap(), disk));
    }
    let start = Instant::now();
    let mut times = vec![None; n];
    while times.iter().any(Option::is_none) && start.elapsed() < Duration::from_secs(600) {
        for (t, (g, _)) in times.iter_mut().zip(&mut guests) {
            if t.is_none() && g.exited() {
                *t = Some(start.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (g, _) in &mut guests {
        // Fails with the serial log when a guest did not power off (or QEMU failed).
        g.wait_exit(Duration::ZERO)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let times: Vec<f64> = times.into_iter().flatten().collect();
    // They powered off by themselves, so their jobs succeeded (a failed job waits for Enter).
    times
}

#[test]
fn netbooted_machines_fetch_one_job_and_restore_one_image_from_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let root = work.join("www");
    std::fs::create_dir_all(root.join("deploy")).unwrap();
    host_capture(&src.path, &root.join("disk.rimg"));
    let http = Nginx::start(&root, None, "unused");
    let base = format!("http://10.0.2.2:{}", http.port);
    std::fs::write(
        root.join("deploy/job.toml"),
        format!(
            "action = \"restore\"\n\
             after = \"poweroff\"\n\
             results = \"{base}/results/\"\n\
             [image]\n\
             url = \"{base}/disk.rimg\"\n\
             [target]\n\
             serial = \"FLEET*\"\n"
        ),
    )
    .unwrap();
    let tftp = work.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    let files = boot_files();
    std::fs::copy(&files.vmlinuz, tftp.join(builder::boot::ipxe::KERNEL_NAME)).unwrap();
    std::fs::copy(
        &files.initramfs,
        tftp.join(builder::boot::ipxe::INITRD_NAME),
    )
    .unwrap();
    write_ipxe_script(&tftp, true, &format!("rescue.job={base}/deploy/job.toml")).unwrap();

    let image = root.join("disk.rimg");
    let image_len = std::fs::metadata(&image).unwrap().len();
    let mut figures = Vec::new();
    for (n, tag) in [(1, "a"), (3, "b")] {
        let before = http.bytes_sent();
        let times = deploy(n, &tftp, src.spec.size_mib, work, tag);
        let sent = http.bytes_sent() - before;
        figures.push((n, times, sent));
        // Every machine's result is on the server, and says success; every disk holds the image.
        for i in 0..n {
            let serial = format!("FLEET{tag}{i}");
            let results: Vec<_> = std::fs::read_dir(root.join("results"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains(&serial))
                .collect();
            assert_eq!(
                results.len(),
                1,
                "{serial}: {results:?}\n{}",
                http.log_text()
            );
            let result: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&results[0]).unwrap()).unwrap();
            assert_eq!(result["ok"], true, "{result}");
            assert_eq!(result["verified"], true, "{result}");
            let disk = work.join(format!("{tag}-{i}.img"));
            let v = verify_on_host(&image, Some(&disk));
            assert!(v.ok, "{serial}: {:?} {:?}", v.error, v.problems);
        }
    }
    for (n, times, sent) in &figures {
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.1} s")).collect();
        eprintln!(
            "fleet of {n}: boot to power off per guest {}; server sent {:.1} MB ({:.2}× the {:.1} MB image \
             per guest; the boot files themselves come over QEMU's TFTP)",
            shown.join(", "),
            *sent as f64 / 1e6,
            *sent as f64 / (*n as f64 * image_len as f64),
            image_len as f64 / 1e6
        );
    }
}
