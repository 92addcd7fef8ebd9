//! `sfdisk --dump` text, as Clonezilla saves a disk's partition table in `<disk>-pt.sf`: a header of
//! `key: value` lines (`label`, `label-id`, `device`, `unit`, `first-lba`, `last-lba`, `sector-size`…),
//! a blank line, then one line per partition: `/dev/sda1 : start=2048, size=4096, type=83, bootable`.
//! Parsed leniently where sfdisk itself is (unknown keys and fields are kept aside, spaces anywhere), strictly
//! where a restore depends on it (numbers, the unit, one entry per partition number).

use std::fmt;

/// The most entries a dump may list (GPT allows 128 by default; some tools make larger arrays).
pub const MAX_ENTRIES: usize = 1024;
/// The longest dump read, in bytes.
pub const MAX_LEN: usize = 1 << 20;

/// The kind of table a dump describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    Gpt,
    /// An MBR (sfdisk calls it `dos`).
    Dos,
    Other(String),
}

/// A dump, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub label: Label,
    pub label_id: Option<String>,
    pub device: Option<String>,
    pub first_lba: Option<u64>,
    pub last_lba: Option<u64>,
    pub table_length: Option<u64>,
    /// Bytes per sector (512 when the dump does not say: sfdisk before 2.38 left it out).
    pub sector_size: u32,
    pub entries: Vec<Entry>,
}

/// One partition line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The device name as written (`/dev/sda1`).
    pub device: String,
    /// The partition number, from the end of the device name.
    pub number: u32,
    /// First sector and length in sectors.
    pub start: u64,
    pub size: u64,
    /// `type=`: an MBR type in hex (`83`, `5`) or a GPT type GUID.
    pub kind: String,
    pub uuid: Option<String>,
    pub name: Option<String>,
    pub bootable: bool,
    pub attrs: Option<String>,
}

impl Entry {
    /// An MBR extended container (types 05, 0F, 85).
    pub fn is_extended(&self) -> bool {
        matches!(
            u8::from_str_radix(self.kind.trim_start_matches("0x"), 16),
            Ok(0x05 | 0x0f | 0x85)
        )
    }
}

/// A line the dump cannot be read by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number (0: the dump as a whole).
    pub line: usize,
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.what)
        } else {
            write!(f, "line {}: {}", self.line, self.what)
        }
    }
}

impl std::error::Error for ParseError {}

fn err(line: usize, what: impl Into<String>) -> ParseError {
    ParseError {
        line,
        what: what.into(),
    }
}

fn number(line: usize, key: &str, value: &str) -> Result<u64, ParseError> {
    let v = value.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.map_err(|_| err(line, format!("{key}={v:?} is not a number")))
}

