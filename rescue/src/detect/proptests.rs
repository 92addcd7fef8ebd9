//! Property tests: hostile bytes never panic or hang detection, and partition layouts written by
//! the `mbrman` and `gpt` crates come back unchanged.

use super::*;
use proptest::prelude::*;
use std::io::{Cursor, SeekFrom};

fn detect_bytes(bytes: Vec<u8>) -> Disk {
    let len = bytes.len() as u64;
    detect_image(
        Cursor::new(bytes),
        len,
        "/fuzz.img",
        &DetectOptions::default(),
    )
}

/// A small valid GPT image (made with the gpt crate) to mutate.
fn gpt_image(
    lb: ::gpt::disk::LogicalBlockSize,
    size: usize,
    parts: &[(u64, u64, ::gpt::partition_types::Type, String)],
) -> Vec<u8> {
    let ss = lb.as_u64();
    let mut dev = Cursor::new(vec![0u8; size]);
    let total = size as u64 / ss;
    ::gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(total - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(&mut dev)
        .unwrap();
    let mut disk = ::gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .create_from_device(dev, None)
        .unwrap();
    for (i, (first, len, ty, name)) in parts.iter().enumerate() {
        disk.add_partition_at(name, i as u32 + 1, *first, *len, ty.clone(), 0)
            .unwrap();
    }
    disk.write().unwrap().into_inner()
}

/// Sorted, non-overlapping (offset, length) pairs in units, inside `0..space`.
fn layout_strategy(max_parts: usize, space: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0u64..8, 1u64..64), 1..=max_parts).prop_map(move |v| {
        let mut at = 0;
        let mut out = Vec::new();
        for (gap, len) in v {
            let start = at + gap;
            if start + len > space {
                break;
            }
            out.push((start, len));
            at = start + len;
        }
        out
    })
}

