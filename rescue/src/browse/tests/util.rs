//! Test helpers: a source tree with the cases every reader must handle, and the comparison of what a
//! reader lists, reads and extracts against that tree.

use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::browse::{extract, open, Browse, Kind};
use crate::fs::testutil::{run, run_status, tool, XorShift};
use crate::image::ReadAt;

/// What a tree holds beyond plain files and folders.
#[derive(Clone, Copy)]
pub struct Opts {
    pub symlinks: bool,
    pub sparse: bool,
    /// Small files in `frag/` (the caller deletes every other one to fragment free space).
    pub frag_files: usize,
    /// Entries in `many/` (enough for several directory blocks).
    pub many: usize,
}

pub const FULL: Opts = Opts {
    symlinks: true,
    sparse: true,
    frag_files: 40,
    many: 120,
};

/// A fixed time for the `k`-th file: whole seconds plus a fraction that 100 ns units can hold.
pub fn stamp(k: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000 + k * 7_777, 123_456_700)
}

pub fn set_mtime(p: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_times(FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

fn write(root: &Path, rel: &str, data: &[u8], k: u64) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    set_mtime(&p, stamp(k));
}

/// Builds the source tree under `dir/src` and returns its path.
pub fn tree(dir: &Path, o: Opts) -> PathBuf {
    let root = dir.join("src");
    let mut rng = XorShift(0x5EED);
    let mut k = 0;
    let mut next = || {
        k += 1;
        k
    };
    write(&root, "README.TXT", b"files from a rescue test\n", next());
    write(&root, "empty.bin", b"", next());
    write(
        &root,
        "A file with a rather long name, more than 8.3 allows.text",
        b"long name\n",
        next(),
    );
    write(
        &root,
        "Über Größe — ünïcödé 名前.txt",
        "non-ASCII name ✓\n".as_bytes(),
        next(),
    );
    write(
        &root,
        "docs/notes/todo.txt",
        b"back up everything\n",
        next(),
    );
    for (i, size) in [1usize, 511, 512, 4095, 4096, 4097, 65_543, 300_001]
        .into_iter()
        .enumerate()
    {
        write(
            &root,
            &format!("docs/file{i}.bin"),
            &rng.bytes(size),
            next(),
        );
    }
    write(&root, "nested/l1/l2/l3/l4/deep.txt", b"deep\n", next());
    for i in 0..o.many {
        write(
            &root,
            &format!("many/entry number {i:03} with a long name.txt"),
            format!("{i}\n").as_bytes(),
            next(),
        );
    }
    for i in 0..o.frag_files {
        write(
            &root,
            &format!("frag/small-{i:02}.bin"),
            &rng.bytes(8192),
            next(),
        );
    }
    if o.sparse {
        let p = root.join("sparse.bin");
        let f = File::create(&p).unwrap();
        f.set_len(5 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&rng.bytes(4096), 0).unwrap();
        f.write_all_at(&rng.bytes(5000), 3 << 20).unwrap();
        drop(f);
        set_mtime(&p, stamp(next()));
    }
    if o.symlinks {
        fs::create_dir_all(root.join("links")).unwrap();
        std::os::unix::fs::symlink("../docs/notes/todo.txt", root.join("links/short")).unwrap();
        let long = format!("../{}/target", "x".repeat(90));
        std::os::unix::fs::symlink(long, root.join("links/long")).unwrap();
        std::os::unix::fs::symlink("../docs", root.join("links/dir")).unwrap();
    }
    root
}

/// Removes every other file of `frag/` from the source tree; returns their names.
pub fn drop_odd_frag(root: &Path, o: Opts) -> Vec<String> {
    (1..o.frag_files)
        .step_by(2)
        .map(|i| {
            let rel = format!("frag/small-{i:02}.bin");
            fs::remove_file(root.join(&rel)).unwrap();
            rel
        })
        .collect()
}

/// A large file (outside the tree) for writing into fragmented free space; its time is stamp(999).
pub fn big_file(dir: &Path, len: usize) -> PathBuf {
    let p = dir.join("big.bin");
    fs::write(&p, XorShift(77).bytes(len)).unwrap();
    set_mtime(&p, stamp(999));
    p
}

/// Opens the image file `img` for browsing.
pub fn open_image(img: &Path) -> Box<dyn Browse> {
    let f: Arc<dyn ReadAt> = Arc::new(File::open(img).unwrap());
    open(f).unwrap_or_else(|e| panic!("{}: {e}", img.display()))
}

/// How a comparison judges times and names.
pub struct Expect {
    /// Largest difference allowed between modification times.
    pub mtime_slack: Duration,
    /// Names in the root folder that the filesystem adds (lost+found…).
    pub extra_root: &'static [&'static str],
}

