//! Disk fixtures made by code, without root: partition tables written by util-linux (`sfdisk`, or `fdisk -b
//! 4096` for 4Kn disks), filesystems made by the real mkfs tools in separate files and copied into place.
//! The expected layout is what we asked for; the expected filesystem identity comes from `blkid -p` on each
//! filesystem file — an independent reading to compare our detection with.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Gpt,
    Mbr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    None,
    Ext4,
    Vfat,
    Exfat,
    Ntfs,
    Swap,
}

#[derive(Debug, Clone)]
pub struct PartSpec {
    pub size_mib: u64,
    /// GPT type GUID (upper case) for GPT disks.
    pub gpt_type: &'static str,
    /// MBR system id for MBR disks.
    pub mbr_type: u8,
    pub name: Option<&'static str>,
    pub fs: Fs,
    pub label: Option<&'static str>,
    /// MBR only: inside the extended partition (numbered 5 and up).
    pub logical: bool,
}

#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub size_mib: u64,
    pub sector_size: u32,
    pub table: Table,
    pub parts: Vec<PartSpec>,
}

/// What detection must report for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT type GUID or MBR id as `0x83`.
    pub type_id: String,
    pub fs: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
}

pub const GPT_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const GPT_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const GPT_MS_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
pub const GPT_SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

pub fn part(size_mib: u64, fs: Fs, label: Option<&'static str>) -> PartSpec {
    let (gpt_type, mbr_type) = match fs {
        Fs::Vfat => (GPT_ESP, 0x0c),
        Fs::Ntfs | Fs::Exfat => (GPT_MS_DATA, 0x07),
        Fs::Swap => (GPT_SWAP, 0x82),
        Fs::Ext4 | Fs::None => (GPT_LINUX, 0x83),
    };
    PartSpec {
        size_mib,
        gpt_type,
        mbr_type,
        name: label,
        fs,
        label,
        logical: false,
    }
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what} (install it: see scripts/setup)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_with_input(cmd: &mut Command, input: &str, what: &str) -> anyhow::Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what} (install it: see scripts/setup)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// (start sector, size in sectors, number) of each partition: 1 MiB aligned, logical partitions one MiB
/// apart so each has room for its EBR; the extended container spans all logical ones.
/// Byte offset just past the last partition.
fn parts_end(spec: &DiskSpec) -> u64 {
    let (parts, ext) = layout(spec);
    let ss = spec.sector_size as u64;
    let data = parts
        .iter()
        .map(|(s, n, _)| (s + n) * ss)
        .max()
        .unwrap_or(MIB);
    data.max(ext.map(|(s, n)| (s + n) * ss).unwrap_or(0))
}

/// Per partition (start sector, sectors, number), and the extended container (start, sectors) if any.
type Layout = (Vec<(u64, u64, u32)>, Option<(u64, u64)>);

fn layout(spec: &DiskSpec) -> Layout {
    let ss = spec.sector_size as u64;
    let mut pos = MIB;
    let mut out = Vec::new();
    let mut next_primary = 1;
    let mut next_logical = 5;
    let mut extended: Option<(u64, u64)> = None;
    for p in &spec.parts {
        if p.logical {
            if extended.is_none() {
                extended = Some((pos / ss, 0));
                next_primary += 1;
            }
            pos += MIB;
            out.push((pos / ss, p.size_mib * MIB / ss, next_logical));
            next_logical += 1;
        } else {
            out.push((pos / ss, p.size_mib * MIB / ss, next_primary));
            next_primary += 1;
        }
        pos += p.size_mib * MIB;
    }
    if let Some((start, _)) = extended {
        extended = Some((start, pos / ss - start));
    }
    (out, extended)
}

