//! The EBR chain of an MBR's logical partitions, made again from the saved table dump. Clonezilla saves
//! only the first EBR (`<extended>-ebr`) and rebuilds the chain with sfdisk; this makes the same sectors
//! sfdisk makes: each logical partition's EBR the same distance before it as the first one is before the
//! first logical partition (sfdisk's 1 MiB grain, or 63 sectors on old disks), a type and a relative
//! start and size in its first entry, a link to the next EBR in its second, CHS values for 255 heads and
//! 63 sectors per track.

use super::sfdisk::{Dump, Entry};

/// One EBR: its sector number and its bytes.
pub type Ebr = (u64, [u8; 512]);

/// CHS bytes of `lba` (255 heads, 63 sectors a track; past cylinder 1023 the largest value).
fn chs(lba: u64) -> [u8; 3] {
    let c = lba / (255 * 63);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / 63) % 255;
    let s = lba % 63 + 1;
    [
        h as u8,
        (s as u8) | (((c >> 2) & 0xC0) as u8),
        (c & 0xFF) as u8,
    ]
}

/// An MBR partition entry: `kind` at `start` (absolute sector) for `size` sectors, recorded relative to
/// `base`.
fn entry(
    out: &mut [u8],
    boot: bool,
    kind: u8,
    start: u64,
    size: u64,
    base: u64,
) -> Result<(), String> {
    let rel = u32::try_from(start - base)
        .map_err(|_| format!("sector {start} is past what an MBR can hold"))?;
    let size32 =
        u32::try_from(size).map_err(|_| format!("{size} sectors are more than an MBR can hold"))?;
    out[0] = if boot { 0x80 } else { 0 };
    out[1..4].copy_from_slice(&chs(start));
    out[4] = kind;
    out[5..8].copy_from_slice(&chs(start + size.max(1) - 1));
    out[8..12].copy_from_slice(&rel.to_le_bytes());
    out[12..16].copy_from_slice(&size32.to_le_bytes());
    Ok(())
}

fn kind_byte(e: &Entry) -> Result<u8, String> {
    u8::from_str_radix(e.kind.trim_start_matches("0x"), 16).map_err(|_| {
        format!(
            "partition {} has type {:?}, not an MBR type",
            e.number, e.kind
        )
    })
}

