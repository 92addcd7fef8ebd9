use super::*;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// An independent newc reader for the tests: checks magic, alignment and the trailer.
pub(crate) fn read_newc(mut buf: &[u8]) -> Vec<Read> {
    let total = buf.len();
    let mut out = Vec::new();
    loop {
        let pos = total - buf.len();
        assert_eq!(pos % 4, 0, "header at unaligned offset {pos}");
        assert!(buf.len() >= 110, "archive ends inside a header at {pos}");
        assert_eq!(&buf[..6], b"070701", "bad magic at {pos}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let (ino, mode, uid, gid, nlink, mtime, size) = (
            field(0),
            field(1),
            field(2),
            field(3),
            field(4),
            field(5),
            field(6),
        );
        assert_eq!((field(7), field(8)), (0, 0), "host device numbers leaked");
        let rdev = (field(9), field(10));
        let namesize = field(11) as usize;
        assert_eq!(field(12), 0);
        let name_end = 110 + namesize;
        assert_eq!(buf[name_end - 1], 0, "name not NUL-terminated");
        let name = std::str::from_utf8(&buf[110..name_end - 1])
            .unwrap()
            .to_string();
        let data_start = (pos + name_end).next_multiple_of(4) - pos;
        assert!(buf[name_end..data_start].iter().all(|&b| b == 0));
        let data_end = data_start + size as usize;
        let data = buf[data_start..data_end].to_vec();
        let next = (pos + data_end).next_multiple_of(4) - pos;
        if name == TRAILER {
            assert_eq!(data_end, buf.len().min(next), "bytes after the trailer");
            return out;
        }
        out.push(Read {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev,
            data,
        });
        buf = &buf[next..];
    }
}

fn sample() -> Archive {
    let mut a = Archive::new();
    a.add_file("/init", 0o755, b"\x7fELF rescue".to_vec())
        .unwrap();
    a.add_symlink("/sbin/modprobe", "/init").unwrap();
    a.add_char_device("/dev/console", 0o600, 5, 1).unwrap();
    a.add_dir("/tmp", 0o1777).unwrap();
    a.add_file("lib/modules/r/kernel/fs/a-b.ko", 0o644, vec![7; 5])
        .unwrap();
    a.add_file("lib/modules/r/kernel/fs/a.ko", 0o644, vec![1; 3])
        .unwrap();
    a.add_dir("/lib", 0o700).unwrap(); // explicit after implicit: takes the mode
    a.add_file("./etc/empty", 0o644, Vec::new()).unwrap();
    a
}

fn bytes(a: &Archive, mtime: u64) -> Vec<u8> {
    let mut v = Vec::new();
    let n = a.write_to(&mut v, mtime).unwrap();
    assert_eq!(n as usize, v.len());
    v
}

#[test]
fn round_trips_with_parents_first_and_fixed_metadata() {
    let data = bytes(&sample(), 1_700_000_000);
    let entries = read_newc(&data);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dev",
            "dev/console",
            "etc",
            "etc/empty",
            "init",
            "lib",
            "lib/modules",
            "lib/modules/r",
            "lib/modules/r/kernel",
            "lib/modules/r/kernel/fs",
            "lib/modules/r/kernel/fs/a-b.ko",
            "lib/modules/r/kernel/fs/a.ko",
            "sbin",
            "sbin/modprobe",
            "tmp",
        ]
    );
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.ino, i as u32 + 1);
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000));
        let dir = e.mode & 0o170000 == S_IFDIR;
        assert_eq!(e.nlink, if dir { 2 } else { 1 }, "{}", e.name);
        let parent = e.name.rsplit_once('/').map(|(p, _)| p);
        if let Some(p) = parent {
            assert!(names[..i].contains(&p), "{} before its parent", e.name);
        }
    }
    let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    assert_eq!(get("init").mode, S_IFREG | 0o755);
    assert_eq!(get("init").data, b"\x7fELF rescue");
    assert_eq!(get("sbin/modprobe").mode, S_IFLNK | 0o777);
    assert_eq!(get("sbin/modprobe").data, b"/init");
    assert_eq!(get("dev/console").mode, S_IFCHR | 0o600);
    assert_eq!(get("dev/console").rdev, (5, 1));
    assert_eq!(get("tmp").mode, S_IFDIR | 0o1777);
    assert_eq!(get("lib").mode, S_IFDIR | 0o700);
    assert_eq!(get("dev").mode, S_IFDIR | 0o755);
    assert_eq!(get("lib/modules/r/kernel/fs/a-b.ko").data, [7; 5]);
}

