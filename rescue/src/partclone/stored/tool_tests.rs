//! Images compressed by the real tools Clonezilla runs (Debian 12's; scripts/setup installs them) and
//! split by GNU `split` as Clonezilla does (`split -a 2 -b SIZE`), read back byte for byte and as a
//! partclone stream; then damaged (a flipped byte in a middle piece, the middle piece removed, the
//! last piece cut short, garbage appended), each error naming the right piece.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tests::{semi, stored_error};
use super::*;
use crate::partclone::write::{write, Options};

/// A compressor as Clonezilla (or a person) runs it: program and arguments, reading standard input and
/// writing standard output; what it is recognised as; whether its output carries checksums.
struct Tool {
    program: &'static str,
    args: &'static [&'static str],
    compression: Compression,
    checked: bool,
}

const fn tool(
    program: &'static str,
    args: &'static [&'static str],
    compression: Compression,
    checked: bool,
) -> Tool {
    Tool {
        program,
        args,
        compression,
        checked,
    }
}

/// Clonezilla's `-z` choices (docs/CLONEZILLA.md) and the variants of their options that change the
/// format: threads, block sizes and links, checksums.
const TOOLS: &[Tool] = &[
    tool("zstd", &["-q", "-c", "-T0"], Compression::Zstd, true),
    tool(
        "zstd",
        &["-q", "-c", "-T2", "--no-check", "-B1048576"],
        Compression::Zstd,
        false,
    ),
    tool("pzstd", &["-q", "-c", "-p", "2"], Compression::Zstd, true),
    tool("gzip", &["-c"], Compression::Gzip, true),
    tool("pigz", &["-c", "-p", "2"], Compression::Gzip, true),
    tool("pigz", &["-c", "-i", "-b", "128"], Compression::Gzip, true),
    tool("xz", &["-c", "-T0"], Compression::Xz, true),
    tool(
        "xz",
        &["-c", "-T2", "--block-size=1MiB", "--check=sha256"],
        Compression::Xz,
        true,
    ),
    tool("pixz", &["-p", "2"], Compression::Xz, true),
    tool("lzma", &["-c"], Compression::Lzma, false),
    tool("bzip2", &["-c"], Compression::Bzip2, true),
    tool("pbzip2", &["-c", "-p2", "-b3"], Compression::Bzip2, true),
    tool("lbzip2", &["-c", "-n", "2"], Compression::Bzip2, true),
    tool("lz4", &["-q", "-c"], Compression::Lz4, true),
    tool("lz4", &["-q", "-c", "-BD", "-B4"], Compression::Lz4, true),
    tool(
        "lz4",
        &["-q", "-c", "-BX", "-B5", "--content-size", "--no-frame-crc"],
        Compression::Lz4,
        true,
    ),
    tool("lzop", &["-c"], Compression::Lzop, true),
    tool("lzop", &["-c", "-9"], Compression::Lzop, true),
    tool("lzop", &["-c", "-1", "--crc32"], Compression::Lzop, true),
];

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e} (run scripts/setup: it installs the compressors these tests need)")
    });
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `input` compressed by `t` into `output`.
fn compress(t: &Tool, input: &Path, output: &Path) {
    let what = format!("{} {}", t.program, t.args.join(" "));
    run(
        Command::new(t.program)
            .args(t.args)
            .stdin(std::fs::File::open(input).unwrap())
            .stdout(std::fs::File::create(output).unwrap())
            .stderr(Stdio::piped()),
        &what,
    );
}

/// `file` split by GNU split into pieces of `size` bytes, `DIR/NAME.aa`…: the pieces, in order.
fn split(file: &Path, size: usize, dir: &Path, name: &str) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let prefix = dir.join(format!("{name}."));
    run(
        Command::new("split")
            .args(["-a", "2", "-b", &size.to_string()])
            .arg(file)
            .arg(&prefix),
        "split",
    );
    let mut p: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    p.sort();
    p
}

/// A partclone stream of a 3 MiB filesystem (4 KiB blocks, three in four used) of semi-compressible
/// data, as partclone writes it with CRC32 checksums.
fn image() -> Vec<u8> {
    let bs = 4096u32;
    let blocks: Vec<Option<Vec<u8>>> = (0..768u32)
        .map(|n| (n % 4 != 3).then(|| semi(bs as usize, n)))
        .collect();
    write(
        &Options {
            block_size: bs,
            blocks_per_checksum: 256,
            ..Options::default()
        },
        &blocks,
    )
}

/// Each tool's output of the image, split in four pieces: (tool, pieces).
fn compressed_images(dir: &Path, stream: &[u8]) -> Vec<(&'static Tool, Vec<PathBuf>)> {
    let raw = dir.join("image.raw");
    std::fs::write(&raw, stream).unwrap();
    TOOLS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let packed = dir.join(format!("{i}.packed"));
            compress(t, &raw, &packed);
            let len = std::fs::metadata(&packed).unwrap().len() as usize;
            let pieces = split(
                &packed,
                len.div_ceil(4),
                &dir.join(i.to_string()),
                "sda1.ext4-ptcl-img.x",
            );
            assert_eq!(pieces.len(), 4, "{}", t.program);
            (t, pieces)
        })
        .collect()
}

