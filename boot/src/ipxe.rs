//! Network boot: an iPXE script with the stick's menu (see [`crate::menu`]) that loads `vmlinuz` and
//! `initramfs.img` from wherever the script itself came from. iPXE resolves relative names against the
//! script's URI, so the same three files work from a TFTP root or any HTTP directory.

use crate::menu;

pub const SCRIPT_NAME: &str = "boot.ipxe";
pub const KERNEL_NAME: &str = "vmlinuz";
pub const INITRD_NAME: &str = "initramfs.img";

/// The script. `initrd=` on the command line names the initrd for the kernel's EFI stub when iPXE runs
/// as a UEFI application; BIOS boots ignore it. If iPXE was built without menu support `choose` fails
/// and the default entry boots.
/// `append` is added to every entry's kernel command line (e.g. `rescue.job=http://…/job.toml`).
pub fn script(serial_default: bool, append: &str) -> String {
    let mut entries = menu::entries(None);
    for e in &mut entries {
        e.args = format!("{} {append}", e.args).trim().to_string();
    }
    let default = entries[menu::default_index(serial_default)].id;
    let timeout_ms = menu::TIMEOUT_SECS * 1000;
    let mut s = format!(
        "#!ipxe\n\
         # Written by the rescue builder: boots {KERNEL_NAME} and {INITRD_NAME} from the directory this\n\
         # script was fetched from (TFTP or HTTP).\n\
         menu Rescue\n"
    );
    for e in &entries {
        s.push_str(&format!("item {} {}\n", e.id, e.title));
    }
    s.push_str(&format!(
        "choose --default {default} --timeout {timeout_ms} entry && goto ${{entry}} || goto {default}\n"
    ));
    for e in &entries {
        s.push_str(&format!(":{}\nset args {}\ngoto boot\n", e.id, e.args));
    }
    s.push_str(&format!(
        ":boot\n\
         kernel {KERNEL_NAME} initrd={INITRD_NAME} ${{args}}\n\
         initrd {INITRD_NAME}\n\
         boot\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_has_the_menu_and_loads_relative_files() {
        let s = script(true, "");
        assert!(s.starts_with("#!ipxe\n"));
        assert_eq!(s.matches("\nitem ").count(), 3);
        assert!(
            s.contains("choose --default serial --timeout 3000 entry"),
            "{s}"
        );
        assert!(
            s.contains("set args console=tty0 console=ttyS0,115200\n"),
            "{s}"
        );
        assert!(
            s.contains("kernel vmlinuz initrd=initramfs.img ${args}\n"),
            "{s}"
        );
        assert!(s.contains("\ninitrd initramfs.img\nboot\n"), "{s}");
        assert!(!s.contains("rescue.stick"), "no stick on a network boot");
        assert!(script(false, "").contains("--default rescue "));
    }
}
