//! Damaged filesystems: images made by the real tools, then bytes changed at random (mostly in the
//! metadata near the start, some anywhere). Opening, listing every folder and reading every file must
//! give entries or errors, never a panic, a hang or an unbounded allocation. Hand-made damage covers
//! the loops and out-of-range pointers random bytes rarely hit.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use super::util::*;
use crate::browse::{open, Browse, Entry, Kind};
use crate::fs::testutil::{run, sparse, tool};
use crate::image::ReadAt;

const SMALL: Opts = Opts {
    symlinks: true,
    sparse: false,
    frag_files: 4,
    many: 30,
};

/// The images, made once: (name, bytes).
fn images() -> &'static Vec<(&'static str, Vec<u8>)> {
    static IMAGES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = tree(dir.path(), SMALL);
        let mut out = Vec::new();
        for (name, args) in [
            ("ext4", &["-t", "ext4", "-O", "64bit,metadata_csum"][..]),
            (
                "ext4-inline",
                &["-t", "ext4", "-b", "1024", "-O", "inline_data"][..],
            ),
            ("ext2", &["-t", "ext2", "-b", "1024"][..]),
        ] {
            let img = dir.path().join(name);
            run(tool("mke2fs")
                .args(["-q", "-F"])
                .args(args)
                .arg("-d")
                .arg(&src)
                .arg(&img)
                .arg("4M"));
            out.push((name, std::fs::read(&img).unwrap()));
        }
        let nolinks = dir.path().join("nolinks");
        std::fs::create_dir_all(&nolinks).unwrap();
        let flat = tree(
            &nolinks,
            Opts {
                symlinks: false,
                ..SMALL
            },
        );
        for (name, args, size) in [
            ("fat12", &["-F", "12"][..], 2u64 << 20),
            ("fat16", &["-F", "16"][..], 20 << 20),
            ("fat32", &["-F", "32", "-s", "1"][..], 40 << 20),
        ] {
            let img = sparse(dir.path(), name, size);
            run(tool("mkfs.vfat").args(args).arg(&img));
            let mut c = utf8(tool("mcopy"));
            c.args(["-s", "-m", "-i"]).arg(&img);
            for e in std::fs::read_dir(&flat).unwrap() {
                c.arg(e.unwrap().path());
            }
            run(c.arg("::"));
            out.push((name, std::fs::read(&img).unwrap()));
        }
        let img = sparse(dir.path(), "exfat", 8 << 20);
        run(tool("mkfs.exfat").arg(&img));
        {
            let m =
                super::util::Mounted::new(&img, &dir.path().join("mnt"), "mount.exfat-fuse", &[]);
            super::util::copy_in(&flat, &m.dir);
        }
        out.push(("exfat", std::fs::read(&img).unwrap()));
        let img = sparse(dir.path(), "ntfs", 8 << 20);
        run(tool("mkntfs").args(["-F", "-Q", "-q"]).arg(&img));
        let mnt = dir.path().join("nmnt");
        std::fs::create_dir_all(&mnt).unwrap();
        run(tool("ntfs-3g").arg(&img).arg(&mnt));
        super::util::copy_in(&src, &mnt);
        run(tool("umount").arg(&mnt));
        out.push(("ntfs", std::fs::read(&img).unwrap()));
        out
    })
}

/// Lists every folder and reads every file (up to a bound), each folder once.
pub(super) fn walk(fs: &dyn Browse) -> usize {
    let Ok(root) = fs.root() else {
        return 0;
    };
    let mut seen = HashSet::new();
    let mut stack = vec![(root, 0usize)];
    let mut n = 0;
    while let Some((dir, depth)) = stack.pop() {
        if depth > 64 || n > 5000 || !seen.insert(dir.id.clone()) {
            continue;
        }
        let Ok(children) = fs.children(&dir) else {
            continue;
        };
        for c in children {
            n += 1;
            match c.kind {
                Kind::Dir => stack.push((c, depth + 1)),
                Kind::File => read_some(fs, &c),
                _ => {}
            }
        }
    }
    n
}

fn read_some(fs: &dyn Browse, e: &Entry) {
    if let Ok(mut r) = fs.open(e) {
        let mut buf = vec![0u8; 64 << 10];
        let _ = r.read_at(0, &mut buf);
        let _ = r.read_at(r.size().saturating_sub(100), &mut buf);
    }
}

fn open_bytes(b: Vec<u8>) -> Result<Box<dyn Browse>, crate::browse::BrowseError> {
    let r: Arc<dyn ReadAt> = Arc::new(b);
    open(r)
}

