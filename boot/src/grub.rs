//! The grub menu. The signed grub reads `$prefix/grub.cfg` with `$prefix` = `(the ESP)/EFI/debian`, so
//! the kernel paths below are on the same partition and need no `search`.

use crate::gpt::Guid;

pub const KERNEL_PATH: &str = "/rescue/vmlinuz";
pub const INITRD_PATH: &str = "/rescue/initrd.img";

/// The menu: normal, serial console, safe graphics. Every entry names the stick's disk GUID so PID 1
/// knows which disk it booted from (and never offers it as a restore target).
pub fn grub_cfg(disk_guid: &Guid, serial_default: bool) -> String {
    let stick = format!("rescue.stick={disk_guid}");
    let entries = [
        ("Rescue", stick.clone()),
        (
            "Rescue (serial console ttyS0)",
            format!("console=tty0 console=ttyS0,115200 {stick}"),
        ),
        ("Rescue (safe graphics)", format!("nomodeset {stick}")),
    ];
    let default = if serial_default { 1 } else { 0 };
    let mut cfg = format!(
        "# Written by the rescue builder.\n\
         set default={default}\n\
         set timeout=3\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n"
    );
    for (title, args) in entries {
        cfg.push_str(&format!(
            "\nmenuentry '{title}' {{\n\
             \tlinux {KERNEL_PATH} {args}\n\
             \tinitrd {INITRD_PATH}\n\
             }}\n"
        ));
    }
    cfg
}
