//! `rescue files IMAGE ls|get` on the host CLI. One GPT disk holds ext4 (mkfs.ext4 -d), FAT32 (mkfs.vfat
//! and mcopy), exFAT (mkfs.exfat, exfat-fuse through a loop device) and NTFS (mkntfs, ntfs-3g, with an
//! alternate data stream), each filled from a generated tree; the disk is captured into an image of ours
//! and converted to qcow2. For the raw disk, the image and the qcow2 file, and each partition: every
//! folder lists what the source holds, `get /` gives back the same tree (content, sizes, modification
//! times), one file from the middle comes out alone, and errors (a missing path, a partition that does
//! not exist, no partition named on a disk of four) say what happened, where, and what to do.
//! Needs root (loop devices, FUSE), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::collections::BTreeSet;
use std::fs::{self, File};

use builder::fixtures::noise;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Runs `cmd` and fails the test with its output unless it succeeds.
fn sh(cmd: &mut Command) -> String {
    let (ok, out) = builder::checks::tool(cmd.env("LC_ALL", "C.UTF-8").env("TZ", "UTC"));
    assert!(ok, "{cmd:?}:\n{out}");
    out
}

/// Even whole seconds: what every filesystem here keeps exactly (FAT has 2 s steps).
fn stamp(k: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + k * 86_402)
}

fn set_mtime(p: &Path, t: SystemTime) {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    sh(Command::new("touch").arg(format!("-d@{secs}")).arg(p));
}

const BIG: usize = 5 << 20;
/// The file `get` copies alone.
const MIDDLE: &str = "docs/reports/2017/middle.bin";

/// The source tree: nested folders, an empty file and folder, a file of several MiB, odd names, and
/// (where the filesystem has them) a symbolic link.
fn tree(root: &Path, symlink: bool) {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("README.TXT", b"files inside an image\n".to_vec()),
        ("empty.bin", Vec::new()),
        ("big.bin", noise(BIG, 1)),
        (MIDDLE, noise(300_001, 2)),
        ("docs/reports/2017/notes.txt", b"quarterly\n".to_vec()),
        ("docs/a/b/c/d/deep.txt", b"deep\n".to_vec()),
        (
            "Odd names/spaces and ünïcödé ✓.txt",
            "ü\n".as_bytes().to_vec(),
        ),
        (
            "Odd names/quotes 'single' & (parens) #1.txt",
            b"q\n".to_vec(),
        ),
        (
            "Odd names/A long name, well beyond what 8.3 allows.data",
            noise(4097, 3),
        ),
    ];
    for (k, (rel, data)) in files.iter().enumerate() {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        set_mtime(&p, stamp(k as u64));
    }
    fs::create_dir_all(root.join("empty folder")).unwrap();
    if symlink {
        std::os::unix::fs::symlink(
            "../docs/reports/2017/notes.txt",
            root.join("Odd names/link"),
        )
        .unwrap();
    }
}

/// A loop device over `img` with a FUSE filesystem mounted from it, undone when dropped.
struct Mounted {
    dir: PathBuf,
    dev: String,
}

impl Mounted {
    fn new(img: &Path, dir: &Path, program: &str, opts: &[&str]) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let dev = attach_loop(img);
        let m = Mounted {
            dir: dir.to_path_buf(),
            dev,
        };
        sh(Command::new(program).args(opts).arg(&m.dev).arg(dir));
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Copies the tree's entries into the mounted folder, keeping their times.
fn copy_in(src: &Path, dst: &Path) {
    for e in fs::read_dir(src).unwrap() {
        sh(Command::new("cp")
            .args(["-r", "--no-dereference", "--preserve=timestamps"])
            .arg(e.unwrap().path())
            .arg(dst));
    }
}

struct Part {
    number: u32,
    fs: &'static str,
    /// The source tree it was filled from.
    src: PathBuf,
    /// Names the filesystem adds to its root.
    extra_root: &'static [&'static str],
}