/// The partition number at the end of a device name: `sda1` → 1, `nvme0n1p12` → 12, `loop0p3` → 3.
pub fn partition_number(device: &str) -> Option<u32> {
    let digits = device.len() - device.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits == device.len() {
        return None;
    }
    device[device.len() - digits..]
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// Splits a partition line's fields at commas outside double quotes.
fn fields(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut from = 0;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&text[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[from..]);
    out
}

/// A quoted value without its quotes, `\xNN` and `\"` escapes decoded (sfdisk writes names so).
fn unquote(line: usize, value: &str) -> Result<String, ParseError> {
    let v = value.trim();
    let Some(inner) = v.strip_prefix('"') else {
        return Ok(v.to_string());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| err(line, format!("{v:?} has no closing quote")))?;
    let mut bytes = Vec::with_capacity(inner.len());
    let raw = inner.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            if raw[i + 1] == b'x' && i + 3 < raw.len() {
                if let Ok(b) = u8::from_str_radix(&inner[i + 2..i + 4], 16) {
                    bytes.push(b);
                    i += 4;
                    continue;
                }
            }
            bytes.push(raw[i + 1]);
            i += 2;
            continue;
        }
        bytes.push(raw[i]);
        i += 1;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn entry(line: usize, device: &str, rest: &str) -> Result<Entry, ParseError> {
    let part = partition_number(device).ok_or_else(|| {
        err(
            line,
            format!("{device:?} does not end in a partition number"),
        )
    })?;
    let mut e = Entry {
        device: device.to_string(),
        number: part,
        start: 0,
        size: 0,
        kind: String::new(),
        uuid: None,
        name: None,
        bootable: false,
        attrs: None,
    };
    let (mut start, mut size) = (None, None);
    for field in fields(rest) {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field, None),
        };
        match (key, value) {
            ("start", Some(v)) => start = Some(number(line, key, v)?),
            ("size", Some(v)) => size = Some(number(line, key, v)?),
            ("type" | "Id", Some(v)) => e.kind = unquote(line, v)?,
            ("uuid", Some(v)) => e.uuid = Some(unquote(line, v)?),
            ("name", Some(v)) => e.name = Some(unquote(line, v)?),
            ("attrs", Some(v)) => e.attrs = Some(unquote(line, v)?),
            ("bootable", None) => e.bootable = true,
            // Anything newer sfdisk adds is not needed to place a partition.
            _ => {}
        }
    }
    e.start = start.ok_or_else(|| err(line, format!("{device} has no start=")))?;
    e.size = size.ok_or_else(|| err(line, format!("{device} has no size=")))?;
    if e.start.checked_add(e.size).is_none() {
        return Err(err(line, format!("{device} ends past any disk")));
    }
    Ok(e)
}