#[test]
fn intact_images_walk_completely() {
    for (name, img) in images() {
        let fs = open_bytes(img.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(walk(fs.as_ref()) > 40, "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn damaged_images_never_panic(
        which in 0usize..8,
        near in prop::collection::vec((0u32..(96 << 10), any::<u8>()), 1..24),
        far in prop::collection::vec((any::<u32>(), any::<u8>()), 0..8),
        cut in prop::option::of(0u32..(4 << 20)),
    ) {
        let (_, img) = &images()[which % images().len()];
        let mut b = img.clone();
        let len = b.len();
        for (at, v) in near.into_iter().chain(far) {
            b[at as usize % len] = v;
        }
        if let Some(c) = cut {
            b.truncate((c as usize).max(4096).min(len));
        }
        if let Ok(fs) = open_bytes(b) {
            walk(fs.as_ref());
            let _ = fs.stat("/docs/notes/todo.txt");
            let _ = crate::browse::extract(fs.as_ref(), &["/docs"], &tempfile::tempdir().unwrap().path().join("x"));
        }
    }

    #[test]
    fn random_bytes_are_refused_or_read(data in prop::collection::vec(any::<u8>(), 0..70_000), magic in 0usize..5) {
        let mut b = data;
        b.resize(b.len().max(2048), 0);
        match magic {
            1 => b[3..11].copy_from_slice(b"NTFS    "),
            2 => b[3..11].copy_from_slice(b"EXFAT   "),
            3 => b[1024 + 0x38..1024 + 0x3A].copy_from_slice(&[0x53, 0xEF]),
            4 => { b[0] = 0xEB; b[11..13].copy_from_slice(&[0, 2]); b[13] = 1; b[14] = 1; b[16] = 2; b[21] = 0xF8; }
            _ => {}
        }
        if let Ok(fs) = open_bytes(b) {
            walk(fs.as_ref());
        }
    }
}

/// Writes `bytes` at `at` of a copy of image `name`.
pub(super) fn patched(name: &str, edits: &[(usize, &[u8])]) -> Vec<u8> {
    let (_, img) = images().iter().find(|(n, _)| *n == name).unwrap();
    let mut b = img.clone();
    for (at, bytes) in edits {
        b[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    b
}

pub(super) fn image(name: &str) -> Vec<u8> {
    patched(name, &[])
}

#[test]
fn a_folder_loop_ends_with_a_problem_not_a_hang() {
    // ext2: the entry "l4" of nested/l1/l2/l3 is made to point at l1's inode.
    let img = image("ext2");
    let fs = open_bytes(img.clone()).unwrap();
    let l1 = fs.stat("/nested/l1").unwrap().id.node as u32;
    let l4 = fs.stat("/nested/l1/l2/l3/l4").unwrap().id.node as u32;
    // The entry: inode, rec_len, name length 2, type 2 (folder), "l4".
    let at = (0..img.len() - 10)
        .find(|&i| img[i..i + 4] == l4.to_le_bytes() && img[i + 6..i + 10] == [2, 2, b'l', b'4'])
        .unwrap();
    let mut b = img;
    b[at..at + 4].copy_from_slice(&l1.to_le_bytes());
    let fs = open_bytes(b).unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = crate::browse::extract(fs.as_ref(), &["/nested"], out.path()).unwrap();
    assert!(
        s.problems
            .iter()
            .any(|(p, why)| p.ends_with("l3/l4") && why.contains("loop")),
        "{:?}",
        s.problems
    );
    assert!(Path::new(&out.path().join("nested/l1/l2/l3")).is_dir());
}

#[test]
fn a_fat_chain_that_loops_is_an_error() {
    let img = image("fat16");
    let fs = open_bytes(img.clone()).unwrap();
    let e = fs.stat("/docs/file7.bin").unwrap();
    let first = e.id.node as usize;
    // FAT16 with one reserved sector... read the BPB for where the FAT starts.
    let fat = usize::from(u16::from_le_bytes([img[14], img[15]])) * 512;
    let mut b = img;
    // The third cluster of the file points back at its first.
    let third = {
        let n1 = usize::from(u16::from_le_bytes([
            b[fat + 2 * first],
            b[fat + 2 * first + 1],
        ]));
        usize::from(u16::from_le_bytes([b[fat + 2 * n1], b[fat + 2 * n1 + 1]]))
    };
    b[fat + 2 * third..fat + 2 * third + 2].copy_from_slice(&(first as u16).to_le_bytes());
    let fs = open_bytes(b).unwrap();
    let e = fs.stat("/docs/file7.bin").unwrap();
    let err = fs
        .open(&e)
        .and_then(|mut r| r.read_all(1 << 20))
        .unwrap_err()
        .to_string();
    assert!(err.contains("FAT16") && err.contains("loops"), "{err}");
}

#[test]
fn an_extent_past_the_end_is_an_error_naming_it() {
    let img = image("ext4");
    let fs = open_bytes(img.clone()).unwrap();
    let e = fs.stat("/docs/file7.bin").unwrap();
    drop(fs);
    // The first leaf of the inode's extent tree (in its block area) is moved past the end.
    let vol = crate::browse::Vol::new(Arc::new(img.clone()), img.len() as u64, "ext");
    let inode = crate::browse::ext::Ext::open(vol)
        .unwrap()
        .inode(e.id.node)
        .unwrap();
    let leaf = inode.at as usize + 0x28 + 12;
    let mut b = img;
    b[leaf + 6..leaf + 8].copy_from_slice(&[0x00, 0x10]);
    let fs = open_bytes(b).unwrap();
    let err = fs
        .open(&fs.stat("/docs/file7.bin").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("extent") && err.contains("outside the filesystem"),
        "{err}"
    );
    assert_eq!(e.size, 300_001);
}

/// NTFS image `ntfs` opened as the NTFS reader, for reaching records.
fn ntfs_of(img: &[u8]) -> crate::browse::ntfs::Ntfs {
    let r: Arc<dyn ReadAt> = Arc::new(img.to_vec());
    crate::browse::ntfs::Ntfs::open(crate::browse::Vol::new(r, img.len() as u64, "NTFS")).unwrap()
}

/// The byte offset, within record `rec`, of its first attribute of type `ty`.
fn attr_in(rec: &[u8], ty: u32) -> usize {
    let mut at = usize::from(u16::from_le_bytes([rec[0x14], rec[0x15]]));
    loop {
        let t = u32::from_le_bytes(rec[at..at + 4].try_into().unwrap());
        assert_ne!(t, 0xFFFF_FFFF, "no attribute {ty:#x}");
        if t == ty {
            return at;
        }
        at += u32::from_le_bytes(rec[at + 4..at + 8].try_into().unwrap()) as usize;
    }
}

/// Patches byte `at` of record `n` on the image (outside the fixup positions).
fn patch_record(img: &mut [u8], n: u64, at: usize, v: u8) {
    let (_, disk) = ntfs_of(img).raw_record(n).unwrap().unwrap();
    assert!(at % 512 < 510, "a fixup position");
    img[disk as usize + at] = v;
}

#[test]
fn ntfs_runlists_past_the_end_encryption_and_a_lost_index() {
    let img = image("ntfs");
    let fs = open_bytes(img.clone()).unwrap();
    let file7 = fs.stat("/docs/file7.bin").unwrap().id.node;
    let docs = fs.stat("/docs").unwrap().id.node;
    let todo = fs.stat("/docs/notes/todo.txt").unwrap().id.node;
    let (rec, _) = ntfs_of(&img).raw_record(file7).unwrap().unwrap();

    // The first run's cluster pushed far past the volume.
    let data = attr_in(&rec, 0x80);
    let pairs = data + usize::from(u16::from_le_bytes([rec[data + 0x20], rec[data + 0x21]]));
    let h = rec[pairs];
    let top = pairs + usize::from(h & 0xF) + usize::from(h >> 4);
    let mut b = img.clone();
    patch_record(&mut b, file7, top, 0x40);
    let fs = open_bytes(b).unwrap();
    let err = fs.open_path("/docs/file7.bin").unwrap_err().to_string();
    assert!(
        err.contains("NTFS") && err.contains("past the volume"),
        "{err}"
    );

    // EFS-encrypted content is refused by name (the standard information's flag).
    let (rec, _) = ntfs_of(&img).raw_record(todo).unwrap().unwrap();
    let si = attr_in(&rec, 0x10);
    let flags = si + usize::from(u16::from_le_bytes([rec[si + 0x14], rec[si + 0x15]])) + 0x21;
    let mut b = img.clone();
    patch_record(&mut b, todo, flags, rec[flags] | 0x40);
    let fs = open_bytes(b).unwrap();
    assert!(fs.stat("/docs/notes/todo.txt").unwrap().flags.encrypted);
    let err = fs
        .open_path("/docs/notes/todo.txt")
        .unwrap_err()
        .to_string();
    assert!(err.contains("EFS"), "{err}");

    // A folder whose index root is gone is listed through its entries' parent references.
    let (rec, _) = ntfs_of(&img).raw_record(docs).unwrap().unwrap();
    let root = attr_in(&rec, 0x90);
    let mut b = img;
    patch_record(&mut b, docs, root, 0x91);
    let fs = open_bytes(b).unwrap();
    let names: Vec<String> = fs
        .list("/docs")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        names.contains(&"file7.bin".to_owned()) && names.contains(&"notes".to_owned()),
        "{names:?}"
    );
    assert!(
        fs.notes().iter().any(|n| n.contains("parent references")),
        "{:?}",
        fs.notes()
    );
}
