//! QEMU command lines: a q35 machine under TCG (KVM only when asked for and a probe shows it really works
//! here), disks on the buses a real PC has, and one of four ways to boot: the kernel and initramfs given
//! directly (`-kernel`/`-initrd`), UEFI firmware (OVMF, optionally with Secure Boot) or SeaBIOS from the
//! disk marked `boot`, or SeaBIOS's iPXE network boot from a TFTP directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How a disk is attached to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    /// The q35 machine's built-in ICH9 AHCI controller (SATA).
    Ahci,
    Nvme,
    /// usb-storage on a qemu-xhci controller.
    Usb,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub bus: Bus,
    pub serial: Option<String>,
    /// Logical (and physical) block size presented to the guest: 512 or 4096.
    pub block_size: u32,
    /// Attach read-only (QEMU refuses writes).
    pub read_only: bool,
    /// The firmware boots from this disk first.
    pub boot: bool,
    /// Inject I/O errors through QEMU's blkdebug driver with this config file (see [`blkdebug_config`]).
    pub blkdebug: Option<PathBuf>,
    /// `path` is the Unix socket of an NBD server exporting the disk (QEMU's own NBD client attaches it).
    pub nbd: bool,
    /// QEMU's name of the file's format (`raw`, `qcow2`, `vpc`, `vhdx`, `vmdk`, `vdi`).
    pub format: &'static str,
}

impl Disk {
    pub fn new(path: impl Into<PathBuf>, bus: Bus) -> Self {
        Disk {
            path: path.into(),
            bus,
            serial: None,
            block_size: 512,
            read_only: false,
            boot: false,
            blkdebug: None,
            nbd: false,
            format: "raw",
        }
    }

    /// The disk an NBD server exports on the Unix socket `socket`.
    pub fn nbd(socket: impl Into<PathBuf>, bus: Bus) -> Self {
        Disk {
            nbd: true,
            ..Disk::new(socket, bus)
        }
    }

    /// Fail the guest's reads or writes of chosen sectors with EIO (the config from [`blkdebug_config`]).
    pub fn blkdebug(mut self, config: impl Into<PathBuf>) -> Self {
        self.blkdebug = Some(config.into());
        self
    }

    /// The file is in this format (QEMU's name) rather than raw.
    pub fn format(mut self, f: &'static str) -> Self {
        self.format = f;
        self
    }

    pub fn boot_first(mut self) -> Self {
        self.boot = true;
        self
    }

    pub fn serial(mut self, s: &str) -> Self {
        self.serial = Some(s.to_string());
        self
    }