/// Parses a dump.
pub fn parse(text: &str) -> Result<Dump, ParseError> {
    if text.len() > MAX_LEN {
        return Err(err(
            0,
            format!("{} bytes, more than a dump holds", text.len()),
        ));
    }
    let mut label = None;
    let mut d = Dump {
        label: Label::Other(String::new()),
        label_id: None,
        device: None,
        first_lba: None,
        last_lba: None,
        table_length: None,
        sector_size: 512,
        entries: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A partition line: `DEVICE : fields`; a header line: `key: value`.
        if let Some((device, rest)) = line.split_once(" : ").or_else(|| {
            line.split_once(':')
                .filter(|(k, _)| k.trim_start().starts_with('/'))
        }) {
            if device.trim_start().starts_with('/') || rest.contains('=') {
                if d.entries.len() == MAX_ENTRIES {
                    return Err(err(n, format!("more than {MAX_ENTRIES} partitions")));
                }
                let e = entry(n, device.trim(), rest)?;
                if d.entries.iter().any(|o| o.number == e.number) {
                    return Err(err(n, format!("partition {} is listed twice", e.number)));
                }
                d.entries.push(e);
                continue;
            }
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(err(
                n,
                format!("{line:?} is neither `key: value` nor a partition"),
            ));
        };
        let value = value.trim();
        match key.trim() {
            "label" => {
                label = Some(match value {
                    "gpt" => Label::Gpt,
                    "dos" => Label::Dos,
                    other => Label::Other(other.to_string()),
                })
            }
            "label-id" => d.label_id = Some(value.to_string()),
            "device" => d.device = Some(value.to_string()),
            "unit" if value != "sectors" => {
                return Err(err(
                    n,
                    format!("unit {value:?}: only sectors are understood"),
                ))
            }
            "first-lba" => d.first_lba = Some(number(n, "first-lba", value)?),
            "last-lba" => d.last_lba = Some(number(n, "last-lba", value)?),
            "table-length" => d.table_length = Some(number(n, "table-length", value)?),
            "sector-size" => {
                let s = number(n, "sector-size", value)?;
                if !(512..=65536).contains(&s) || !s.is_power_of_two() {
                    return Err(err(n, format!("sector size {s} is not one disks have")));
                }
                d.sector_size = s as u32;
            }
            _ => {}
        }
    }
    d.label = label.ok_or_else(|| err(0, "no `label:` line (gpt or dos)"))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GPT: &str = "label: gpt
label-id: 0C4C3B7E-5A4B-4E44-9B1B-3B9B36B8E0A1
device: /dev/loop0
unit: sectors
first-lba: 34
last-lba: 327646
sector-size: 512

/dev/loop0p1 : start=        2048, size=      131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=8D0F0E3B-1B0C-4C1F-8E34-4B7E2C7F4E11, name=\"EFI \\x22system\\x22, p1\"
/dev/loop0p2 : start=      133120, size=      131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=2B4B1A5A-63E1-4B86-9C0B-8C0E1E2A7C33, attrs=\"LegacyBIOSBootable\"
";

    const DOS: &str = "label: dos
label-id: 0x8a3c0f52
device: /dev/sda
unit: sectors
sector-size: 512

/dev/sda1 : start=        2048, size=     2097152, type=83, bootable
/dev/sda2 : start=     2099200, size=    39843840, type=5
/dev/sda5 : start=     2101248, size=     1048576, type=82
";

    #[test]
    fn a_gpt_dump_reads_with_quoted_names() {
        let d = parse(GPT).unwrap();
        assert_eq!(d.label, Label::Gpt);
        assert_eq!(d.last_lba, Some(327646));
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.entries[0].number, 1);
        assert_eq!(d.entries[0].name.as_deref(), Some("EFI \"system\", p1"));
        assert_eq!(d.entries[1].start, 133120);
        assert_eq!(d.entries[1].attrs.as_deref(), Some("LegacyBIOSBootable"));
    }

    #[test]
    fn an_mbr_dump_reads_with_its_extended_container() {
        let d = parse(DOS).unwrap();
        assert_eq!(d.label, Label::Dos);
        assert!(d.entries[0].bootable);
        assert!(d.entries[1].is_extended());
        assert_eq!(d.entries[2].number, 5);
        assert!(!d.entries[2].is_extended());
    }

    #[test]
    fn refusals_name_the_line() {
        let e = parse("label: dos\nunit: cylinders\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("label: dos\n/dev/sda1 : start=x, size=1\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse("label: dos\n/dev/sda1 : size=1\n").unwrap_err();
        assert!(e.to_string().contains("no start="), "{e}");
        let twice = "label: dos\n/dev/sda1 : start=1, size=1\n/dev/sda1 : start=3, size=1\n";
        assert!(parse(twice).unwrap_err().to_string().contains("twice"));
        assert!(parse("device: /dev/sda\n")
            .unwrap_err()
            .to_string()
            .contains("label"));
    }

    #[test]
    fn partition_numbers_come_from_the_end_of_the_name() {
        assert_eq!(partition_number("/dev/sda1"), Some(1));
        assert_eq!(partition_number("nvme0n1p12"), Some(12));
        assert_eq!(partition_number("mmcblk0p3"), Some(3));
        assert_eq!(partition_number("sda"), None);
        assert_eq!(partition_number("123"), None);
    }

    proptest! {
        /// Any text parses or is refused, never a panic; what parses has distinct numbers.
        #[test]
        fn any_text_is_parsed_or_refused(text in "(label: (gpt|dos)\n)?([a-z/0-9 :=,\"\\\\x-]{0,60}\n){0,8}") {
            if let Ok(d) = parse(&text) {
                let mut numbers: Vec<u32> = d.entries.iter().map(|e| e.number).collect();
                numbers.sort_unstable();
                numbers.dedup();
                prop_assert_eq!(numbers.len(), d.entries.len());
            }
        }

        /// A dump sfdisk would write reads back to its entries.
        #[test]
        fn written_entries_read_back(parts in proptest::collection::vec((1u64..1 << 40, 1u64..1 << 30, any::<bool>()), 1..20)) {
            let mut text = String::from("label: dos\nunit: sectors\n\n");
            for (i, (start, size, boot)) in parts.iter().enumerate() {
                text += &format!("/dev/sdb{} : start={start:>12}, size={size:>12}, type=83{}\n", i + 1,
                    if *boot { ", bootable" } else { "" });
            }
            let d = parse(&text).unwrap();
            prop_assert_eq!(d.entries.len(), parts.len());
            for (e, (start, size, boot)) in d.entries.iter().zip(&parts) {
                prop_assert_eq!((e.start, e.size, e.bootable), (*start, *size, *boot));
            }
        }
    }
}