const MIB: u64 = 1 << 20;
const SIZES: [u64; 4] = [40, 48, 40, 48];

/// Makes one filesystem of `SIZES[i]` MiB from its tree; returns its file.
fn filesystem(dir: &Path, i: usize, src: &Path) -> PathBuf {
    let img = dir.join(format!("p{}.img", i + 1));
    File::create(&img).unwrap().set_len(SIZES[i] * MIB).unwrap();
    match i {
        0 => {
            sh(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(src)
                .arg(&img));
        }
        1 => {
            sh(Command::new("mkfs.vfat")
                .args(["-F", "32", "-s", "1"])
                .arg(&img));
            let mut c = Command::new("mcopy");
            c.arg("-i").arg(&img).args(["-s", "-m"]);
            for e in fs::read_dir(src).unwrap() {
                c.arg(e.unwrap().path());
            }
            sh(c.arg("::"));
        }
        2 => {
            sh(Command::new("mkfs.exfat").arg(&img));
            let m = Mounted::new(&img, &dir.join("mnt"), "mount.exfat-fuse", &[]);
            copy_in(src, &m.dir);
        }
        _ => {
            sh(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(&img));
            let m = Mounted::new(
                &img,
                &dir.join("mnt"),
                "ntfs-3g",
                &["-o", "streams_interface=windows"],
            );
            copy_in(src, &m.dir);
            fs::write(m.dir.join("README.TXT:alt"), b"a second stream\n").unwrap();
            set_mtime(&m.dir.join("README.TXT"), stamp(0));
        }
    }
    img
}

/// The GPT disk with the four filesystems, and what each was made from.
fn fixture(dir: &Path) -> (PathBuf, Vec<Part>) {
    let kinds = ["ext4", "FAT32", "exFAT", "NTFS"];
    let disk = dir.join("disk.raw");
    let total: u64 = SIZES.iter().sum::<u64>() + 2;
    File::create(&disk).unwrap().set_len(total * MIB).unwrap();
    let mut c = Command::new("sgdisk");
    let mut start = 2048u64;
    let mut parts = Vec::new();
    for (i, size) in SIZES.iter().enumerate() {
        let n = i + 1;
        let end = start + size * MIB / 512 - 1;
        let ty = if i == 0 { "8300" } else { "0700" };
        c.arg(format!("-n{n}:{start}:{end}"))
            .arg(format!("-t{n}:{ty}"));
        let src = dir.join(format!("src{n}"));
        tree(&src, i == 0);
        let fs_img = filesystem(dir, i, &src);
        let out = File::options().write(true).open(&disk).unwrap();
        out.write_all_at(&fs::read(&fs_img).unwrap(), start * 512)
            .unwrap();
        fs::remove_file(&fs_img).unwrap();
        parts.push(Part {
            number: n as u32,
            fs: kinds[i],
            src,
            extra_root: if i == 0 { &["lost+found"] } else { &[] },
        });
        start = end + 1;
    }
    sh(c.arg(&disk));
    (disk, parts)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every folder of `part`'s source lists, through `rescue files IMAGE ls`, exactly its names with their
/// kinds and sizes (and the filesystem's own additions to the root).
fn check_listing(image: &Path, part: &Part) {
    let n = part.number.to_string();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let path = format!("/{rel}");
        let (rc, out, err) =
            rescue_split(&["files", s(image), "ls", "--partition", &n, "--json", &path]);
        assert_eq!(rc, 0, "ls {path} of partition {n}: {err}");
        let v = json(&out);
        assert_eq!(v["fs"], part.fs, "{out}");
        assert_eq!(v["partition"], part.number);
        let mut got = BTreeSet::new();
        for e in v["entries"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap().to_owned();
            if e["flags"].as_array().unwrap().iter().any(|f| f == "stream") {
                continue;
            }
            if rel.is_empty() && part.extra_root.contains(&name.as_str()) {
                continue;
            }
            let p = part.src.join(&rel).join(&name);
            let m = fs::symlink_metadata(&p)
                .unwrap_or_else(|_| panic!("{path}: {name} listed, not in the source"));
            let want = if m.is_dir() {
                "dir"
            } else if m.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            assert_eq!(e["kind"], want, "{path}/{name}");
            if m.is_file() {
                assert_eq!(e["size"], m.len(), "{path}/{name}");
                let secs = m
                    .modified()
                    .unwrap()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                assert_eq!(e["modified_unix"], secs, "{path}/{name}");
            }
            if m.is_dir() {
                stack.push(format!("{rel}{name}/"));
            }
            got.insert(name);
        }
        let want: BTreeSet<String> = fs::read_dir(part.src.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, want, "names in {path} of partition {n}");
    }
}

