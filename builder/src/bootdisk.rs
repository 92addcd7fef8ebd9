//! A tiny bootable disk for tests that must prove a disk (or a virtual disk file) boots: an MBR whose boot
//! code loads a 32 KiB second stage from the middle of its partition through the BIOS (INT 13h extended
//! read), and a second stage that sums the 31.5 KiB after its first sector, compares the sum with the one
//! stored beside it, and prints [`BOOTED`] (or [`DAMAGED`]) on the first serial port. Any byte of the
//! boot code, the table or the payload read wrongly through the disk's format keeps the marker from
//! appearing. Hand-assembled 16-bit real-mode code, commented instruction by instruction.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Printed when the payload's sum matches.
pub const BOOTED: &str = "FIXTURE-BOOTED-OK";
/// Printed when it does not.
pub const DAMAGED: &str = "FIXTURE-CHECKSUM-BAD";

/// Where the second stage lies: 20 MiB into the disk, inside the partition.
pub const STAGE2_LBA: u64 = 40_960;
const PART_START: u32 = 2048;

/// The MBR's boot code (loaded at 0000:7C00 by the BIOS, boot drive in DL).
fn stage1() -> Vec<u8> {
    let mut c = vec![
        0xFA, // cli
        0xFC, // cld
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0x8E, 0xC0, // mov es, ax
        0x8E, 0xD0, // mov ss, ax
        0xBC, 0x00, 0x7C, // mov sp, 0x7C00
        0xFB, // sti
        0xBE, 0x20, 0x7C, // mov si, 0x7C20 (the disk address packet below)
        0xB4, 0x42, // mov ah, 0x42 (extended read; DL is still the boot drive)
        0xCD, 0x13, // int 0x13
        0x72, 0xFE, // jc $ (a failed read hangs: no marker)
        0xEA, 0x00, 0x80, 0x00, 0x00, // jmp 0000:8000
    ];
    c.resize(0x20, 0x90);
    // Disk address packet: size 16, 64 sectors, to 0000:8000, from STAGE2_LBA.
    c.extend_from_slice(&[0x10, 0x00, 64, 0x00, 0x00, 0x80, 0x00, 0x00]);
    c.extend_from_slice(&STAGE2_LBA.to_le_bytes());
    c
}

/// The second stage's first sector (at 0000:8000); its payload follows in the next 63 sectors.
fn stage2(sum: u16) -> Vec<u8> {
    let mut c = vec![
        0x31, 0xC0, // 00: xor ax, ax
        0xBE, 0x00, 0x82, // 02: mov si, 0x8200
        0x03, 0x04, // 05: add ax, [si]
        0x83, 0xC6, 0x02, // 07: add si, 2
        0x81, 0xFE, 0x00,
        0x00, // 0A: cmp si, 0 (it wraps past 0xFFFE: the end of the payload)
        0x75, 0xF5, // 0E: jnz 05
        0x3B, 0x06, 0xFE, 0x81, // 10: cmp ax, [0x81FE] (the sum stored below)
        0x75, 0x05, // 14: jnz 1B
        0xBE, 0x40, 0x80, // 16: mov si, 0x8040 (BOOTED)
        0xEB, 0x03, // 19: jmp 1E
        0xBE, 0x60, 0x80, // 1B: mov si, 0x8060 (DAMAGED)
        0xBA, 0xF8, 0x03, // 1E: mov dx, 0x3F8 (COM1)
        0xAC, // 21: lodsb
        0x84, 0xC0, // 22: test al, al
        0x74, 0x03, // 24: jz 29
        0xEE, // 26: out dx, al
        0xEB, 0xF8, // 27: jmp 21
        0xFA, // 29: cli
        0xF4, // 2A: hlt
        0xEB, 0xFC, // 2B: jmp 29
    ];
    c.resize(0x40, 0x90);
    c.extend_from_slice(format!("\r\n{BOOTED}\r\n\0").as_bytes());
    c.resize(0x60, 0);
    c.extend_from_slice(format!("\r\n{DAMAGED}\r\n\0").as_bytes());
    c.resize(0x1FE, 0);
    c.extend_from_slice(&sum.to_le_bytes());
    c
}

/// The 31.5 KiB payload the second stage sums, and the sum (16-bit words, wrapping).
fn payload() -> (Vec<u8>, u16) {
    let data = crate::fixtures::noise(63 * 512, 0x5eed);
    let sum = data.chunks_exact(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    (data, sum)
}

/// Write the bootable disk of `size_mib` MiB (at least 32) to `path`: the MBR with one partition (type
/// 0x83, from 1 MiB to the end, holding no filesystem) and the second stage inside it.
pub fn create(path: &Path, size_mib: u64) -> std::io::Result<()> {
    let size = size_mib.max(32) << 20;
    let f = File::create(path)?;
    f.set_len(size)?;
    let mut mbr = stage1();
    mbr.resize(446, 0);
    let sectors = u32::try_from(size / 512).unwrap_or(u32::MAX) - PART_START;
    let mut entry = [0u8; 16];
    entry[0] = 0x80; // active
    entry[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]); // CHS: use the LBA fields
    entry[4] = 0x83;
    entry[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    entry[8..12].copy_from_slice(&PART_START.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr.extend_from_slice(&entry);
    mbr.resize(510, 0);
    mbr.extend_from_slice(&[0x55, 0xAA]);
    f.write_all_at(&mbr, 0)?;
    let (data, sum) = payload();
    f.write_all_at(&stage2(sum), STAGE2_LBA * 512)?;
    f.write_all_at(&data, STAGE2_LBA * 512 + 512)?;
    // Something else in the partition, before and after, as a filesystem would have.
    f.write_all_at(&crate::fixtures::noise(1 << 20, 7), 4 << 20)?;
    f.write_all_at(&crate::fixtures::noise(1 << 20, 8), size - (2 << 20))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_code_fits_and_the_sum_is_stored() {
        assert!(super::stage1().len() <= 446);
        let (data, sum) = super::payload();
        let s2 = super::stage2(sum);
        assert_eq!(s2.len(), 512);
        assert_eq!(&s2[0x1FE..], &sum.to_le_bytes());
        assert_eq!(data.len(), 0x8000 - 0x200);
    }
}
