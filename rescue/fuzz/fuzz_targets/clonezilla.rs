//! Clonezilla's saved table dump (`<disk>-pt.sf`, sfdisk's text) and the EBR chain made again from it:
//! whatever the text and the saved first EBR, parsed or refused, never a panic; a chain made lies inside
//! its extended partition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::clonezilla::{ebr, sfdisk};

fuzz_target!(|data: &[u8]| {
    // The first 512 bytes (when there are that many and the first byte is odd) are a saved EBR.
    let (first, text) = if data.len() > 512 && data[0] & 1 == 1 {
        (Some(&data[..512]), &data[512..])
    } else {
        (None, data)
    };
    let Ok(dump) = sfdisk::parse(&String::from_utf8_lossy(text)) else {
        return;
    };
    if let Ok(chain) = ebr::chain(&dump, first) {
        let ext = dump.entries.iter().find(|e| e.number <= 4 && e.is_extended());
        for (lba, _) in &chain {
            let e = ext.expect("a chain needs an extended partition");
            assert!(*lba >= e.start && *lba < e.start + e.size);
        }
    }
});
