//! Choosing a disk or a partition by what it is (serial number, model, bus, size, filesystem label)
//! rather than by its kernel name, which changes from one boot or machine to the next.
//!
//! A selector is written as comma-separated rules, for example `serial=WD-123`,
//! `bus=nvme,size=200G..300G`, `internal`, or `serial=IMG,part=2` and `label=RESCUE-DATA` for a
//! partition. Every rule must hold; a selector must match exactly one disk (or partition), and when
//! it matches none or several, the error lists what was seen so the user can sharpen it.

use std::fmt::Write as _;

use super::{Disk, Partition, Report, Transport};
use crate::units::json_name;

/// Rules about the disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskRules {
    /// Serial number, exactly (`*` matches any run of characters).
    pub serial: Option<String>,
    /// Model, case-insensitively (`*` matches any run of characters).
    pub model: Option<String>,
    pub bus: Option<Transport>,
    /// Size in bytes, inclusive bounds.
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Only non-removable disks that are not on USB and are not the rescue stick.
    pub internal: bool,
    /// Only removable or USB disks.
    pub removable: bool,
}

/// Rules about a partition (or a disk formatted as a whole, for `label` and `uuid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartRules {
    pub number: Option<u32>,
    /// Filesystem label, exactly.
    pub label: Option<String>,
    /// Filesystem UUID or GPT partition GUID, case-insensitively.
    pub uuid: Option<String>,
    /// GPT partition name, exactly.
    pub name: Option<String>,
}

impl PartRules {
    fn is_empty(&self) -> bool {
        *self == PartRules::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub disk: DiskRules,
    pub part: PartRules,
}

const HELP: &str = "rules are serial=, model=, bus=, size=MIN..MAX, internal, removable, and for a \
                    partition part=N, label=, uuid=, partname= (comma-separated, e.g. serial=WD123,part=2)";

/// Whether a command-line device argument is a selector rather than a path.
pub fn looks_like_selector(arg: &str) -> bool {
    !arg.starts_with('/')
        && (arg.contains('=')
            || arg
                .split(',')
                .all(|w| matches!(w, "internal" | "removable")))
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut s = Selector::default();
        for rule in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (key, value) = match rule.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (rule, ""),
            };
            let need_value = || {
                if value.is_empty() {
                    Err(format!("`{rule}` needs a value; {HELP}"))
                } else {
                    Ok(value.to_string())
                }
            };
            match key {
                "serial" => s.disk.serial = Some(need_value()?),
                "model" => s.disk.model = Some(need_value()?),
                "bus" => s.disk.bus = Some(parse_bus(&need_value()?)?),
                "size" => {
                    let (min, max) = parse_size_range(&need_value()?)?;
                    s.disk.min_size = min;
                    s.disk.max_size = max;
                }
                "internal" if value.is_empty() => s.disk.internal = true,
                "removable" if value.is_empty() => s.disk.removable = true,
                "part" => {
                    s.part.number = Some(need_value()?.parse().map_err(|_| {
                        format!("`{rule}`: the partition number must be a whole number")
                    })?)
                }
                "label" => s.part.label = Some(need_value()?),
                "uuid" => s.part.uuid = Some(need_value()?),
                "partname" => s.part.name = Some(need_value()?),
                _ => return Err(format!("unknown rule `{rule}`; {HELP}")),
            }
        }
        if s == Selector::default() {
            return Err(format!("an empty selector matches everything; {HELP}"));
        }
        if s.disk.internal && s.disk.removable {
            return Err("`internal` and `removable` exclude each other".into());
        }
        Ok(s)
    }

    /// The device path of the one disk or partition this selector matches in `report`.
    pub fn resolve(&self, report: &Report) -> Result<String, String> {
        let disks: Vec<&Disk> = report
            .disks
            .iter()
            .filter(|d| self.disk.matches(d))
            .collect();
        let found: Vec<String> = if self.part.is_empty() {
            disks.iter().map(|d| d.path.clone()).collect()
        } else {
            let mut v = Vec::new();
            for d in &disks {
                if d.partitions.is_empty() && self.part.matches_whole_disk(d) {
                    v.push(d.path.clone());
                }
                for p in d.partitions.iter().filter(|p| self.part.matches(p)) {
                    v.push(p.path.clone().unwrap_or_else(|| {
                        format!("{} (partition {} has no device node)", d.path, p.number)
                    }));
                }
            }
            v
        };
        match found.as_slice() {
            [one] if !one.contains(' ') => Ok(one.clone()),
            [one] => Err(format!("the selector matched {one}")),
            [] => Err(format!(
                "no {} matches the selector; the disks seen were:\n{}",
                if self.part.is_empty() { "disk" } else { "partition" },
                describe(report)
            )),
            many => Err(format!(
                "the selector matches {} devices ({}); add rules until only one matches. The disks seen were:\n{}",
                many.len(),
                many.join(", "),
                describe(report)
            )),
        }
    }
}

