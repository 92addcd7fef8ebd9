//! The boot menu, once for every loader: GRUB on the stick (UEFI and BIOS read the same `grub.cfg`) and
//! iPXE for network boot show the same three entries with the same kernel command lines.

use crate::gpt::Guid;

/// Seconds the menu waits before booting the default entry.
pub const TIMEOUT_SECS: u32 = 3;

/// One menu entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A short identifier (an iPXE label).
    pub id: &'static str,
    pub title: &'static str,
    /// The kernel command line of this entry, before any extra arguments.
    pub args: String,
}

/// Normal, serial console, safe graphics. On the stick every entry names the stick's disk GUID
/// (`rescue.stick=`), so PID 1 knows which disk it booted from and never offers it as a restore target;
/// a network boot has no stick and passes `None`.
pub fn entries(stick: Option<&Guid>) -> Vec<Entry> {
    let stick = stick
        .map(|g| format!("rescue.stick={g}"))
        .unwrap_or_default();
    let join = |a: &str| format!("{a} {stick}").trim().to_string();
    vec![
        Entry {
            id: "rescue",
            title: "Rescue",
            args: stick.clone(),
        },
        Entry {
            id: "serial",
            title: "Rescue (serial console ttyS0)",
            args: join("console=tty0 console=ttyS0,115200"),
        },
        Entry {
            id: "safe",
            title: "Rescue (safe graphics)",
            args: join("nomodeset"),
        },
    ]
}

/// The index of the default entry: the serial console one when asked for (headless machines, QEMU).
pub fn default_index(serial_default: bool) -> usize {
    usize::from(serial_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_entries_with_and_without_a_stick() {
        let g = Guid::from_hash(&[1; 32]);
        let with = entries(Some(&g));
        assert_eq!(with.len(), 3);
        assert!(with
            .iter()
            .all(|e| e.args.ends_with(&format!("rescue.stick={g}"))));
        let without = entries(None);
        assert_eq!(without[0].args, "");
        assert_eq!(without[1].args, "console=tty0 console=ttyS0,115200");
        assert_eq!(without[2].args, "nomodeset");
        assert_eq!(default_index(true), 1);
        assert_eq!(default_index(false), 0);
    }
}