/// The EBRs of `dump`'s logical partitions (numbers 5 and up, in order), or none when it has no extended
/// partition. `first` is the saved first EBR, whose first entry says how far before each logical
/// partition its EBR lies (2048 sectors when it is missing) and whose boot code area is kept.
pub fn chain(dump: &Dump, first: Option<&[u8]>) -> Result<Vec<Ebr>, String> {
    let Some(ext) = dump
        .entries
        .iter()
        .find(|e| e.number <= 4 && e.is_extended())
    else {
        return Ok(Vec::new());
    };
    let mut logical: Vec<&Entry> = dump.entries.iter().filter(|e| e.number > 4).collect();
    logical.sort_by_key(|e| e.number);
    let ext_end = ext.start + ext.size;
    let distance = first
        .filter(|b| b.len() >= 512)
        .map(|b| u64::from(u32::from_le_bytes([b[454], b[455], b[456], b[457]])))
        .filter(|&d| d > 0)
        .unwrap_or(2048);
    // Where each EBR goes.
    let mut at = Vec::with_capacity(logical.len());
    let mut prev_end = ext.start;
    for (i, l) in logical.iter().enumerate() {
        let lba = if i == 0 {
            ext.start
        } else {
            l.start.saturating_sub(distance).max(prev_end)
        };
        if lba >= l.start || l.start + l.size > ext_end || lba < ext.start {
            return Err(format!(
                "logical partition {} (sectors {}..{}) does not fit in the extended partition {} (sectors {}..{}) \
                 after its EBR",
                l.number,
                l.start,
                l.start + l.size,
                ext.number,
                ext.start,
                ext_end
            ));
        }
        at.push(lba);
        prev_end = l.start + l.size;
    }
    let mut out = Vec::with_capacity(logical.len());
    for (i, l) in logical.iter().enumerate() {
        let mut sector = [0u8; 512];
        if let (0, Some(b)) = (i, first) {
            if b.len() >= 446 {
                sector[..446].copy_from_slice(&b[..446]);
            }
        }
        entry(
            &mut sector[446..462],
            l.bootable,
            kind_byte(l)?,
            l.start,
            l.size,
            at[i],
        )?;
        if let Some(next) = logical.get(i + 1) {
            let next_at = at[i + 1];
            entry(
                &mut sector[462..478],
                false,
                0x05,
                next_at,
                next.start + next.size - next_at,
                ext.start,
            )?;
        }
        sector[510] = 0x55;
        sector[511] = 0xAA;
        out.push((at[i], sector));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dump(text: &str) -> Dump {
        super::super::sfdisk::parse(text).unwrap()
    }

    /// The chain sfdisk wrote for a disk `scripts/clonezilla-fixture --layout mbr` makes (bytes 446..478 of
    /// each EBR, read from the disk).
    #[test]
    fn the_chain_is_the_one_sfdisk_writes() {
        let d = dump(
            "label: dos\nunit: sectors\n\n/dev/loop0p1 : start=2048, size=40960, type=83, bootable\n\
             /dev/loop0p2 : start=43008, size=98304, type=5\n/dev/loop0p5 : start=45056, size=32768, type=83\n\
             /dev/loop0p6 : start=79872, size=16384, type=82\n/dev/loop0p7 : start=98304, size=20480, type=6\n",
        );
        let got = chain(&d, None).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let want = [
            (
                43008,
                "00cd0c0283d71304000800000080000000d7140405fc37050088000000480000",
            ),
            (
                77824,
                "00f7340482fc3705000800000040000000fc380505641d0700d0000000580000",
            ),
            (
                96256,
                "001e190606641d07000800000050000000000000000000000000000000000000",
            ),
        ];
        assert_eq!(got.len(), 3);
        for ((lba, bytes), (wlba, whex)) in got.iter().zip(want) {
            assert_eq!(*lba, wlba);
            assert_eq!(hex(&bytes[446..478]), whex);
            assert_eq!(&bytes[510..], &[0x55, 0xAA]);
        }
    }

    #[test]
    fn no_extended_partition_no_chain_and_misfits_are_refused() {
        let d = dump("label: dos\n/dev/sda1 : start=2048, size=100, type=83\n");
        assert!(chain(&d, None).unwrap().is_empty());
        let d = dump(
            "label: dos\n/dev/sda2 : start=2048, size=4096, type=5\n/dev/sda5 : start=4096, size=8192, type=83\n",
        );
        assert!(chain(&d, None).unwrap_err().contains("does not fit"));
    }

    proptest! {
        /// Any chain made lies inside the extended partition, each EBR before its partition and after the
        /// previous one, and its links point at the next EBR.
        #[test]
        fn chains_are_well_formed(sizes in proptest::collection::vec((1u64..5000, 1u64..5000), 1..12)) {
            let ext_start = 10_000u64;
            let mut text = String::from("label: dos\n");
            let mut pos = ext_start;
            let mut lines = String::new();
            for (i, (gap, size)) in sizes.iter().enumerate() {
                let start = pos + gap.max(&1);
                lines += &format!("/dev/sdz{} : start={start}, size={size}, type=83\n", i + 5);
                pos = start + size;
            }
            text += &format!("/dev/sdz1 : start={ext_start}, size={}, type=f\n", pos - ext_start);
            text += &lines;
            let d = dump(&text);
            if let Ok(c) = chain(&d, None) {
                prop_assert_eq!(c.len(), sizes.len());
                let logical: Vec<_> = d.entries.iter().filter(|e| e.number > 4).collect();
                for (i, (lba, s)) in c.iter().enumerate() {
                    prop_assert!(*lba >= ext_start && *lba < logical[i].start);
                    if i > 0 { prop_assert!(*lba >= logical[i - 1].start + logical[i - 1].size); }
                    let rel = u32::from_le_bytes([s[454], s[455], s[456], s[457]]) as u64;
                    prop_assert_eq!(lba + rel, logical[i].start);
                    if let Some((next, _)) = c.get(i + 1) {
                        let link = u32::from_le_bytes([s[470], s[471], s[472], s[473]]) as u64;
                        prop_assert_eq!(ext_start + link, *next);
                    }
                }
            }
        }
    }
}