    pub fn block_size(mut self, b: u32) -> Self {
        self.block_size = b;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

/// `RESCUE_QEMU_ACCEL=kvm` asks for KVM; anything else (the default) is TCG. KVM is never assumed: nested
/// KVM on these machines hangs or aborts boots, so callers probe it with a real boot first.
pub fn accel_from_env() -> Accel {
    match std::env::var("RESCUE_QEMU_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    }
}

/// Boot through UEFI firmware (OVMF) from a disk, as a PC does, instead of handing QEMU the kernel.
#[derive(Debug, Clone)]
pub struct Uefi {
    /// Secure Boot enforced: Microsoft keys enrolled, SMM, secure flash.
    pub secure: bool,
    /// A writable copy of the firmware variables (the firmware stores boot entries there).
    pub vars: PathBuf,
}

/// The file DHCP names on a network boot (see [`Vm::netboot`]).
pub const NETBOOT_SCRIPT: &str = "boot.ipxe";

/// Where OVMF's files are (package `ovmf`).
pub const OVMF_DIR: &str = "/usr/share/OVMF";

impl Uefi {
    /// Copy the matching variable store into `dir` (each VM needs its own).
    pub fn new(secure: bool, dir: &Path) -> std::io::Result<Uefi> {
        let name = if secure {
            "OVMF_VARS_4M.ms.fd"
        } else {
            "OVMF_VARS_4M.fd"
        };
        let vars = dir.join(name);
        std::fs::copy(Path::new(OVMF_DIR).join(name), &vars)?;
        Ok(Uefi { secure, vars })
    }

    fn code(&self) -> PathBuf {
        Path::new(OVMF_DIR).join(if self.secure {
            "OVMF_CODE_4M.ms.fd"
        } else {
            "OVMF_CODE_4M.fd"
        })
    }
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command line after the console settings.
    pub append: String,
    pub disks: Vec<Disk>,
    pub memory_mib: u32,
    pub accel: Accel,
    /// A QMP/HMP monitor on this Unix socket (for hotplug); None for none.
    pub monitor: Option<PathBuf>,
    /// The serial console and monitor on the terminal (`builder run`), else the serial console on stdio only.
    pub interactive: bool,
    /// Always present a USB controller, so USB disks can be hotplugged later.
    pub usb_controller: bool,
    /// Boot through UEFI firmware from a disk; `kernel`, `initrd` and `append` are then unused.
    pub uefi: Option<Uefi>,
    /// Boot through SeaBIOS (QEMU's default firmware) from a disk, as a legacy PC does; ignored when `uefi`
    /// is set. `kernel`, `initrd` and `append` are then unused.
    pub bios: bool,
    /// Network boot: a virtio NIC on QEMU's user network whose DHCP names `boot.ipxe` in this TFTP root;
    /// the firmware's iPXE fetches and runs it. Implies firmware boot (SeaBIOS unless `uefi` is set).
    pub netboot: Option<PathBuf>,
    /// A virtio NIC on QEMU's user network (its DHCP gives 10.0.2.15; the host's 127.0.0.1 is 10.0.2.2
    /// inside), `restrict`ed to nothing but QEMU's own DHCP and the forwards given, or not. Without it
    /// (and without `netboot`) the machine has no NIC at all.
    pub user_net: Option<UserNet>,
}

/// QEMU's user-mode network for a guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNet {
    /// The guest reaches nothing outside QEMU (`restrict=on`): DHCP only, unless forwards are given.
    pub restrict: bool,
    /// `guestfwd` rules: `tcp:GUEST_IP:PORT-tcp:127.0.0.1:PORT`, a guest address reaching a host server.
    pub guest_forwards: Vec<String>,
}

impl Vm {
    pub fn new(kernel: &Path, initrd: &Path) -> Self {
        Vm {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: String::new(),
            disks: Vec::new(),
            memory_mib: 512,
            accel: accel_from_env(),
            monitor: None,
            interactive: false,
            usb_controller: true,
            uefi: None,
            bios: false,
            netboot: None,
            user_net: None,
        }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let secure = self.uefi.as_ref().is_some_and(|u| u.secure);
        let machine = if secure { "q35,smm=on" } else { "q35" };
        let memory = self.memory_mib.to_string();
        c.args([
            "-machine",
            machine,
            "-m",
            &memory,
            "-smp",
            "2",
            "-no-reboot",
        ]);
        match self.accel {
            Accel::Tcg => c.args(["-accel", "tcg", "-cpu", "max"]),
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        };
        match &self.uefi {
            None if self.bios || self.netboot.is_some() => {}
            None => {
                c.arg("-kernel")
                    .arg(&self.kernel)
                    .arg("-initrd")
                    .arg(&self.initrd);
                let append = format!("console=ttyS0,115200 panic=-1 {}", self.append);
                c.arg("-append").arg(append.trim());
            }
            Some(u) => {
                if u.secure {
                    c.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                }
                let code = u.code();
                c.arg("-drive").arg(format!(
                    "if=pflash,format=raw,readonly=on,file={}",
                    code.display()
                ));
                c.arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", u.vars.display()));
            }
        }
        if self.interactive {
            c.arg("-nographic");
        } else {
            c.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
        }
        if let Some(sock) = &self.monitor {
            c.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", sock.display()));
        }
        if let Some(root) = &self.netboot {
            c.arg("-netdev").arg(format!(
                "user,id=net0,tftp={},bootfile={}",
                root.display(),
                NETBOOT_SCRIPT
            ));
            c.args(["-device", "virtio-net-pci,netdev=net0,bootindex=0"]);
        }
        match (&self.netboot, &self.user_net) {
            (Some(_), _) => {}
            (None, Some(net)) => {
                let mut netdev = format!(
                    "user,id=net0,restrict={}",
                    if net.restrict { "on" } else { "off" }
                );
                for f in &net.guest_forwards {
                    netdev.push_str(&format!(",guestfwd={f}"));
                }
                c.arg("-netdev").arg(netdev);
                c.args(["-device", "virtio-net-pci,netdev=net0"]);
            }
            // QEMU would add a NIC on its user network by default.
            (None, None) => {
                c.args(["-nic", "none"]);
            }
        }
        if self.usb_controller || self.disks.iter().any(|d| d.bus == Bus::Usb) {
            c.args(["-device", "qemu-xhci,id=xhci"]);
        }
        let mut ahci_port = 0;
        for (i, d) in self.disks.iter().enumerate() {
            let id = format!("disk{i}");
            let ro = if d.read_only { ",read-only=on" } else { "" };
            match &d.blkdebug {
                None if d.nbd => c.arg("-drive").arg(format!(
                    "if=none,id={id},format={},cache=unsafe,file.driver=nbd,file.server.type=unix,\
                     file.server.path={}{ro}",
                    d.format,
                    d.path.display()
                )),
                None => c.arg("-drive").arg(format!(
                    "if=none,id={id},format={},cache=unsafe,file={}{ro}",
                    d.format,
                    d.path.display()
                )),
                // blkdebug sits under the raw format driver, whose read/write events arm its rules.
                Some(conf) => c.arg("-drive").arg(format!(
                    "if=none,id={id},format=raw,cache=unsafe,file.driver=blkdebug,file.config={},\
                     file.image.driver=file,file.image.filename={}{ro}",
                    conf.display(),
                    d.path.display()
                )),
            };
            let serial = d
                .serial
                .as_ref()
                .map(|s| format!(",serial={s}"))
                .unwrap_or_default();
            let bs = if d.block_size != 512 {
                format!(
                    ",logical_block_size={0},physical_block_size={0}",
                    d.block_size
                )
            } else {
                String::new()
            };
            let dev = match d.bus {
                Bus::Virtio => format!("virtio-blk-pci,drive={id}{serial}{bs}"),
                Bus::Ahci => {
                    ahci_port += 1;
                    format!("ide-hd,drive={id},bus=ide.{}{serial}{bs}", ahci_port - 1)
                }
                Bus::Nvme => format!(
                    "nvme,drive={id}{}{bs}",
                    if serial.is_empty() {
                        format!(",serial=NVME{i}")
                    } else {
                        serial
                    }
                ),
                Bus::Usb => format!("usb-storage,bus=xhci.0,drive={id}{serial}"),
            };
            // Firmware tries this disk first (QEMU's boot order, which SeaBIOS and OVMF both follow).
            let boot = if d.boot && self.netboot.is_none() {
                ",bootindex=1"
            } else {
                ""
            };
            c.arg("-device").arg(format!("{dev}{boot}"));
        }
        c
    }
}

/// A blkdebug config that fails every `read` (or `write`) request touching one of `sectors` (512-byte
/// units) with EIO, every time: a bad sector as a failing disk presents it.
pub fn blkdebug_config(sectors: &[u64], write: bool) -> String {
    // The event arms the rule; `iotype` keeps it to that kind of request (without it, once armed, a rule
    // fails reads and writes alike).
    let (event, iotype) = if write {
        ("write_aio", "write")
    } else {
        ("read_aio", "read")
    };
    sectors
        .iter()
        .map(|s| {
            format!(
                "[inject-error]\nevent = \"{event}\"\niotype = \"{iotype}\"\nerrno = \"5\"\nsector = \"{s}\"\nonce = \"off\"\n\n"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_attaches_each_bus() {
        let mut vm = Vm::new(Path::new("/k"), Path::new("/i"));
        vm.accel = Accel::Tcg;
        vm.disks = vec![
            Disk::new("/a.img", Bus::Virtio).serial("V1"),
            Disk::new("/b.img", Bus::Ahci),
            Disk::new("/c.img", Bus::Nvme).block_size(4096),
            Disk::new("/d.img", Bus::Usb),
        ];
        let args: Vec<String> = vm
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("virtio-blk-pci,drive=disk0,serial=V1"),
            "{joined}"
        );
        assert!(joined.contains("ide-hd,drive=disk1,bus=ide.0"), "{joined}");
        assert!(
            joined.contains("nvme,drive=disk2,serial=NVME2,logical_block_size=4096"),
            "{joined}"
        );
        assert!(
            joined.contains("usb-storage,bus=xhci.0,drive=disk3"),
            "{joined}"
        );
        assert!(joined.contains("-accel tcg"), "{joined}");
        assert!(joined.contains("-kernel /k"), "{joined}");
        assert!(!joined.contains("bootindex"), "{joined}");
    }

    #[test]
    fn firmware_boots_from_the_boot_disk() {
        let mut vm = Vm::new(Path::new("/k"), Path::new("/i"));
        vm.bios = true;
        vm.disks = vec![
            Disk::new("/demo.img", Bus::Virtio),
            Disk::new("/stick.img", Bus::Usb).boot_first(),
        ];
        let joined = vm
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            !joined.contains("-kernel") && !joined.contains("pflash"),
            "{joined}"
        );
        assert!(
            joined.contains("usb-storage,bus=xhci.0,drive=disk1,bootindex=1"),
            "{joined}"
        );
        assert!(joined.contains("virtio-blk-pci,drive=disk0 "), "{joined}");

        let mut vm = Vm::new(Path::new("/k"), Path::new("/i"));
        vm.netboot = Some(PathBuf::from("/srv/tftp"));
        let joined = vm
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(!joined.contains("-kernel"), "{joined}");
        assert!(
            joined.contains("user,id=net0,tftp=/srv/tftp,bootfile=boot.ipxe"),
            "{joined}"
        );
        assert!(
            joined.contains("virtio-net-pci,netdev=net0,bootindex=0"),
            "{joined}"
        );
    }
}