fn near(a: SystemTime, b: SystemTime, slack: Duration) -> bool {
    let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
    d <= slack
}

/// Every entry under `src` is listed by `fs` with the same kind, size, content, link target and
/// (within the slack) modification time, and each folder lists nothing more. Returns files checked.
pub fn compare(fs: &dyn Browse, src: &Path, x: &Expect) -> usize {
    let mut checked = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = format!("/{}", rel.to_string_lossy());
        let listed = fs
            .list(&path)
            .unwrap_or_else(|e| panic!("list {path}: {e}"));
        let got: BTreeSet<String> = listed
            .iter()
            .filter(|e| !e.flags.metadata)
            .filter(|e| !(rel.as_os_str().is_empty() && x.extra_root.contains(&e.name.as_str())))
            .map(|e| e.name.clone())
            .collect();
        let want: BTreeSet<String> = fs::read_dir(src.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, want, "names in {path}");
        for e in listed.iter().filter(|e| want.contains(&e.name)) {
            let r = rel.join(&e.name);
            let p = src.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            let ep = format!("/{}", r.to_string_lossy());
            assert!(e.problem.is_none(), "{ep}: {:?}", e.problem);
            if m.is_dir() {
                assert_eq!(e.kind, Kind::Dir, "{ep}");
                stack.push(r);
            } else if m.file_type().is_symlink() {
                let target = fs::read_link(&p).unwrap();
                assert_eq!(
                    e.kind,
                    Kind::Symlink {
                        target: target.to_string_lossy().into_owned()
                    },
                    "{ep}"
                );
            } else {
                assert_eq!(e.kind, Kind::File, "{ep}");
                assert_eq!(e.size, m.len(), "size of {ep}");
                let mut r = fs
                    .open_path(&ep)
                    .unwrap_or_else(|err| panic!("{ep}: {err}"));
                let data = r
                    .read_all(1 << 30)
                    .unwrap_or_else(|err| panic!("{ep}: {err}"));
                assert!(data == fs::read(&p).unwrap(), "content of {ep}");
                let mt = e
                    .modified
                    .unwrap_or_else(|| panic!("{ep} has no time"))
                    .system()
                    .unwrap();
                assert!(
                    near(mt, m.modified().unwrap(), x.mtime_slack),
                    "mtime of {ep}: {mt:?} vs {:?}",
                    m.modified().unwrap()
                );
                checked += 1;
            }
        }
    }
    checked
}

/// Everything a filesystem made from `src` must show: the comparison, the extraction, and `big.bin`
/// in many pieces (proof that free space was fragmented when it was written).
pub fn check_all(fs: &dyn Browse, src: &Path, x: &Expect, dir: &Path) {
    let n = compare(fs, src, x);
    assert!(n > 20, "{n}");
    compare_extracted(fs, src, x, dir);
    let e = fs.stat("/big.bin").unwrap();
    let pieces = fs.open(&e).unwrap().piece_count();
    assert!(pieces > 5, "{pieces}");
}

/// Extracts the whole filesystem and `paths` and compares the copies with `src`.
pub fn compare_extracted(fs: &dyn Browse, src: &Path, x: &Expect, dir: &Path) {
    let out = dir.join("out");
    let s = extract(fs, &["/"], &out).unwrap();
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    for extra in x.extra_root {
        let _ = fs::remove_dir_all(out.join(extra));
    }
    same_tree(src, &out, x.mtime_slack);
    // One folder and one file by path, into a fresh folder.
    let part = dir.join("part");
    let s = extract(fs, &["/docs", "/docs/notes/todo.txt"], &part).unwrap();
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(
        fs::read(part.join("todo.txt")).unwrap(),
        fs::read(src.join("docs/notes/todo.txt")).unwrap()
    );
    same_tree(&src.join("docs"), &part.join("docs"), x.mtime_slack);
    // A second copy over the first refuses to overwrite and says so for each file.
    let again = extract(fs, &["/docs/notes"], &part.join("docs")).unwrap();
    assert_eq!(again.problems.len(), 1, "{:?}", again.problems);
}