fn write_table(path: &Path, spec: &DiskSpec) -> anyhow::Result<()> {
    let (parts, extended) = layout(spec);
    if spec.sector_size == 512 {
        let mut script = format!(
            "label: {}\nunit: sectors\n",
            if spec.table == Table::Gpt {
                "gpt"
            } else {
                "dos"
            }
        );
        let mut ext_written = false;
        for (p, (start, size, _)) in spec.parts.iter().zip(&parts) {
            if p.logical && !ext_written {
                let (es, esz) = extended.unwrap_or((0, 0));
                script.push_str(&format!("start={es}, size={esz}, type=5\n"));
                ext_written = true;
            }
            match spec.table {
                Table::Gpt => script.push_str(&format!(
                    "start={start}, size={size}, type={}, name=\"{}\"\n",
                    p.gpt_type,
                    p.name.unwrap_or("")
                )),
                Table::Mbr => script.push_str(&format!(
                    "start={start}, size={size}, type={:x}\n",
                    p.mbr_type
                )),
            }
        }
        run_with_input(
            Command::new("sfdisk")
                .arg("--no-reread")
                .arg("--no-tell-kernel")
                .arg(path),
            &script,
            "sfdisk",
        )
    } else {
        if spec.table != Table::Gpt || spec.parts.iter().any(|p| p.name.is_some()) {
            bail!("4Kn fixtures support GPT without partition names only (fdisk -b 4096)");
        }
        // fdisk is the util-linux tool that honours a 4096-byte sector size on a plain file.
        let mut script = String::from("g\n");
        for (i, (p, (start, size, _))) in spec.parts.iter().zip(&parts).enumerate() {
            let n = i + 1;
            script.push_str(&format!("n\n{n}\n{start}\n{}\n", start + size - 1));
            // With one partition fdisk does not ask which one to retype.
            let which = if n == 1 {
                String::new()
            } else {
                format!("{n}\n")
            };
            script.push_str(&format!("t\n{which}{}\n", p.gpt_type));
        }
        script.push_str("w\n");
        run_with_input(
            Command::new("fdisk").args(["-b", "4096"]).arg(path),
            &script,
            "fdisk -b 4096",
        )
    }
}

fn make_fs(
    file: &Path,
    p: &PartSpec,
    sector_size: u32,
    content: Option<&Path>,
) -> anyhow::Result<()> {
    let label = p.label.unwrap_or("");
    match p.fs {
        Fs::None => {}
        Fs::Ext4 => {
            let mut c = Command::new("mkfs.ext4");
            c.args(["-q", "-F", "-b", "4096", "-L", label]);
            if let Some(dir) = content {
                c.arg("-d").arg(dir);
            }
            run(c.arg(file), "mkfs.ext4")?;
            if content.is_some() {
                // Deleted data stays in free blocks: what a filesystem-aware capture must skip.
                run(
                    Command::new("debugfs")
                        .args(["-w", "-R", "rm /deleted.bin"])
                        .arg(file),
                    "debugfs",
                )?;
            }
        }
        Fs::Vfat => {
            // FAT32 from 36 MiB on (as ESPs and USB sticks are); mkfs picks FAT12/16 below.
            let len = std::fs::metadata(file)?.len();
            let mut c = Command::new("mkfs.vfat");
            if sector_size == 512 && len >= 36 * MIB {
                c.args(["-F", "32"]);
            }
            run(
                c.args(["-S", &sector_size.to_string(), "-n", label])
                    .arg(file),
                "mkfs.vfat",
            )?;
            if let Some(dir) = content {
                let mut c = Command::new("mcopy");
                // mtools refuses small FAT32 volumes unless told not to check.
                c.env("MTOOLS_SKIP_CHECK", "1")
                    .arg("-s")
                    .arg("-i")
                    .arg(file);
                for e in std::fs::read_dir(dir)?.flatten() {
                    c.arg(e.path());
                }
                run(c.arg("::"), "mcopy")?;
            }
        }
        Fs::Exfat => {
            run(
                Command::new("mkfs.exfat").args(["-L", label]).arg(file),
                "mkfs.exfat",
            )?;
        }
        Fs::Ntfs => {
            run(
                Command::new("mkntfs")
                    .args([
                        "-F",
                        "-Q",
                        "-q",
                        "-s",
                        &sector_size.to_string(),
                        "-L",
                        label,
                    ])
                    .arg(file),
                "mkntfs",
            )?;
            if let Some(dir) = content {
                // ntfscp writes into an unmounted volume; it copies files, not directories, so the tree
                // is flattened into the root.
                for f in files_under(dir)? {
                    let name = f
                        .strip_prefix(dir)
                        .unwrap_or(&f)
                        .to_string_lossy()
                        .replace('/', "_");
                    run(
                        Command::new("ntfscp")
                            .arg("-f")
                            .arg(file)
                            .arg(&f)
                            .arg(format!("/{name}")),
                        "ntfscp",
                    )?;
                }
            }
        }
        Fs::Swap => {
            run(
                Command::new("mkswap").args(["-L", label]).arg(file),
                "mkswap",
            )?;
        }
    }
    Ok(())
}

