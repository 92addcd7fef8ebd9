//! `rescue export --format`: images written as virtual machines' disks, on the host CLI. Every format is
//! clean for `qemu-img check` (where QEMU checks it) and equal, for `qemu-img compare`, to a raw restore of
//! the same image; a partition exports alone or, with `--as-disk`, inside its disk; a VM disk converts to
//! another format; a format's size limit, an existing output and a damaged image are refused, leaving no
//! file behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use builder::fixtures;

const FORMATS: [&str; 8] = [
    "raw",
    "vhd",
    "vhd-fixed",
    "vhdx",
    "vmdk",
    "vmdk-stream",
    "vdi",
    "qcow2",
];

fn qemu_name(f: &str) -> &str {
    match f {
        "vhd" | "vhd-fixed" => "vpc",
        "vmdk-stream" => "vmdk",
        other => other,
    }
}

fn qemu_img(args: &[&str]) -> (bool, String) {
    builder::checks::tool(Command::new("qemu-img").args(args))
}

/// `file` (in `format`) is clean and reads as `raw`.
fn same_as(file: &Path, format: &str, raw: &Path) {
    let f = qemu_name(format);
    if !matches!(f, "raw" | "vpc") {
        let (ok, says) = qemu_img(&["check", "-f", f, s(file)]);
        assert!(
            ok && !says.contains("ERROR"),
            "{format}: qemu-img check:\n{says}"
        );
    }
    let (same, says) = qemu_img(&["compare", "-f", f, "-F", "raw", s(file), s(raw)]);
    assert!(
        same,
        "{format}: qemu-img compare with the raw restore: {says}"
    );
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn every_format_equals_the_raw_restore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, spec) in [("gpt", fixtures::demo_gpt()), ("mbr", fixtures::demo_mbr())] {
        let src = d.join(format!("{name}.raw"));
        fixtures::create_disk(&src, &spec).unwrap();
        let image = d.join(format!("{name}.rimg"));
        let (rc, o) = rescue(&["capture", s(&src), "-o", s(&image)]);
        assert_eq!(rc, 0, "{o}");
        let restored = d.join(format!("{name}-restored.raw"));
        std::fs::File::create(&restored)
            .unwrap()
            .set_len(std::fs::metadata(&src).unwrap().len())
            .unwrap();
        let (rc, o) = rescue(&["restore", s(&image), s(&restored), "--yes"]);
        assert_eq!(rc, 0, "{o}");
        let mut outputs = FORMATS
            .iter()
            .map(|f| (f.to_string(), vec![]))
            .collect::<Vec<_>>();
        outputs.push(("qcow2".into(), vec!["--compress", "zlib"]));
        outputs.push(("qcow2".into(), vec!["--compress", "zstd"]));
        for (k, (format, extra)) in outputs.iter().enumerate() {
            let out = d.join(format!("{name}-{k}.{format}"));
            let mut args = vec![
                "export",
                s(&image),
                "--format",
                format,
                "-o",
                s(&out),
                "--json",
            ];
            args.extend(extra.iter().copied());
            let (rc, o, e) = rescue_split(&args);
            assert_eq!(rc, 0, "{format} {extra:?}: {o}{e}");
            let j = json(&o);
            assert_eq!(j["verified"], true, "{j}");
            assert_eq!(j["what"], "the disk", "{j}");
            same_as(&out, format, &restored);
            std::fs::remove_file(&out).unwrap();
        }
    }
}

#[test]
fn partitions_export_alone_or_inside_their_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("gpt.raw");
    let expected = fixtures::create_disk(&src, &fixtures::demo_gpt()).unwrap();
    let size = std::fs::metadata(&src).unwrap().len();
    let whole = d.join("whole.rimg");
    let (rc, o) = rescue(&["capture", s(&src), "-o", s(&whole)]);
    assert_eq!(rc, 0, "{o}");
    let restored = d.join("restored.raw");
    std::fs::File::create(&restored)
        .unwrap()
        .set_len(size)
        .unwrap();
    let (rc, o) = rescue(&["restore", s(&whole), s(&restored), "--yes"]);
    assert_eq!(rc, 0, "{o}");

    // `--partition 2` of a whole-disk image: the partition's bytes, from its first.
    let e = &expected[1];
    let part = d.join("part2.raw");
    builder::checks::extract(&restored, e, &part);
    let out = d.join("p2.vhdx");
    let (rc, o, err) = rescue_split(&[
        "export",
        s(&whole),
        "--format",
        "vhdx",
        "--partition",
        "2",
        "-o",
        s(&out),
        "--json",
    ]);
    assert_eq!(rc, 0, "{o}{err}");
    assert_eq!(json(&o)["what"], "partition 2");
    assert_eq!(json(&o)["disk_bytes"], e.size_bytes);
    same_as(&out, "vhdx", &part);

    // An image of partition 2 alone exports that partition by default, and its disk with --as-disk.
    let only = d.join("only2.rimg");
    let (rc, o) = rescue(&["capture", s(&src), "--partition", "2", "-o", s(&only)]);
    assert_eq!(rc, 0, "{o}");
    let out = d.join("only.qcow2");
    let (rc, o, err) = rescue_split(&[
        "export",
        s(&only),
        "--format",
        "qcow2",
        "-o",
        s(&out),
        "--json",
    ]);
    assert_eq!(rc, 0, "{o}{err}");
    assert_eq!(json(&o)["what"], "partition 2");
    same_as(&out, "qcow2", &part);
    let out = d.join("only-disk.qcow2");
    let (rc, o, err) = rescue_split(&[
        "export",
        s(&only),
        "--format",
        "qcow2",
        "--as-disk",
        "-o",
        s(&out),
        "--json",
    ]);
    assert_eq!(rc, 0, "{o}{err}");
    assert_eq!(json(&o)["disk_bytes"], size);
    // The disk's tables and partition 2 at its place; the other partitions were not captured.
    let as_raw = d.join("only-disk.raw");
    let (ok, says) = qemu_img(&["convert", "-f", "qcow2", "-O", "raw", s(&out), s(&as_raw)]);
    assert!(ok, "{says}");
    let got = d.join("got2.raw");
    builder::checks::extract(&as_raw, e, &got);
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&part).unwrap());
    let (ok, says) = builder::checks::tool(Command::new("sgdisk").arg("-v").arg(&as_raw));
    assert!(ok && says.contains("No problems found"), "{says}");

    // A partition the image does not hold is named with those it does.
    let (rc, o) = rescue(&[
        "export",
        s(&only),
        "--format",
        "raw",
        "--partition",
        "1",
        "-o",
        s(&d.join("x.raw")),
    ]);
    assert_ne!(rc, 0);
    assert!(
        o.contains("no partition 1") && o.contains("partition 2"),
        "{o}"
    );
    assert!(!d.join("x.raw").exists() && !d.join("x.raw.partial").exists());
}