impl DiskRules {
    pub fn matches(&self, d: &Disk) -> bool {
        let usb = d.transport == Transport::Usb;
        self.serial
            .as_ref()
            .is_none_or(|s| d.serial.as_deref().is_some_and(|v| glob(s, v, false)))
            && self
                .model
                .as_ref()
                .is_none_or(|m| d.model.as_deref().is_some_and(|v| glob(m, v.trim(), true)))
            && self.bus.is_none_or(|b| b == d.transport)
            && self.min_size.is_none_or(|m| d.size_bytes >= m)
            && self.max_size.is_none_or(|m| d.size_bytes <= m)
            && (!self.internal || (!d.removable && !usb && !d.boot_medium))
            && (!self.removable || d.removable || usb)
    }
}

impl PartRules {
    fn matches(&self, p: &Partition) -> bool {
        !p.extended
            && self.number.is_none_or(|n| n == p.number)
            && self
                .label
                .as_ref()
                .is_none_or(|l| p.fs_label.as_deref() == Some(l.as_str()))
            && self.uuid.as_ref().is_none_or(|u| {
                [p.fs_uuid.as_deref(), p.uuid.as_deref()]
                    .into_iter()
                    .flatten()
                    .any(|v| v.eq_ignore_ascii_case(u))
            })
            && self
                .name
                .as_ref()
                .is_none_or(|n| p.name.as_deref() == Some(n.as_str()))
    }

    /// A disk formatted as a whole (no table) answers `label` and `uuid` itself.
    fn matches_whole_disk(&self, d: &Disk) -> bool {
        d.fs.is_some()
            && self.number.is_none()
            && self.name.is_none()
            && self
                .label
                .as_ref()
                .is_none_or(|l| d.fs_label.as_deref() == Some(l.as_str()))
            && self.uuid.as_ref().is_none_or(|u| {
                d.fs_uuid
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case(u))
            })
    }
}

/// One line per disk: what a user needs to write a selector for it.
fn describe(report: &Report) -> String {
    let mut s = String::new();
    if report.disks.is_empty() {
        s.push_str("  (none)\n");
    }
    for d in &report.disks {
        let _ = writeln!(
            s,
            "  {}  serial={}  model={}  bus={}  size={}{}{}",
            d.path,
            d.serial.as_deref().unwrap_or("-"),
            d.model.as_deref().map(str::trim).unwrap_or("-"),
            json_name(&d.transport),
            d.size_bytes,
            if d.removable { "  removable" } else { "" },
            if d.boot_medium {
                "  (this rescue stick)"
            } else {
                ""
            },
        );
        for p in &d.partitions {
            let _ = writeln!(
                s,
                "    part={}  label={}  uuid={}",
                p.number,
                p.fs_label.as_deref().unwrap_or("-"),
                p.fs_uuid.as_deref().or(p.uuid.as_deref()).unwrap_or("-"),
            );
        }
    }
    s
}

fn parse_bus(v: &str) -> Result<Transport, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "virtio" => Transport::Virtio,
        "sata" | "ata" => Transport::Sata,
        "nvme" => Transport::Nvme,
        "usb" => Transport::Usb,
        "mmc" | "sd" => Transport::Mmc,
        "scsi" | "sas" => Transport::Scsi,
        _ => {
            return Err(format!(
                "unknown bus `{v}`; use virtio, sata, nvme, usb, mmc or scsi"
            ))
        }
    })
}

