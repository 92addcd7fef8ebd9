//! `builder`: build the rescue initramfs from the stock Debian kernel, and boot it in QEMU.

use std::path::PathBuf;

use anyhow::Context;
use builder::artifacts::{self, KernelSource};
use builder::{fixtures, image, qemu};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "builder",
    version,
    about = "Builds the rescue environment and boots it in QEMU"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct KernelArgs {
    /// Use this kernel package instead of downloading Debian 12's current linux-image-amd64.
    #[arg(long, conflicts_with_all = ["kernel", "modules_dir"])]
    kernel_deb: Option<PathBuf>,
    /// Use this kernel image (with --modules-dir).
    #[arg(long, requires = "modules_dir")]
    kernel: Option<PathBuf>,
    /// The kernel's /lib/modules/RELEASE directory (with --kernel).
    #[arg(long, requires = "kernel")]
    modules_dir: Option<PathBuf>,
    /// Use this static rescue binary instead of building it.
    #[arg(long)]
    rescue_bin: Option<PathBuf>,
}

impl KernelArgs {
    /// Kernel and initramfs into `dir`, with the figures printed.
    fn build(&self, dir: &std::path::Path) -> anyhow::Result<artifacts::Built> {
        let built = artifacts::build(dir, &self.source(), self.rescue_bin.as_deref())?;
        print_built(&built);
        Ok(built)
    }

    fn source(&self) -> KernelSource {
        match (&self.kernel_deb, &self.kernel, &self.modules_dir) {
            (Some(d), _, _) => KernelSource::Deb(d.clone()),
            (_, Some(k), Some(m)) => KernelSource::Files {
                kernel: k.clone(),
                modules_dir: m.clone(),
            },
            _ => KernelSource::Default,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Write OUT_DIR/vmlinuz and OUT_DIR/initramfs.img.
    Initramfs {
        #[arg(long)]
        out_dir: PathBuf,
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Build, then boot in QEMU on this terminal (serial console; Ctrl-A X quits). Without --disk, demo
    /// disks (a GPT and an MBR disk with real filesystems) are made.
    Run {
        /// Disk image files to attach (virtio).
        #[arg(long = "disk")]
        disks: Vec<PathBuf>,
        /// Extra kernel command line, e.g. rescue.cmd="disks".
        #[arg(long, default_value = "")]
        append: String,
        #[arg(long, default_value = "target/rescue-run")]
        work_dir: PathBuf,
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Write the bootable stick image (GPT, FAT32 ESP with the signed shim + grub, kernel and
    /// initramfs, and a RESCUE-DATA partition). Write it to a stick with dd.
    Image {
        /// The image file to write.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Make the serial-console (ttyS0, 115200) menu entry the default.
        #[arg(long)]
        serial: bool,
        /// Image size in MiB (the data partition gets what the ESP does not use).
        #[arg(long, default_value_t = boot::DEFAULT_SIZE >> 20)]
        size: u64,
        /// Where the kernel and initramfs are built.
        #[arg(long, default_value = "target/rescue-image")]
        work_dir: PathBuf,
        #[command(flatten)]
        kernel: KernelArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Initramfs { out_dir, kernel } => {
            kernel.build(&out_dir)?;
        }
        Cmd::Run {
            disks,
            append,
            work_dir,
            kernel,
        } => {
            let built = kernel.build(&work_dir)?;
            let disks = if disks.is_empty() {
                demo_disks(&work_dir)?
            } else {
                disks
            };
            let mut vm = qemu::Vm::new(&built.vmlinuz, &built.initramfs);
            vm.interactive = true;
            vm.append = append;
            vm.disks = disks
                .iter()
                .map(|d| qemu::Disk::new(d, qemu::Bus::Virtio))
                .collect();
            eprintln!("builder: booting under QEMU; quit with Ctrl-A then X");
            let status = vm
                .command()
                .status()
                .context("starting qemu-system-x86_64 (install qemu-system-x86)")?;
            if !status.success() {
                anyhow::bail!("QEMU exited with {status}");
            }
        }
        Cmd::Image {
            out,
            serial,
            size,
            work_dir,
            kernel,
        } => {
            let built = kernel.build(&work_dir)?;
            let opts = image::ImageOptions {
                size: size
                    .checked_mul(1 << 20)
                    .context("--size is in MiB and too large")?,
                serial_default: serial,
                ..Default::default()
            };
            let r = image::write_image(&out, &built.vmlinuz, &built.initramfs, &opts)?;
            eprintln!(
                "builder: wrote {}: {} bytes ({:.1} MB), disk GUID {}, in {:.2} s",
                r.path.display(),
                r.info.size,
                r.info.size as f64 / 1e6,
                r.info.disk_guid,
                r.seconds
            );
        }
    }
    Ok(())
}

fn demo_disks(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (name, spec) in [
        ("demo-gpt.img", fixtures::demo_gpt()),
        ("demo-mbr.img", fixtures::demo_mbr()),
    ] {
        let path = dir.join(name);
        fixtures::create_disk(&path, &spec)
            .with_context(|| format!("creating demo disk {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
}

fn print_built(b: &artifacts::Built) {
    eprintln!(
        "builder: kernel {} with {} modules; initramfs {} bytes zstd ({:.1} MB; {} bytes uncompressed); built in {:.2} s",
        b.release,
        b.module_count,
        b.compressed_bytes,
        b.compressed_bytes as f64 / 1e6,
        b.uncompressed_bytes,
        b.seconds
    );
    eprintln!(
        "builder: wrote {} and {}",
        b.vmlinuz.display(),
        b.initramfs.display()
    );
}