/// `blkid -p` on a filesystem file: (TYPE, LABEL, UUID).
fn blkid(file: &Path) -> anyhow::Result<(Option<String>, Option<String>, Option<String>)> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(file)
        .output()
        .context("running blkid")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    Ok((get("TYPE"), get("LABEL"), get("UUID")))
}

/// Regular files below `dir`, sorted.
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Pseudo-random bytes (a fixed xorshift sequence): incompressible, and the same on every run.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sample content: a few directories and files, so filesystems are not empty. `deleted.bin` is removed
/// again after an ext4 is made from it, leaving stale data in free space.
pub fn sample_tree(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("docs/notes"))?;
    std::fs::write(dir.join("deleted.bin"), noise(2 << 20, 99))?;
    std::fs::write(dir.join("random.bin"), noise(3 << 20, 7))?;
    std::fs::write(
        dir.join("README.TXT"),
        "Demo disk made by the rescue builder.\n",
    )?;
    for i in 0..8 {
        let body: Vec<u8> = (0..(i + 1) * 4096)
            .map(|b| ((b * 31 + i * 7) % 251) as u8)
            .collect();
        std::fs::write(dir.join(format!("docs/file{i}.bin")), body)?;
    }
    std::fs::write(dir.join("docs/notes/todo.txt"), "back up everything\n")?;
    Ok(())
}

/// A 64 MiB ext4 filesystem image (no partition table) at `path` whose used blocks are scattered: 300
/// small files of noise, every other one deleted again. `content` gets the files that remain.
pub fn fragmented_ext4(path: &Path, content: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(content)?;
    for i in 0..300u64 {
        let bytes = noise(3000 + (i as usize * 997) % 9000, i);
        std::fs::write(content.join(format!("f{i}")), bytes)?;
    }
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(content)
            .arg(path)
            .arg("64M"),
        "mkfs.ext4",
    )?;
    let commands = path.with_extension("rm");
    let odd: String = (1..300).step_by(2).map(|i| format!("rm /f{i}\n")).collect();
    std::fs::write(&commands, odd)?;
    run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&commands)
            .arg(path),
        "debugfs",
    )?;
    std::fs::remove_file(&commands)?;
    for i in (1..300).step_by(2) {
        std::fs::remove_file(content.join(format!("f{i}")))?;
    }
    Ok(())
}