const GPT_TYPES: [::gpt::partition_types::Type; 5] = [
    ::gpt::partition_types::EFI,
    ::gpt::partition_types::LINUX_FS,
    ::gpt::partition_types::BASIC,
    ::gpt::partition_types::LINUX_SWAP,
    ::gpt::partition_types::LINUX_LVM,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..20_000)) {
        let d = detect_bytes(bytes);
        prop_assert!(d.partitions.len() <= 1024 + 4);
    }

    /// Random bytes with the magics that lead parsers deep: MBR signature, GPT header, EBRs, FAT
    /// and NTFS boot sectors.
    #[test]
    fn seeded_garbage_never_panics(
        mut bytes in prop::collection::vec(any::<u8>(), 70_000..140_000),
        ss_4k in any::<bool>(),
        magic in 0usize..9,
    ) {
        let ss = if ss_4k { 4096 } else { 512 };
        let len = bytes.len();
        bytes[510] = 0x55;
        bytes[511] = 0xAA;
        for b in bytes[446..510].iter_mut().step_by(16) {
            *b &= 0x80; // valid boot flags so the MBR is accepted
        }
        match magic {
            0 => bytes[ss..ss + 8].copy_from_slice(b"EFI PART"),
            1 => bytes[len - ss..len - ss + 8].copy_from_slice(b"EFI PART"),
            2 => bytes[446 + 4] = 0x05,
            3 => bytes[3..11].copy_from_slice(b"NTFS    "),
            4 => bytes[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]),
            5 => bytes[3..11].copy_from_slice(b"EXFAT   "),
            6 => bytes[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]),
            7 => {
                bytes[512..520].copy_from_slice(b"LABELONE");
                bytes[536..544].copy_from_slice(b"LVM2 001");
            }
            _ => bytes[0..6].copy_from_slice(b"LUKS\xba\xbe"),
        }
        detect_bytes(bytes);
    }

    /// Bit flips anywhere in the table areas of a valid GPT disk.
    #[test]
    fn mutated_gpt_never_panics(flips in prop::collection::vec((0usize..34 * 512, any::<u8>(), any::<bool>()), 1..16)) {
        let size = 1 << 20;
        let parts = vec![(34, 100, ::gpt::partition_types::LINUX_FS, "a".to_string()), (200, 300, ::gpt::partition_types::EFI, "b".to_string())];
        let mut img = gpt_image(::gpt::disk::LogicalBlockSize::Lb512, size, &parts);
        for (off, x, at_end) in flips {
            let off = if at_end { size - 1 - off } else { off };
            img[off] ^= x;
        }
        let d = detect_bytes(img);
        prop_assert!(d.partitions.len() <= 128);
    }

    #[test]
    fn gpt_layouts_round_trip(
        layout in layout_strategy(12, 900),
        lb4k in any::<bool>(),
        types in prop::collection::vec(0usize..GPT_TYPES.len(), 12),
        names in prop::collection::vec("[a-zA-Z0-9 ]{0,20}", 12),
    ) {
        let (lb, ss) = if lb4k { (::gpt::disk::LogicalBlockSize::Lb4096, 4096u64) } else { (::gpt::disk::LogicalBlockSize::Lb512, 512) };
        let first_usable = if lb4k { 6 } else { 34 };
        let parts: Vec<_> = layout
            .iter()
            .enumerate()
            .map(|(i, (off, len))| (first_usable + off, *len, GPT_TYPES[types[i]].clone(), names[i].clone()))
            .collect();
        let img = gpt_image(lb, (1000 * ss) as usize, &parts);
        let d = detect_bytes(img);
        prop_assert!(d.problems.is_empty(), "{:?}", d.problems);
        prop_assert_eq!(u64::from(d.logical_sector_size), ss);
        prop_assert_eq!(d.partitions.len(), parts.len());
        for (i, (p, (first, len, ty, name))) in d.partitions.iter().zip(&parts).enumerate() {
            prop_assert_eq!(p.number, i as u32 + 1);
            prop_assert_eq!(p.start_bytes, first * ss);
            prop_assert_eq!(p.size_bytes, len * ss);
            prop_assert_eq!(&p.part_type, &format!("{:X}", ty.guid));
            let want_name = (!name.is_empty()).then(|| name.clone());
            prop_assert_eq!(&p.name, &want_name);
        }
    }

    #[test]
    fn mbr_layouts_round_trip(
        primaries in layout_strategy(3, 400),
        logicals in layout_strategy(6, 400),
        with_extended in any::<bool>(),
        types in prop::collection::vec(prop::sample::select(vec![0x07u8, 0x0B, 0x0C, 0x83, 0x82, 0x8E, 0xEF, 0xFD]), 10),
        sig in any::<[u8; 4]>(),
    ) {
        // Primaries in the first 8 MiB, the extended container after them.
        let size = 16 << 20;
        let mut cur = Cursor::new(vec![0u8; size]);
        let mut mbr = mbrman::MBR::new_from(&mut cur, 512, sig).unwrap();
        mbr.align = 1;
        let mut want = Vec::new();
        for (i, (off, len)) in primaries.iter().enumerate() {
            let e = mbrman::MBRPartitionEntry {
                boot: if i == 0 { 0x80 } else { 0 },
                first_chs: mbrman::CHS::empty(),
                sys: types[i],
                last_chs: mbrman::CHS::empty(),
                starting_lba: 1 + *off as u32 * 8,
                sectors: *len as u32 * 8,
            };
            want.push((i as u32 + 1, u64::from(e.starting_lba), u64::from(e.sectors), types[i]));
            *mbr.header.get_mut(i + 1).unwrap() = e;
        }
        if with_extended && !logicals.is_empty() {
            let ext_start = 600 * 8;
            let ext = mbrman::MBRPartitionEntry {
                boot: 0, first_chs: mbrman::CHS::empty(), sys: 0x0F, last_chs: mbrman::CHS::empty(),
                starting_lba: ext_start, sectors: 400 * 8 * 2,
            };
            *mbr.header.get_mut(4).unwrap() = ext;
            want.push((4, u64::from(ext_start), 400 * 16, 0x0F));
            for (j, (off, len)) in logicals.iter().enumerate() {
                let ebr = ext_start + *off as u32 * 16;
                let l = mbr.push(types[4 + j.min(5)], ebr, *len as u32 * 16).unwrap();
                want.push((5 + j as u32, u64::from(l.partition.starting_lba), u64::from(l.partition.sectors), types[4 + j.min(5)]));
            }
        }
        mbr.write_into(&mut cur).unwrap();
        let d = detect_bytes(cur.into_inner());
        // An MBR without entries is still an (empty) MBR.
        prop_assert_eq!(d.table, PartitionTable::Mbr);
        prop_assert!(d.problems.is_empty(), "{:?}", d.problems);
        let got: Vec<_> = d.partitions.iter().map(|p| (p.number, p.start_bytes / 512, p.size_bytes / 512, p.part_type.clone())).collect();
        let want: Vec<_> = want.iter().map(|(n, s, l, t)| (*n, *s, *l, format!("{t:#04x}"))).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(d.partitions.first().map(|p| p.bootable), want.first().map(|w| w.0 == 1));
    }

    /// Filesystem structures past the boot sector (NTFS `$Volume` record, exFAT and FAT root
    /// directories) filled with random bytes behind valid-looking boot sectors.
    #[test]
    fn filesystem_metadata_fuzz(
        which in 0usize..3,
        boot in prop::collection::vec(any::<u8>(), 512),
        meta in prop::collection::vec(any::<u8>(), 4096),
        shift in 0u8..16,
    ) {
        let mut img = vec![0u8; 64 * 1024];
        img[..512].copy_from_slice(&boot);
        img[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
        img[11..13].copy_from_slice(&512u16.to_le_bytes());
        let meta_at = 8192;
        match which {
            0 => {
                img[3..11].copy_from_slice(b"NTFS    ");
                img[13] = 1;
                img[0x30..0x38].copy_from_slice(&13u64.to_le_bytes()); // MFT at 6656, record 3 at 8192
                img[0x40] = 0xF6; // 1 KiB records
                img[meta_at..meta_at + 4096].copy_from_slice(&meta);
                img[meta_at..meta_at + 4].copy_from_slice(b"FILE");
            }
            1 => {
                img[3..11].copy_from_slice(b"EXFAT   ");
                img[108] = 9 + shift % 4;
                img[109] = shift;
                img[88..92].copy_from_slice(&16u32.to_le_bytes());
                img[96..100].copy_from_slice(&2u32.to_le_bytes());
                img[meta_at..meta_at + 4096].copy_from_slice(&meta);
            }
            _ => {
                img[3..11].copy_from_slice(b"MSDOS5.0");
                img[13] = 1 << (shift % 8);
                img[14..16].copy_from_slice(&1u16.to_le_bytes());
                img[16] = 2;
                img[21] = 0xF8;
                img[22..24].copy_from_slice(&(u16::from(shift) + 1).to_le_bytes());
                img[19..21].copy_from_slice(&128u16.to_le_bytes());
                img[meta_at..meta_at + 4096].copy_from_slice(&meta);
            }
        }
        let len = img.len() as u64;
        let mut src = io::DiskReader::new(Cursor::new(img), len);
        let mut region = io::RangeReader::new(&mut src, 0, len);
        let found = fs::probe(&mut region);
        prop_assert!(found.is_ok());
    }

    /// EBR chains with arbitrary links (loops, backwards, out of range) end quickly.
    #[test]
    fn random_ebr_chains_terminate(links in prop::collection::vec((0u32..300, 0u32..300, any::<bool>()), 1..64)) {
        let mut img = vec![0u8; 320 * 512];
        let put = |img: &mut Vec<u8>, sector: usize, slot: usize, sys: u8, start: u32, len: u32| {
            let o = sector * 512 + 446 + 16 * slot;
            img[o + 4] = sys;
            img[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
            img[o + 12..o + 16].copy_from_slice(&len.to_le_bytes());
            img[sector * 512 + 510] = 0x55;
            img[sector * 512 + 511] = 0xAA;
        };
        put(&mut img, 0, 0, 0x05, 10, 300);
        for (i, (next, data, linked)) in links.iter().enumerate() {
            let sector = 10 + i * 4;
            put(&mut img, sector, 0, 0x83, 1 + data % 3, 2);
            if *linked {
                put(&mut img, sector, 1, 0x05, *next, 4);
            }
        }
        let d = detect_bytes(img);
        prop_assert!(d.partitions.iter().filter(|p| p.logical).count() <= 256 * 4);
    }
}

#[test]
fn gpt_image_helper_round_trips_through_the_gpt_crate() {
    // Guard for the fixtures above: the crate itself reads back what it wrote.
    let img = gpt_image(
        ::gpt::disk::LogicalBlockSize::Lb4096,
        1 << 22,
        &[(6, 10, ::gpt::partition_types::EFI, "x".into())],
    );
    let mut dev = Cursor::new(img);
    dev.seek(SeekFrom::Start(0)).unwrap();
    let disk = ::gpt::GptConfig::new()
        .logical_block_size(::gpt::disk::LogicalBlockSize::Lb4096)
        .open_from_device(&mut dev)
        .unwrap();
    assert_eq!(disk.partitions().len(), 1);
}