#[test]
fn a_vm_disk_converts_to_another_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("disk.raw");
    fixtures::create_disk(&raw, &fixtures::demo_gpt()).unwrap();
    let vm = d.join("vm.qcow2");
    let (ok, says) = qemu_img(&["convert", "-c", "-O", "qcow2", s(&raw), s(&vm)]);
    assert!(ok, "{says}");
    let out = d.join("vm.vhdx");
    let (rc, o) = rescue(&["export", s(&vm), "--format", "vhdx", "-o", s(&out)]);
    assert_eq!(rc, 0, "{o}");
    same_as(&out, "vhdx", &raw);
    let (rc, o) = rescue(&[
        "export",
        s(&vm),
        "--format",
        "vdi",
        "--partition",
        "1",
        "-o",
        s(&d.join("p.vdi")),
    ]);
    assert_ne!(rc, 0);
    assert!(o.contains("exported whole"), "{o}");
}

#[test]
fn refusals_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A 2.5 TiB disk (sparse) with one small partition: too large for VHD.
    let big = d.join("big.raw");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(5 << 39)
        .unwrap();
    let (ok, says) = builder::checks::tool(
        Command::new("sgdisk")
            .args(["-n1:2048:+8M", "-t1:8300"])
            .arg(&big),
    );
    assert!(ok, "{says}");
    let image = d.join("big.rimg");
    let (rc, o) = rescue(&["capture", s(&big), "-o", s(&image)]);
    assert_eq!(rc, 0, "{o}");
    let out = d.join("big.vhd");
    let (rc, o) = rescue(&["export", s(&image), "--format", "vhd", "-o", s(&out)]);
    assert_ne!(rc, 0);
    assert!(
        o.contains("holds at most") && o.contains("vhdx or qcow2"),
        "{o}"
    );
    assert!(!out.exists() && !d.join("big.vhd.partial").exists());
    // It fits a VHDX, and reads back as the disk.
    let (rc, o) = rescue(&[
        "export",
        s(&image),
        "--format",
        "vhdx",
        "-o",
        s(&d.join("big.vhdx")),
    ]);
    assert_eq!(rc, 0, "{o}");

    // --compress is qcow2's.
    let (rc, o) = rescue(&[
        "export",
        s(&image),
        "--format",
        "vdi",
        "--compress",
        "zstd",
        "-o",
        s(&d.join("c.vdi")),
    ]);
    assert_ne!(rc, 0);
    assert!(o.contains("--compress"), "{o}");
    assert!(!d.join("c.vdi").exists() && !d.join("c.vdi.partial").exists());

    // An existing file is never replaced.
    let taken = d.join("taken.qcow2");
    std::fs::write(&taken, b"keep me").unwrap();
    let (rc, o) = rescue(&["export", s(&image), "--format", "qcow2", "-o", s(&taken)]);
    assert_ne!(rc, 0);
    assert!(o.contains("already exists"), "{o}");
    assert_eq!(std::fs::read(&taken).unwrap(), b"keep me");

    // A damaged image: the chunk is named, nothing is left.
    let src = d.join("gpt.raw");
    fixtures::create_disk(&src, &fixtures::demo_gpt()).unwrap();
    let image = d.join("gpt.rimg");
    let (rc, o) = rescue(&["capture", s(&src), "-o", s(&image)]);
    assert_eq!(rc, 0, "{o}");
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&image, &bytes).unwrap();
    let out = d.join("damaged.qcow2");
    let (rc, o) = rescue(&["export", s(&image), "--format", "qcow2", "-o", s(&out)]);
    assert_ne!(rc, 0);
    assert!(o.contains("chunk") && o.contains("nothing was left"), "{o}");
    assert!(!out.exists() && !d.join("damaged.qcow2.partial").exists());
}