/// The trees under `a` and `b` hold the same names, contents, link targets and file times.
pub fn same_tree(a: &Path, b: &Path, slack: Duration) {
    for e in fs::read_dir(a).unwrap() {
        let e = e.unwrap();
        let (pa, pb) = (e.path(), b.join(e.file_name()));
        let ma = fs::symlink_metadata(&pa).unwrap();
        let mb = fs::symlink_metadata(&pb).unwrap_or_else(|_| panic!("{} missing", pb.display()));
        if ma.is_dir() {
            assert!(mb.is_dir(), "{}", pb.display());
            same_tree(&pa, &pb, slack);
        } else if ma.file_type().is_symlink() {
            assert!(mb.file_type().is_symlink(), "{}", pb.display());
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{}",
                pb.display()
            );
            assert!(
                near(ma.modified().unwrap(), mb.modified().unwrap(), slack),
                "mtime of {}",
                pb.display()
            );
        }
    }
    assert_eq!(
        fs::read_dir(a).unwrap().count(),
        fs::read_dir(b).unwrap().count(),
        "{} vs {}",
        a.display(),
        b.display()
    );
}

/// `cmd` with a UTF-8 locale and UTC (tools that write names and local times).
pub fn utf8(mut cmd: Command) -> Command {
    cmd.env("LC_ALL", "C.UTF-8").env("TZ", "UTC");
    cmd
}

pub fn sh(cmd: &mut Command) -> String {
    run(cmd)
}

/// A FUSE mount of an image through a loop device, undone when dropped.
pub struct Mounted {
    pub dir: PathBuf,
    dev: String,
}

impl Mounted {
    pub fn new(img: &Path, mnt: &Path, program: &str, opts: &[&str]) -> Mounted {
        std::fs::create_dir_all(mnt).unwrap();
        let (code, dev) = run_status(tool("losetup").args(["-f", "--show"]).arg(img));
        assert_eq!(code, 0, "losetup (needs root): {dev}");
        let dev = dev.trim().to_owned();
        let m = Mounted {
            dir: mnt.to_path_buf(),
            dev,
        };
        let (code, out) = run_status(tool(program).args(opts).arg(&m.dev).arg(mnt));
        assert_eq!(code, 0, "{program} {}: {out}", m.dev);
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = run_status(tool("umount").arg(&self.dir));
        let _ = run_status(tool("losetup").arg("-d").arg(&self.dev));
    }
}

/// Copies the tree's entries into the mounted `dst` with their times.
pub fn copy_in(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        sh(std::process::Command::new("cp")
            .args(["-r", "--no-dereference", "--preserve=timestamps"])
            .arg(e.unwrap().path())
            .arg(dst));
    }
}

/// Writes the large file (`len` bytes, time stamp(999)) as `big.bin` into the mounted `mnt` with cp
/// and into the source tree.
pub fn put_big(dir: &Path, src: &Path, mnt: &Path, len: usize) {
    let big = big_file(dir, len);
    sh(Command::new("cp")
        .arg("--preserve=timestamps")
        .arg(&big)
        .arg(mnt.join("big.bin")));
    fs::copy(&big, src.join("big.bin")).unwrap();
    set_mtime(&src.join("big.bin"), stamp(999));
}

/// `check` (the filesystem's own checker, read-only) passes on `img`, which opens as `kind` with no
/// notes.
pub fn checked_open(img: &Path, check: &str, kind: &str) -> Box<dyn Browse> {
    let (code, out) = run_status(tool(check).arg("-n").arg(img));
    assert_eq!(code, 0, "{check}: {out}");
    let fs = open_image(img);
    assert_eq!(fs.kind(), kind);
    assert!(fs.notes().is_empty(), "{:?}", fs.notes());
    fs
}