#[test]
fn output_depends_only_on_the_entries() {
    let mut b = Archive::new();
    b.add_file("etc/empty", 0o644, Vec::new()).unwrap();
    b.add_dir("lib", 0o700).unwrap();
    b.add_file("lib/modules/r/kernel/fs/a.ko", 0o644, vec![1; 3])
        .unwrap();
    b.add_file("lib/modules/r/kernel/fs/a-b.ko", 0o644, vec![7; 5])
        .unwrap();
    b.add_dir("tmp", 0o1777).unwrap();
    b.add_char_device("dev/console", 0o600, 5, 1).unwrap();
    b.add_symlink("sbin/modprobe", "/init").unwrap();
    b.add_file("init", 0o755, b"\x7fELF rescue".to_vec())
        .unwrap();
    assert_eq!(bytes(&sample(), 0), bytes(&b, 0));
    assert_ne!(bytes(&sample(), 0), bytes(&sample(), 1));
}

#[test]
fn refuses_bad_paths_and_conflicts() {
    let mut a = Archive::new();
    for bad in ["", "/", "a/../b", "a//b", "a/./b", "x\ny", "TRAILER!!!"] {
        let e = a.add_file(bad, 0o644, Vec::new()).unwrap_err();
        assert!(matches!(e, CpioError::BadPath { .. }), "{bad:?}: {e}");
    }
    a.add_file("etc/f", 0o644, Vec::new()).unwrap();
    let e = a.add_file("/etc/f", 0o644, Vec::new()).unwrap_err();
    assert!(matches!(e, CpioError::Conflict { .. }), "{e}");
    let e = a.add_file("etc/f/g", 0o644, Vec::new()).unwrap_err();
    assert!(matches!(e, CpioError::Conflict { .. }), "{e}");
    assert!(!a.entries.contains_key("etc/f/g"));
    let e = a.add_file("etc", 0o644, Vec::new()).unwrap_err();
    assert!(matches!(e, CpioError::Conflict { .. }), "{e}");
    a.add_dir("etc", 0o750).unwrap(); // was implicit
    let e = a.add_dir("etc", 0o755).unwrap_err();
    assert!(matches!(e, CpioError::Conflict { .. }), "{e}");
    let e = a.write_to(Vec::new(), 1 << 32).unwrap_err();
    assert!(matches!(e, CpioError::Mtime { .. }), "{e}");
}

#[test]
fn empty_archive_is_just_the_trailer() {
    let data = bytes(&Archive::new(), 0);
    assert!(read_newc(&data).is_empty());
    assert_eq!(
        data.len(),
        (110 + TRAILER.len() + 1usize).next_multiple_of(4)
    );
}

/// The system `cpio` must agree. CI installs it; a missing one is a failure, not a skip.
#[test]
fn system_cpio_lists_and_extracts_it() {
    let data = bytes(&sample(), 1_000_000);
    let run = |args: &[&str], dir: &std::path::Path| {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run the system `cpio` ({e}); install it (apt-get install cpio)")
            });
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cpio {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let listed = run(&["-t", "--quiet"], dir.path());
    let expected: Vec<String> = read_newc(&data).into_iter().map(|e| e.name).collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected);
    let long = run(&["-tv", "--quiet"], dir.path());
    assert!(
        long.lines()
            .any(|l| l.starts_with("crw-------") && l.contains("5,") && l.ends_with("dev/console")),
        "{long}"
    );
    assert!(
        long.lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.ends_with("tmp")),
        "{long}"
    );
    assert!(
        long.lines()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("sbin/modprobe -> /init")),
        "{long}"
    );

    // Extraction as an ordinary user cannot make device nodes; leave the console out.
    run(
        &[
            "-i",
            "-d",
            "--quiet",
            "--no-absolute-filenames",
            "--nonmatching",
            "dev/console",
        ],
        dir.path(),
    );
    let root = dir.path();
    assert_eq!(std::fs::read(root.join("init")).unwrap(), b"\x7fELF rescue");
    assert_eq!(
        std::fs::read(root.join("lib/modules/r/kernel/fs/a.ko")).unwrap(),
        [1; 3]
    );
    assert_eq!(
        std::fs::read_link(root.join("sbin/modprobe")).unwrap(),
        std::path::Path::new("/init")
    );
    assert!(root.join("etc/empty").is_file());
}