/// Create the disk image at `path` and return what detection must report for it.
pub fn create_disk(path: &Path, spec: &DiskSpec) -> anyhow::Result<Vec<Expected>> {
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let content = work.path().join("content");
    sample_tree(&content)?;
    {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        f.set_len(spec.size_mib * MIB)?;
    }
    write_table(path, spec)
        .with_context(|| format!("writing the partition table of {}", path.display()))?;
    let (parts, _) = layout(spec);
    let mut disk = OpenOptions::new().write(true).open(path)?;
    let ss = spec.sector_size as u64;
    let mut expected = Vec::new();
    for (p, (start, size, number)) in spec.parts.iter().zip(parts) {
        let fs_file: PathBuf = work.path().join(format!("part{number}.img"));
        std::fs::File::create(&fs_file)?.set_len(size * ss)?;
        make_fs(&fs_file, p, spec.sector_size, Some(&content))?;
        let (fs, label, uuid) = if p.fs == Fs::None {
            (None, None, None)
        } else {
            blkid(&fs_file)?
        };
        if p.fs != Fs::None {
            let data = std::fs::read(&fs_file)?;
            disk.seek(SeekFrom::Start(start * ss))?;
            disk.write_all(&data)?;
        }
        expected.push(Expected {
            number,
            start_bytes: start * ss,
            size_bytes: size * ss,
            type_id: match spec.table {
                Table::Gpt => p.gpt_type.to_string(),
                Table::Mbr => format!("0x{:02x}", p.mbr_type),
            },
            fs,
            label,
            uuid,
        });
    }
    // Stale data in unpartitioned space after the last partition, as a used disk has.
    let end = parts_end(spec);
    if end + 2 * MIB <= spec.size_mib * MIB {
        disk.seek(SeekFrom::Start(end))?;
        disk.write_all(&noise(MIB as usize, 3))?;
    }
    disk.sync_all()?;
    Ok(expected)
}

/// The demo GPT disk: a FAT32 EFI system partition, a Linux root, a Windows data partition and swap.
pub fn demo_gpt() -> DiskSpec {
    DiskSpec {
        size_mib: 168,
        sector_size: 512,
        table: Table::Gpt,
        parts: vec![
            part(40, Fs::Vfat, Some("ESP")),
            part(48, Fs::Ext4, Some("linux-root")),
            part(48, Fs::Ntfs, Some("Windows")),
            part(16, Fs::Swap, Some("swap")),
        ],
    }
}

/// The demo MBR disk: a primary ext4, and an extended partition with a FAT32 and an exFAT logical one.
pub fn demo_mbr() -> DiskSpec {
    let mut logical_fat = part(40, Fs::Vfat, Some("DATA"));
    logical_fat.logical = true;
    let mut logical_exfat = part(40, Fs::Exfat, Some("MEDIA"));
    logical_exfat.logical = true;
    DiskSpec {
        size_mib: 128,
        sector_size: 512,
        table: Table::Mbr,
        parts: vec![part(32, Fs::Ext4, Some("boot")), logical_fat, logical_exfat],
    }
}

/// A 4Kn GPT disk (4096-byte logical sectors).
pub fn demo_4kn() -> DiskSpec {
    DiskSpec {
        size_mib: 96,
        sector_size: 4096,
        table: Table::Gpt,
        parts: vec![
            PartSpec {
                name: None,
                ..part(32, Fs::Vfat, Some("ESP4K"))
            },
            PartSpec {
                name: None,
                ..part(48, Fs::Ext4, Some("data4k"))
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_layout_numbers_logical_partitions_from_five() {
        let (parts, ext) = layout(&demo_mbr());
        assert_eq!(parts.iter().map(|p| p.2).collect::<Vec<_>>(), [1, 5, 6]);
        let (es, esz) = ext.unwrap();
        assert!(parts[1].0 > es && parts[2].0 + parts[2].1 <= es + esz);
    }

    #[test]
    fn demo_disks_are_made_and_identified() {
        let dir = tempfile::tempdir().unwrap();
        for (name, spec) in [
            ("gpt", demo_gpt()),
            ("mbr", demo_mbr()),
            ("4kn", demo_4kn()),
        ] {
            let path = dir.path().join(format!("{name}.img"));
            let expected = create_disk(&path, &spec).unwrap();
            assert_eq!(expected.len(), spec.parts.len());
            for (e, p) in expected.iter().zip(&spec.parts) {
                if p.fs != Fs::None {
                    assert!(
                        e.fs.is_some(),
                        "{name}: blkid did not recognise partition {}",
                        e.number
                    );
                }
            }
        }
    }
}