/// The trees `a` and `b` hold the same names, kinds, contents, sizes, link targets and file times.
fn same_tree(a: &Path, b: &Path) {
    let names = |d: &Path| -> BTreeSet<_> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert_eq!(names(a), names(b), "{} vs {}", a.display(), b.display());
    for name in names(a) {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        if ma.is_dir() {
            assert!(mb.is_dir(), "{}", pb.display());
            same_tree(&pa, &pb);
        } else if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        } else {
            assert!(mb.is_file(), "{}", pb.display());
            assert_eq!(ma.len(), mb.len(), "{}", pb.display());
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{}",
                pb.display()
            );
            assert_eq!(
                ma.modified().unwrap(),
                mb.modified().unwrap(),
                "mtime of {}",
                pb.display()
            );
        }
    }
}

/// `rescue files IMAGE get --partition N PATH -o OUT [MORE…]`: exit code, stdout, stderr.
fn get(image: &Path, part: &Part, path: &str, out: &Path, more: &[&str]) -> (i32, String, String) {
    let n = part.number.to_string();
    let mut args = vec![
        "files",
        s(image),
        "get",
        "--partition",
        &n,
        path,
        "-o",
        s(out),
    ];
    args.extend(more);
    rescue_split(&args)
}

/// `get /` and `get MIDDLE` of `part` give back its source, byte for byte.
fn check_get(image: &Path, part: &Part, out: &Path) {
    let all = out.join(format!("all{}", part.number));
    let (rc, _, e) = get(image, part, "/", &all, &[]);
    assert_eq!(rc, 0, "{e}");
    assert!(e.contains("copied") && e.contains(part.fs), "{e}");
    for extra in part.extra_root {
        fs::remove_dir_all(all.join(extra)).unwrap();
    }
    same_tree(&part.src, &all);
    // Again into the same folder: refused, nothing overwritten.
    let (rc, _, e) = get(image, part, "/", &all, &[]);
    assert_ne!(rc, 0, "{e}");
    assert!(e.contains("not empty"), "{e}");

    let one = out.join(format!("one{}", part.number));
    let middle = format!("/{MIDDLE}");
    let (rc, o, e) = get(image, part, &middle, &one, &["--json"]);
    assert_eq!(rc, 0, "{e}");
    let v = json(&o);
    assert_eq!(
        (v["files"].as_u64(), v["folders"].as_u64()),
        (Some(1), Some(0))
    );
    let src = part.src.join(MIDDLE);
    let copy = one.join("middle.bin");
    assert!(fs::read(&copy).unwrap() == fs::read(&src).unwrap());
    let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
    assert_eq!(mtime(&copy), mtime(&src));
    let (rc, _, e) = get(image, part, &middle, &one, &[]);
    assert_ne!(rc, 0, "{e}");
    assert!(e.contains("already exists"), "{e}");
}

