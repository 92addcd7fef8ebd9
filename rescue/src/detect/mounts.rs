//! The mount table from `/proc/self/mountinfo`, keyed by device number.
//!
//! mountinfo (not /proc/mounts) because it carries `MAJ:MIN`, which matches sysfs `dev` files without
//! needing device nodes or udev symlinks to agree on names. A FUSE filesystem (NTFS through ntfs-3g)
//! has an anonymous number of its own (`0:N`); its source, the device node ntfs-3g was given, names the
//! block device it occupies.

use std::collections::HashMap;

/// A block device number (`MAJ:MIN`).
pub(crate) type DevNum = (u32, u32);

/// Mount points per device, in mountinfo order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MountTable {
    by_dev: HashMap<DevNum, Vec<String>>,
}

impl MountTable {
    pub(crate) fn mounts_of(&self, dev: Option<DevNum>) -> Vec<String> {
        dev.and_then(|d| self.by_dev.get(&d).cloned())
            .unwrap_or_default()
    }
}

/// Parses "MAJ:MIN" as found in mountinfo and sysfs `dev` files.
pub(crate) fn parse_devnum(s: &str) -> Option<DevNum> {
    let (maj, min) = s.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// Parses mountinfo text. Malformed lines are skipped: the table is advisory (it feeds "mounted"
/// warnings, and the plan module re-checks before writing anything).
#[cfg(test)]
pub(crate) fn parse_mountinfo(text: &str) -> MountTable {
    parse_mountinfo_with(text, |_| None)
}

/// As [`parse_mountinfo`]; a FUSE mount whose source is a device node is also recorded under the device
/// number `block_dev` finds for that node.
pub(crate) fn parse_mountinfo_with(
    text: &str,
    block_dev: impl Fn(&str) -> Option<DevNum>,
) -> MountTable {
    let mut table = MountTable::default();
    for line in text.lines() {
        // id parent MAJ:MIN root mount_point options [optional...] - fstype source superopts
        let mut fields = line.split(' ');
        let (Some(_id), Some(_parent), Some(dev), Some(_root), Some(mount_point)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some(dev) = parse_devnum(dev) else {
            continue;
        };
        let point = unescape(mount_point);
        let mut devs = vec![dev];
        if let Some((_, tail)) = line.split_once(" - ") {
            let mut t = tail.split(' ');
            if let (Some(fstype), Some(source)) = (t.next(), t.next()) {
                let fuse = fstype == "fuseblk" || fstype == "fuse" || fstype.starts_with("fuse.");
                if fuse && dev.0 == 0 && source.starts_with("/dev/") {
                    devs.extend(block_dev(&unescape(source)));
                }
            }
        }
        for dev in devs {
            let list = table.by_dev.entry(dev).or_default();
            if !list.contains(&point) {
                list.push(point.clone());
            }
        }
    }
    table
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash (`\040` etc.).
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
36 27 8:17 / /mnt/my\\040stick rw,relatime shared:5 master:2 - vfat /dev/sdb1 rw,fmask=0022
37 27 8:17 /sub /srv/bind\\011tab\\134x rw - vfat /dev/sdb1 rw
38 27 8:16 / /media/whole rw - ext4 /dev/sdb rw
39 27 8:17 / /mnt/my\\040stick rw - vfat /dev/sdb1 rw
garbage line
40 27 xx / /bad rw - tmpfs tmpfs rw
";

    #[test]
    fn maps_devices_to_unescaped_mount_points() {
        let t = parse_mountinfo(SAMPLE);
        assert_eq!(t.mounts_of(Some((254, 1))), vec!["/".to_string()]);
        assert_eq!(
            t.mounts_of(Some((8, 17))),
            vec!["/mnt/my stick".to_string(), "/srv/bind\ttab\\x".to_string()]
        );
        assert_eq!(t.mounts_of(Some((8, 16))), vec!["/media/whole".to_string()]);
        assert!(t.mounts_of(Some((8, 0))).is_empty());
        assert!(t.mounts_of(None).is_empty());
        assert_eq!(t.mounts_of(Some((0, 21))), vec!["/proc".to_string()]);
    }

    #[test]
    fn a_fuse_mount_belongs_to_its_source_device() {
        let text =
            "50 27 0:52 / /run/rescue/mnt/vdb1 rw,nosuid,nodev - fuseblk /dev/vdb1 rw,user_id=0\n\
                    51 27 0:53 / /mnt/s rw - fuse.sshfs me@host:/x rw\n";
        let t = parse_mountinfo_with(text, |src| (src == "/dev/vdb1").then_some((254, 17)));
        assert_eq!(
            t.mounts_of(Some((254, 17))),
            vec!["/run/rescue/mnt/vdb1".to_string()]
        );
        assert_eq!(
            t.mounts_of(Some((0, 52))),
            vec!["/run/rescue/mnt/vdb1".to_string()]
        );
        assert_eq!(t.mounts_of(Some((0, 53))), vec!["/mnt/s".to_string()]);
    }

    #[test]
    fn unescape_leaves_odd_sequences_alone() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\012"), "a\n");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\9999"), "\\9999");
        assert_eq!(unescape("\\777"), "\\777");
        assert_eq!(unescape("\\"), "\\");
    }

    #[test]
    fn devnum_parsing() {
        assert_eq!(parse_devnum("8:1\n"), Some((8, 1)));
        assert_eq!(parse_devnum("259:12"), Some((259, 12)));
        assert_eq!(parse_devnum("8"), None);
        assert_eq!(parse_devnum("a:b"), None);
    }

    #[test]
    fn empty_and_garbage_input() {
        assert_eq!(parse_mountinfo(""), MountTable::default());
        assert_eq!(parse_mountinfo("\n\n  \n1 2 3"), MountTable::default());
    }
}