fn describe(t: &Tool) -> String {
    format!("{} {}", t.program, t.args.join(" "))
}

#[test]
fn stored_images_of_every_compressor_read_back_as_their_partclone_stream() {
    let dir = tempfile::tempdir().unwrap();
    let stream = image();
    for (t, pieces) in compressed_images(dir.path(), &stream) {
        let what = describe(t);
        let o = open(&pieces[0]).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(o.compression, t.compression, "{what}");
        assert_eq!(o.pieces, pieces, "{what}");
        let mut got = Vec::new();
        let mut r = o.reader;
        r.read_to_end(&mut got)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(got == stream, "{what}: not the stream compressed");
        // And read as the partclone stream it is.
        let o = open(&pieces[0]).unwrap();
        let report =
            crate::partclone::verify(o.reader, "sda1").unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(report.used_blocks, 576, "{what}");
    }
}

/// Reading the pieces in `dir` from `first` to their end: the stored error it stops with.
fn error_of(first: &Path) -> Error {
    let o = match open(first) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let mut r = o.reader;
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut sink) {
            Ok(0) => panic!("{}: read to its end without an error", first.display()),
            Ok(_) => {}
            Err(e) => {
                let s = stored_error(&e);
                return Error::new(s.kind, &s.path, s.offset, s.what.clone());
            }
        }
    }
}

#[test]
fn stored_damaged_images_of_every_compressor_name_the_right_piece() {
    let dir = tempfile::tempdir().unwrap();
    let stream = image();
    for (t, pieces) in compressed_images(dir.path(), &stream) {
        let what = describe(t);
        let original: Vec<Vec<u8>> = pieces.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let restore = || {
            for (p, b) in pieces.iter().zip(&original) {
                std::fs::write(p, b).unwrap();
            }
        };

        // A flipped byte in the middle of the second piece.
        if t.checked {
            let mut b = original[1].clone();
            let at = b.len() / 2;
            b[at] ^= 0x08;
            std::fs::write(&pieces[1], b).unwrap();
            let e = error_of(&pieces[0]);
            assert_eq!(e.kind, Kind::Damaged, "{what}: {e}");
            let name = pieces[1]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                e.path == pieces[1]
                    || e.what.contains("to byte") && e.what.contains(&name)
                    || e.what.contains("between the two"),
                "{what}: {e}"
            );
            if e.path == pieces[1] {
                assert!(e.offset.unwrap() <= original[1].len() as u64, "{what}: {e}");
            }
            restore();
        }

        // The second piece removed: named missing before anything is read.
        std::fs::remove_file(&pieces[1]).unwrap();
        let e = open(&pieces[0]).unwrap_err();
        assert_eq!(
            (e.kind, &e.path),
            (Kind::MissingPiece, &pieces[1]),
            "{what}: {e}"
        );
        restore();

        // The last piece cut short.
        let last = &original[3];
        std::fs::write(&pieces[3], &last[..last.len() - last.len() / 3]).unwrap();
        let e = error_of(&pieces[0]);
        assert_eq!(
            (e.kind, &e.path),
            (Kind::Truncated, &pieces[3]),
            "{what}: {e}"
        );
        assert!(
            e.to_string()
                .contains("a piece after sda1.ext4-ptcl-img.x.ad may be missing"),
            "{e}"
        );
        // The last piece gone: the third one ends early.
        std::fs::remove_file(&pieces[3]).unwrap();
        let e = error_of(&pieces[0]);
        assert_eq!(
            (e.kind, &e.path),
            (Kind::Truncated, &pieces[2]),
            "{what}: {e}"
        );
        restore();

        // Garbage after the end.
        let mut b = original[3].clone();
        b.extend_from_slice(b"\0\0\0\0trailing garbage");
        std::fs::write(&pieces[3], b).unwrap();
        let e = error_of(&pieces[0]);
        assert_eq!(
            (e.kind, &e.path),
            (Kind::TrailingGarbage, &pieces[3]),
            "{what}: {e}"
        );
        let at = original[3].len() as u64;
        // xz's stream padding (zeros, four at a time) is part of the format: the garbage follows it.
        let at = if t.compression == Compression::Xz {
            at + 4
        } else {
            at
        };
        assert_eq!(e.offset, Some(at), "{what}: {e}");
        restore();
    }
}

#[test]
fn stored_unsupported_compressors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    std::fs::write(&raw, image()).unwrap();
    let packed = dir.path().join("img.lz.aa");
    compress(
        &tool("lzip", &["-c"], Compression::None, false),
        &raw,
        &packed,
    );
    let e = open(&packed).unwrap_err();
    assert_eq!(e.kind, Kind::Unsupported);
    assert!(
        e.to_string()
            .contains("is lzip-compressed, which this program does not read; decompress it with lzip -d first"),
        "{e}"
    );
    compress(
        &tool("lz4", &["-q", "-c", "-l"], Compression::None, false),
        &raw,
        &packed,
    );
    let e = open(&packed).unwrap_err();
    assert!(e.to_string().contains("lz4's legacy format"), "{e}");
}