/// What the errors say: the image, the partition, the path, and what to do.
fn check_errors(image: &Path, parts: &[Part]) {
    let (rc, o) = rescue(&[
        "files",
        s(image),
        "ls",
        "--partition",
        "2",
        "/docs/nothing here",
    ]);
    assert_ne!(rc, 0);
    assert!(
        o.contains(s(image))
            && o.contains("partition 2")
            && o.contains("/docs/nothing here")
            && o.contains("no such file")
            && o.contains("ls --partition 2"),
        "{o}"
    );
    let to = image.with_file_name("nope-out");
    let (rc, o) = rescue(&[
        "files",
        s(image),
        "get",
        "--partition",
        "1",
        "/nope",
        "-o",
        s(&to),
    ]);
    assert_ne!(rc, 0);
    assert!(o.contains("/nope") && o.contains("partition 1"), "{o}");
    assert!(!to.exists());

    let (rc, o) = rescue(&["files", s(image), "ls", "--partition", "9"]);
    assert_ne!(rc, 0);
    assert!(o.contains("no partition 9") && o.contains(s(image)), "{o}");

    let (rc, o) = rescue(&["files", s(image), "ls"]);
    assert_ne!(rc, 0);
    assert!(o.contains("--partition N"), "{o}");
    for p in parts {
        assert!(o.contains(&format!("{} (", p.number)), "{o}");
    }
    for fs in ["ext4", "vfat", "exfat", "ntfs"] {
        assert!(o.contains(fs), "{fs}: {o}");
    }
}

#[test]
fn files_inside_raw_disks_images_and_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, parts) = fixture(d);
    let rimg = d.join("disk.rimg");
    let (rc, o) = rescue(&["capture", s(&raw), "-o", s(&rimg)]);
    assert_eq!(rc, 0, "{o}");
    let qcow2 = d.join("disk.qcow2");
    sh(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2));

    for image in [&rimg, &qcow2, &raw] {
        let out = d.join(format!(
            "out-{}",
            image.extension().unwrap().to_string_lossy()
        ));
        for part in &parts {
            check_listing(image, part);
            check_get(image, part, &out);
        }
        check_errors(image, &parts);
        fs::remove_dir_all(&out).unwrap();
    }

    // The NTFS stream is listed as name:stream and copied out by that name.
    let (rc, o, _) = rescue_split(&["files", s(&rimg), "ls", "--partition", "4", "-l", "/"]);
    assert_eq!(rc, 0, "{o}");
    assert!(
        o.lines()
            .any(|l| l.starts_with("- ") && l.contains(" 16  ") && l.ends_with("README.TXT:alt")),
        "{o}"
    );
    let stream_out = d.join("stream");
    let (rc, o) = rescue(&[
        "files",
        s(&qcow2),
        "get",
        "--partition",
        "4",
        "/readme.txt:alt",
        "-o",
        s(&stream_out),
    ]);
    assert_eq!(rc, 0, "{o}");
    assert_eq!(
        fs::read(stream_out.join("README.TXT:alt")).unwrap(),
        b"a second stream\n"
    );
    // The ext4 link, in the long listing.
    let (rc, o, _) = rescue_split(&[
        "files",
        s(&raw),
        "ls",
        "--partition",
        "1",
        "-l",
        "/Odd names",
    ]);
    assert_eq!(rc, 0, "{o}");
    assert!(
        o.lines()
            .any(|l| l.starts_with("l ") && l.ends_with("link -> ../docs/reports/2017/notes.txt")),
        "{o}"
    );

    // An image of one partition is that partition: no --partition needed.
    let only = d.join("p3.rimg");
    let (rc, o) = rescue(&["capture", s(&raw), "--partition", "3", "-o", s(&only)]);
    assert_eq!(rc, 0, "{o}");
    let (rc, o, e) = rescue_split(&["files", s(&only), "ls", "/docs/reports/2017"]);
    assert_eq!(rc, 0, "{e}");
    assert_eq!(o, "middle.bin\nnotes.txt\n");
}
