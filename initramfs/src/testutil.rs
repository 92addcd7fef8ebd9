//! Fixtures shared by the unit tests: minimal ELF modules and module trees generated in code.

use std::path::{Path, PathBuf};

/// A minimal relocatable ELF with the given `.modinfo` bytes and an appended signature trailer, like a
/// Debian module.
pub fn fake_ko(modinfo: &[u8]) -> Vec<u8> {
    use object::write::Object;
    let mut obj = Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    let id = obj.add_section(
        Vec::new(),
        b".modinfo".to_vec(),
        object::SectionKind::ReadOnlyData,
    );
    obj.append_section_data(id, modinfo, 1);
    let mut bytes = obj.write().unwrap();
    bytes.extend_from_slice(b"\0\0\x02\0\0\0\0\0\0\0\0\x10~Module signature appended~\n");
    bytes
}

pub fn modinfo_bytes(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(format!("{k}={v}").as_bytes());
        out.push(0);
    }
    out
}

pub const RELEASE: &str = "6.1.0-99-test";

/// Writes `lib/modules/RELEASE/` below `root` with the given `(path, modinfo records)` modules and
/// builtin files; returns the modules directory.
pub fn write_tree(root: &Path, modules: &[(&str, &[(&str, &str)])]) -> PathBuf {
    let dir = root.join("lib/modules").join(RELEASE);
    for (path, pairs) in modules {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, fake_ko(&modinfo_bytes(pairs))).unwrap();
    }
    std::fs::write(dir.join("modules.builtin"), "kernel/net/unix/unix.ko\n").unwrap();
    std::fs::write(
        dir.join("modules.builtin.modinfo"),
        modinfo_bytes(&[
            ("unix.file", "net/unix/unix"),
            ("unix.alias", "net-pf-1"),
            ("crc16.file", "lib/crc16"),
        ]),
    )
    .unwrap();
    dir
}

/// A small kernel: a filesystem with a hard dependency, a builtin dependency and a softdep through an
/// alias; two storage drivers in one directory; a USB stack.
pub fn small_kernel(root: &Path) -> PathBuf {
    write_tree(
        root,
        &[
            (
                "kernel/fs/ext4/ext4.ko",
                &[
                    ("name", "ext4"),
                    ("depends", "jbd2,mbcache,crc16"),
                    ("softdep", "pre: crypto-crc32c"),
                    ("alias", "fs-ext4"),
                ],
            ),
            (
                "kernel/fs/jbd2/jbd2.ko",
                &[("name", "jbd2"), ("depends", "")],
            ),
            (
                "kernel/fs/mbcache.ko",
                &[("name", "mbcache"), ("depends", "")],
            ),
            (
                "kernel/crypto/crc32c_generic.ko",
                &[("name", "crc32c_generic"), ("alias", "crypto-crc32c")],
            ),
            (
                "kernel/arch/x86/crypto/crc32c-intel.ko",
                &[("name", "crc32c_intel"), ("alias", "crypto-crc32c")],
            ),
            (
                "kernel/drivers/ata/ahci.ko",
                &[
                    ("name", "ahci"),
                    ("depends", "libahci,libata"),
                    ("alias", "pci:v*d*sv*sd*bc01sc06i01*"),
                ],
            ),
            (
                "kernel/drivers/ata/libahci.ko",
                &[
                    ("name", "libahci"),
                    ("depends", "libata"),
                    ("firmware", "ahci/quirk.bin"),
                ],
            ),
            (
                "kernel/drivers/ata/libata.ko",
                &[("name", "libata"), ("depends", "scsi_mod")],
            ),
            ("kernel/drivers/scsi/scsi_mod.ko", &[("name", "scsi_mod")]),
            (
                "kernel/drivers/usb/storage/usb-storage.ko",
                &[
                    ("name", "usb_storage"),
                    ("depends", "usbcore,scsi_mod"),
                    ("alias", "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*"),
                ],
            ),
            ("kernel/drivers/usb/core/usbcore.ko", &[("name", "usbcore")]),
            (
                "kernel/sound/snd.ko",
                &[("name", "snd"), ("firmware", "snd/dsp.bin")],
            ),
        ],
    )
}
