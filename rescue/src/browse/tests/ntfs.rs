//! NTFS against mkntfs and ntfs-3g (FUSE, on the image file; root): the tree copied in with its times
//! and links (ntfs-3g makes Interix links), every other small file deleted and a large file written
//! into the holes, plus what only NTFS has: a folder marked compressed (LZNT1 files), an alternate data
//! stream, a symbolic-link reparse point as Windows writes them, and a sparse file.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::util::*;
use crate::browse::Kind;
use crate::fs::testutil::{sparse, tool, XorShift};

/// NTFS keeps 100 ns; the stamps are multiples of it.
const EXPECT: Expect = Expect {
    mtime_slack: Duration::ZERO,
    extra_root: &[],
};

/// ntfs-3g with alternate data streams as `file:stream` names and compression allowed.
fn mount(img: &Path, mnt: &Path) -> Mounted {
    Mounted::new(
        img,
        mnt,
        "ntfs-3g",
        &["-o", "streams_interface=windows,compression"],
    )
}

/// A symbolic-link reparse point's value (relative link), as Windows writes it.
fn symlink_reparse(target: &str) -> String {
    let t: Vec<u8> = target.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let n = t.len() as u16;
    let mut body = Vec::new();
    for v in [n, n, 0, n] {
        // Substitute name at n, length n; print name at 0, length n.
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&1u32.to_le_bytes()); // relative
    body.extend_from_slice(&t);
    body.extend_from_slice(&t);
    let mut v = 0xA000_000Cu32.to_le_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u16).to_le_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&body);
    format!(
        "0x{}",
        v.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// More small files than elsewhere: their holes must hold the large file.
const O: Opts = Opts {
    frag_files: 90,
    ..FULL
};
const BIG: usize = 300 << 10;
const STREAMS: usize = 40;

fn stream_body(i: usize) -> Vec<u8> {
    format!("stream {i} ").repeat(10 + i).into_bytes()
}

#[test]
fn ntfs_through_ntfs_3g() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), O);
    // Compressible and incompressible parts: some units stored compressed, some plain.
    let mut comp: Vec<u8> = b"compress me, compress me again. ".repeat(12_000);
    comp.extend(XorShift(5).bytes(200_000));
    comp.extend(b"and the end, compressible again ".repeat(3_000));
    std::fs::create_dir_all(src.join("packed")).unwrap();
    std::fs::write(src.join("packed/comp.txt"), &comp).unwrap();
    set_mtime(&src.join("packed/comp.txt"), stamp(500));
    std::os::unix::fs::symlink("../README.TXT", src.join("links/winlink")).unwrap();

    let img = sparse(dir.path(), "n.img", 96 << 20);
    sh(tool("mkntfs").args(["-F", "-Q", "-q"]).arg(&img));
    {
        let m = mount(&img, &dir.path().join("mnt"));
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            if e.file_name() == "packed" {
                continue;
            }
            sh(Command::new("cp")
                .args([
                    "-r",
                    "--no-dereference",
                    "--preserve=timestamps",
                    "--sparse=always",
                ])
                .arg(e.path())
                .arg(&m.dir));
        }
        std::fs::create_dir(m.dir.join("packed")).unwrap();
        sh(tool("setfattr")
            .args(["-n", "system.ntfs_attrib_be", "-v", "0x00000810"])
            .arg(m.dir.join("packed")));
        sh(Command::new("cp")
            .arg("--preserve=timestamps")
            .arg(src.join("packed/comp.txt"))
            .arg(m.dir.join("packed")));
        std::fs::remove_file(m.dir.join("links/winlink")).unwrap();
        std::fs::File::create(m.dir.join("links/winlink")).unwrap();
        sh(tool("setfattr")
            .args(["-n", "system.ntfs_reparse_data", "-v"])
            .arg(symlink_reparse("..\\README.TXT"))
            .arg(m.dir.join("links/winlink")));
        std::fs::write(m.dir.join("README.TXT:alt"), b"a second stream\n").unwrap();
        // Enough streams that the record overflows into extension records (an attribute list).
        for i in 0..STREAMS {
            std::fs::write(
                m.dir.join(format!("docs/notes/todo.txt:s{i:02}")),
                stream_body(i),
            )
            .unwrap();
        }
        set_mtime(&m.dir.join("docs/notes/todo.txt"), stamp(5));
        set_mtime(&m.dir.join("README.TXT"), stamp(1));
    }
    {
        // With every cluster taken but the holes of the deleted small files, a new file must be
        // written into them.
        let m = mount(&img, &dir.path().join("mnt"));
        let mut filler = std::fs::File::create(m.dir.join("filler")).unwrap();
        let chunk = vec![0x55u8; 1 << 20];
        while filler.write_all(&chunk).is_ok() {}
        let small = vec![0x55u8; 4096];
        while filler.write_all(&small).is_ok() {}
        drop(filler);
        for g in drop_odd_frag(&src, O) {
            std::fs::remove_file(m.dir.join(g)).unwrap();
        }
        put_big(dir.path(), &src, &m.dir, BIG);
        std::fs::remove_file(m.dir.join("filler")).unwrap();
    }
    let fs = checked_open(&img, "ntfsfix", "NTFS");
    check_all(fs.as_ref(), &src, &EXPECT, dir.path());

    let c = fs.stat("/packed/comp.txt").unwrap();
    assert!(c.flags.compressed, "{c:?}");
    let mut r = fs.open(&c).unwrap();
    assert_eq!(r.read_all(1 << 20).unwrap(), comp);
    let readme = fs.stat("/readme.txt").unwrap();
    assert_eq!(readme.streams.len(), 1, "{readme:?}");
    assert_eq!(readme.streams[0].name, "alt");
    let mut s = fs.open_path("/README.TXT:alt").unwrap();
    assert_eq!(s.read_all(100).unwrap(), b"a second stream\n");
    assert!(fs.stat("/sparse.bin").unwrap().flags.sparse);
    let todo = fs.stat("/docs/notes/todo.txt").unwrap();
    assert_eq!(todo.streams.len(), STREAMS);
    let f: std::sync::Arc<dyn crate::image::ReadAt> =
        std::sync::Arc::new(std::fs::File::open(&img).unwrap());
    let size = f.size().unwrap();
    let ntfs = crate::browse::ntfs::Ntfs::open(crate::browse::Vol::new(f, size, "NTFS")).unwrap();
    let (rec, _) = ntfs.raw_record(todo.id.node).unwrap().unwrap();
    let types: Vec<u32> = crate::browse::ntfs::record::attributes(&rec)
        .unwrap()
        .iter()
        .map(|a| a.ty)
        .collect();
    assert!(types.contains(&0x20), "no attribute list: {types:x?}");
    for i in 0..STREAMS {
        let mut r = fs
            .open_path(&format!("/docs/notes/todo.txt:s{i:02}"))
            .unwrap();
        assert_eq!(r.read_all(1 << 20).unwrap(), stream_body(i), "stream {i}");
    }
    let root = fs.list("/").unwrap();
    let mft = root.iter().find(|e| e.name == "$MFT").unwrap();
    assert!(mft.flags.metadata && mft.kind == Kind::File);
    assert_eq!(
        fs.stat("/links/short").unwrap().kind,
        Kind::Symlink {
            target: "../docs/notes/todo.txt".into()
        }
    );
}
