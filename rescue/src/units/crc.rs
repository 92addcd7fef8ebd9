//! Checksums the on-disk parsers share: crc32c (ext4's metadata_csum, VHDX's structures) and crc16
//! (ext4's uninit_bg descriptors) as raw table-driven updates without the final inversion, the way the
//! kernel chains them; and the usual CRC-32 (GPT).

/// The table of a reflected CRC-32 with polynomial `poly`.
const fn table32(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

const fn crc16_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32C: [u32; 256] = table32(0x82F6_3B78);
static CRC32: [u32; 256] = table32(0xEDB8_8320);
static CRC16: [u16; 256] = crc16_table();

/// Raw crc32c update without the final inversion, as ext4's checksums use it.
pub fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = (crc >> 8) ^ CRC32C[((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    crc
}

pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc = (crc >> 8) ^ CRC16[((crc ^ u16::from(b)) & 0xFF) as usize];
    }
    crc
}

/// CRC-32 (IEEE 802.3, zlib's; GPT's headers and entry arrays), inverted before and after.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}
