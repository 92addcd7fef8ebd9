//! `builder`: build the rescue initramfs from the stock Debian kernel, the stick image and the network boot
//! files, and boot them in QEMU.

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
    /// Leave out the firmware the network drivers name (Debian's non-free-firmware area): only free
    /// software on the stick, but Realtek, Broadcom and Tigon network adapters may then not work.
    #[arg(long)]
    no_firmware: bool,
}

impl KernelArgs {
    /// Kernel and initramfs into `dir`, with the figures printed.
    fn build(&self, dir: &std::path::Path) -> anyhow::Result<artifacts::Built> {
        let firmware = if self.no_firmware {
            artifacts::FirmwareChoice::Leave
        } else {
            artifacts::FirmwareChoice::Include
        };
        let built = artifacts::build(dir, &self.source(), self.rescue_bin.as_deref(), firmware)?;
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
    /// Build the stick image, then boot it in QEMU on this terminal through UEFI firmware (OVMF), or
    /// SeaBIOS with --bios, from a USB stick (serial console; Ctrl-A X quits). Without --disk, demo disks (a
    /// GPT and an MBR disk with real filesystems) are attached too.
    Run {
        /// Disk image files to attach (virtio).
        #[arg(long = "disk")]
        disks: Vec<PathBuf>,
        /// Extra kernel command line, e.g. rescue.cmd="disks" (added to every menu entry of the stick).
        #[arg(long, default_value = "")]
        append: String,
        /// Boot through SeaBIOS (legacy BIOS) instead of UEFI.
        #[arg(long, conflicts_with_all = ["direct", "secure_boot"])]
        bios: bool,
        /// UEFI with Secure Boot enforced (Microsoft keys enrolled).
        #[arg(long, conflicts_with = "direct")]
        secure_boot: bool,
        /// No firmware and no stick: hand QEMU the kernel and initramfs (-kernel/-initrd), the quickest boot.
        #[arg(long)]
        direct: bool,
        /// The stick's data partition filesystem.
        #[arg(long, default_value = "exfat", value_name = "exfat|ext4|vfat")]
        data_fs: boot::DataFs,
        #[arg(long, default_value = "target/rescue-run")]
        work_dir: PathBuf,
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Write the bootable stick image (GPT, FAT32 ESP with the signed shim + grub, kernel and
    /// initramfs, GRUB's BIOS boot code, and a RESCUE-DATA partition). Write it to a stick with dd.
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
        /// The data partition's filesystem: exfat holds image files over 4 GiB and is read by every OS.
        #[arg(long, default_value = "exfat", value_name = "exfat|ext4|vfat")]
        data_fs: boot::DataFs,
        /// Where the kernel and initramfs are built.
        #[arg(long, default_value = "target/rescue-image")]
        work_dir: PathBuf,
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Write OUT_DIR/vmlinuz, OUT_DIR/initramfs.img and OUT_DIR/boot.ipxe (an iPXE script with the
    /// stick's menu) for PXE or HTTP boot: serve the directory and point iPXE at boot.ipxe.
    Netboot {
        #[arg(long)]
        out_dir: PathBuf,
        /// Make the serial-console (ttyS0, 115200) menu entry the default.
        #[arg(long)]
        serial: bool,
        /// A job every machine booted from these files runs (rescue.job=URL): a fleet deployment,
        /// e.g. http://server/deploy/job.toml (docs/JOBS.md).
        #[arg(long, value_name = "URL")]
        job: Option<String>,
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Start a throwaway S3 server on 127.0.0.1 (Ceph's radosgw over a one-OSD in-memory cluster, as the
    /// tests use), create BUCKET, print the repository URL and keys, and serve until stdin closes or a
    /// line is read: for trying and benchmarking S3 repositories. Needs `scripts/setup`'s ceph packages.
    S3Server {
        #[arg(long, default_value = "rescue")]
        bucket: String,
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
            bios,
            secure_boot,
            direct,
            data_fs,
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
            vm.disks = disks
                .iter()
                .map(|d| qemu::Disk::new(d, qemu::Bus::Virtio))
                .collect();
            let how = if direct {
                vm.append = append;
                "-kernel/-initrd".to_string()
            } else {
                // The terminal is the serial console, so the serial entry is the default.
                let opts = image::ImageOptions {
                    serial_default: true,
                    data_fs,
                    extra_args: append,
                    ..Default::default()
                };
                let stick = work_dir.join("rescue-stick.img");
                let r = image::write_image(&stick, &built.vmlinuz, &built.initramfs, &opts)?;
                print_image(&r);
                vm.disks
                    .push(qemu::Disk::new(&stick, qemu::Bus::Usb).boot_first());
                if bios {
                    vm.bios = true;
                    "SeaBIOS from the USB stick".to_string()
                } else {
                    vm.uefi = Some(qemu::Uefi::new(secure_boot, &work_dir).with_context(|| {
                        format!(
                            "copying the OVMF variable store from {} into {} (install the ovmf package: scripts/setup)",
                            qemu::OVMF_DIR,
                            work_dir.display()
                        )
                    })?);
                    format!(
                        "UEFI (Secure Boot {}) from the USB stick",
                        if secure_boot { "on" } else { "off" }
                    )
                }
            };
            eprintln!("builder: booting under QEMU through {how}; quit with Ctrl-A then X");
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
            data_fs,
            work_dir,
            kernel,
        } => {
            let built = kernel.build(&work_dir)?;
            let opts = image::ImageOptions {
                size: size
                    .checked_mul(1 << 20)
                    .context("--size is in MiB and too large")?,
                serial_default: serial,
                data_fs,
                ..Default::default()
            };
            let r = image::write_image(&out, &built.vmlinuz, &built.initramfs, &opts)?;
            print_image(&r);
        }
        Cmd::S3Server { bucket } => {
            let server = builder::servers::S3Server::start();
            server.create_bucket(&bucket);
            println!(
                "s3://{bucket}/repo?endpoint={}&region={}",
                server.endpoint, server.region
            );
            println!("AWS_ACCESS_KEY_ID={}", server.access_key);
            println!("AWS_SECRET_ACCESS_KEY={}", server.secret_key);
            use std::io::Write;
            std::io::stdout().flush()?;
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(server);
        }
        Cmd::Netboot {
            out_dir,
            serial,
            job,
            kernel,
        } => {
            kernel.build(&out_dir)?;
            let append = job.map(|j| format!("rescue.job={j}")).unwrap_or_default();
            let script = image::write_ipxe_script(&out_dir, serial, &append)?;
            eprintln!(
                "builder: wrote {}; serve {} over TFTP or HTTP and chain-load boot.ipxe from iPXE (see README)",
                script.display(),
                out_dir.display()
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

fn print_image(r: &image::ImageReport) {
    eprintln!(
        "builder: wrote {}: {} bytes ({:.1} MB), disk GUID {}, {} boot, {} data partition (UUID {}), in {:.2} s",
        r.path.display(),
        r.info.size,
        r.info.size as f64 / 1e6,
        r.info.disk_guid,
        if r.info.bios_boot.is_some() {
            "UEFI + BIOS"
        } else {
            "UEFI"
        },
        r.info.data_fs,
        r.info.data_id,
        r.seconds
    );
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
    let fw = &b.firmware;
    if fw.packages.is_empty() {
        eprintln!("builder: no firmware carried");
    } else {
        eprintln!(
            "builder: firmware: {} files ({:.1} MB) from {}; {} named by modules are not in Debian's archive{}",
            fw.count,
            fw.bytes as f64 / 1e6,
            fw.packages.join(", "),
            fw.missing.len(),
            if fw.missing.is_empty() { "" } else { " (see /etc/rescue-firmware)" }
        );
    }
    eprintln!(
        "builder: wrote {} and {}",
        b.vmlinuz.display(),
        b.initramfs.display()
    );
}