/// `MIN..MAX`, `MIN..`, `..MAX` or one size (that size exactly); sizes take K, M, G, T (powers of
/// 1024) or KB, MB, GB, TB (powers of 1000), as disk labels give them.
pub fn parse_size_range(v: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let opt = |s: &str| -> Result<Option<u64>, String> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            parse_size(s).map(Some)
        }
    };
    let (min, max) = match v.split_once("..") {
        Some((a, b)) => (opt(a)?, opt(b)?),
        None => {
            let n = parse_size(v)?;
            (Some(n), Some(n))
        }
    };
    if let (Some(a), Some(b)) = (min, max) {
        if a > b {
            return Err(format!(
                "size range `{v}`: the minimum is larger than the maximum"
            ));
        }
    }
    Ok((min, max))
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 500G, 1.5T, 256GB, 1000000000)"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KIB" => 1024.0,
        "M" | "MIB" => 1024f64.powi(2),
        "G" | "GIB" => 1024f64.powi(3),
        "T" | "TIB" => 1024f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => {
            return Err(format!(
                "`{s}`: unknown size unit `{unit}` (use K, M, G, T or KB, MB, GB, TB)"
            ))
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// `pattern` against `value`, where `*` matches any run of characters.
fn glob(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (p, v) = if ignore_case {
        (pattern.to_lowercase(), value.to_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == v;
    }
    let mut rest = v.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::detect::{PartitionTable, Transport};
    use proptest::prelude::*;

    fn disk(path: &str, serial: &str, transport: Transport, size: u64, removable: bool) -> Disk {
        Disk {
            path: path.into(),
            name: path.trim_start_matches("/dev/").into(),
            size_bytes: size,
            logical_sector_size: 512,
            physical_sector_size: 512,
            model: Some("QEMU HARDDISK   ".into()),
            serial: Some(serial.into()),
            transport,
            removable,
            read_only: false,
            rotational: false,
            table: PartitionTable::None,
            gpt: None,
            mbr: None,
            partitions: vec![],
            fs: None,
            fs_label: None,
            fs_uuid: None,
            mounts: vec![],
            boot_medium: false,
            problems: vec![],
            whole_disk: None,
            identity: None,
        }
    }

    fn report() -> Report {
        let mut a = disk("/dev/vda", "SRC", Transport::Virtio, 1 << 30, false);
        let mut p = Partition::new(1, 1 << 20, 100 << 20, "0x83".into(), "Linux");
        p.path = Some("/dev/vda1".into());
        p.fs_label = Some("DATA".into());
        p.fs_uuid = Some("abcd-1234".into());
        a.partitions.push(p);
        let mut p2 = Partition::new(2, 101 << 20, 100 << 20, "0x83".into(), "Linux");
        p2.path = Some("/dev/vda2".into());
        a.partitions.push(p2);
        let mut stick = disk("/dev/sda", "STICK", Transport::Usb, 16 << 30, true);
        stick.boot_medium = true;
        let mut superfloppy = disk("/dev/sdb", "FLOPPY", Transport::Usb, 8 << 30, true);
        superfloppy.fs = Some(crate::detect::FsKind::Exfat);
        superfloppy.fs_label = Some("IMAGES".into());
        Report {
            disks: vec![
                a,
                disk(
                    "/dev/nvme0n1",
                    "NV1",
                    Transport::Nvme,
                    500_000_000_000,
                    false,
                ),
                stick,
                superfloppy,
            ],
            problems: vec![],
        }
    }

    fn pick(sel: &str) -> Result<String, String> {
        Selector::parse(sel)?.resolve(&report())
    }

    #[test]
    fn disks_by_identity() {
        assert_eq!(pick("serial=SRC").unwrap(), "/dev/vda");
        assert_eq!(pick("serial=N*").unwrap(), "/dev/nvme0n1");
        assert_eq!(pick("bus=nvme").unwrap(), "/dev/nvme0n1");
        assert_eq!(pick("size=400GB..600GB").unwrap(), "/dev/nvme0n1");
        assert_eq!(pick("model=qemu*,size=..2G").unwrap(), "/dev/vda");
        assert_eq!(pick("removable,label=IMAGES").unwrap(), "/dev/sdb");
    }

    #[test]
    fn partitions_by_number_label_and_uuid() {
        assert_eq!(pick("serial=SRC,part=2").unwrap(), "/dev/vda2");
        assert_eq!(pick("label=DATA").unwrap(), "/dev/vda1");
        assert_eq!(pick("uuid=ABCD-1234").unwrap(), "/dev/vda1");
        assert_eq!(pick("label=IMAGES").unwrap(), "/dev/sdb");
    }

    #[test]
    fn ambiguous_and_empty_matches_are_refused_with_the_disks_seen() {
        let e = pick("internal").unwrap_err();
        assert!(e.contains("matches 2 devices"), "{e}");
        assert!(e.contains("/dev/vda, /dev/nvme0n1"), "{e}");
        assert!(e.contains("serial=STICK"), "{e}");
        assert!(e.contains("(this rescue stick)"), "{e}");
        let e = pick("serial=NOPE").unwrap_err();
        assert!(e.contains("no disk matches"), "{e}");
        assert!(e.contains("/dev/nvme0n1  serial=NV1"), "{e}");
        let e = pick("serial=SRC,part=9").unwrap_err();
        assert!(e.contains("no partition matches"), "{e}");
    }

    #[test]
    fn the_rescue_stick_is_never_internal() {
        assert_eq!(pick("internal,size=10G..").unwrap(), "/dev/nvme0n1");
        assert!(pick("internal,serial=STICK").is_err());
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for (bad, says) in [
            ("", "empty selector"),
            ("colour=red", "unknown rule"),
            ("bus=firewire", "unknown bus"),
            ("size=2T..1T", "minimum is larger"),
            ("size=12Q", "unknown size unit"),
            ("part=one", "whole number"),
            ("serial=", "needs a value"),
            ("internal,removable", "exclude each other"),
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn paths_are_not_selectors() {
        assert!(!looks_like_selector("/dev/sda"));
        assert!(!looks_like_selector("disk.img"));
        assert!(looks_like_selector("serial=X"));
        assert!(looks_like_selector("internal"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("256GB").unwrap(), 256_000_000_000);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(
            parse_size_range("1G").unwrap(),
            (Some(1 << 30), Some(1 << 30))
        );
        assert_eq!(parse_size_range("..1G").unwrap(), (None, Some(1 << 30)));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,60}") {
            let _ = Selector::parse(&s);
            let _ = parse_size(&s);
        }

        #[test]
        fn glob_star_matches_everything(v in "[a-zA-Z0-9 _-]{0,20}") {
            prop_assert!(glob("*", &v, false));
            prop_assert!(glob(&v, &v, false));
        }
    }
}
