//! Builds `rescue` as a fully static executable: the gnu target with `+crt-static`, and an explicit
//! `--target` so build scripts and proc macros stay dynamic. Checked afterwards: no program interpreter,
//! no `NEEDED` libraries — the initramfs has no libc to offer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use object::{Object, ObjectSection};

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The workspace this builder was compiled from (the builder is a development tool run from a checkout).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo build --release -p rescue` for the static target, in its own target directory so that it never
/// waits on (or invalidates) the ordinary debug build. Returns the binary's path.
pub fn build_rescue() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target/static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "rescue",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .context("running cargo to build the static rescue binary")?;
    if !status.success() {
        bail!("building the static rescue binary failed ({status}); see cargo's messages above");
    }
    let bin = target_dir.join(TARGET).join("release/rescue");
    check_static(&bin)?;
    Ok(bin)
}

/// Fails unless `path` is an ELF executable with no PT_INTERP and no DT_NEEDED entries.
pub fn check_static(path: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let problems =
        static_problems(&data).with_context(|| format!("parsing {} as ELF", path.display()))?;
    if !problems.is_empty() {
        bail!(
            "{} is not fully static: {}",
            path.display(),
            problems.join("; ")
        );
    }
    Ok(())
}

/// What stops `data` (an ELF file) from running without a libc on the system.
pub fn static_problems(data: &[u8]) -> anyhow::Result<Vec<String>> {
    let file = object::File::parse(data)?;
    let mut problems = Vec::new();
    if file.section_by_name(".interp").is_some() {
        problems.push("it has a program interpreter (.interp)".to_string());
    }
    if let object::File::Elf64(elf) = &file {
        use object::read::elf::ProgramHeader;
        let endian = elf.endian();
        for ph in elf.elf_program_headers() {
            if ph.p_type(endian) == object::elf::PT_INTERP {
                problems.push("it has a PT_INTERP program header".to_string());
            }
        }
    }
    if let Some(dynamic) = file.section_by_name(".dynamic") {
        let needed = count_needed(dynamic.data()?);
        if needed > 0 {
            problems.push(format!("it needs {needed} shared libraries (DT_NEEDED)"));
        }
    }
    Ok(problems)
}

/// Count DT_NEEDED (tag 1) entries in a little-endian ELF64 dynamic section.
fn count_needed(dynamic: &[u8]) -> usize {
    dynamic
        .chunks_exact(16)
        .map(|e| u64::from_le_bytes(e[..8].try_into().unwrap_or([0; 8])))
        .take_while(|&tag| tag != 0)
        .filter(|&tag| tag == 1)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_system_binary_is_rejected() {
        let data = std::fs::read("/bin/sh").expect("/bin/sh exists on Debian");
        let problems = static_problems(&data).unwrap();
        assert!(
            problems.iter().any(|p| p.contains("interpreter")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("DT_NEEDED")),
            "{problems:?}"
        );
    }

    #[test]
    fn counts_needed_entries() {
        let mut d = Vec::new();
        for tag in [1u64, 1, 5, 0, 1] {
            d.extend_from_slice(&tag.to_le_bytes());
            d.extend_from_slice(&0u64.to_le_bytes());
        }
        assert_eq!(count_needed(&d), 2);
    }
}
