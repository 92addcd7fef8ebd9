//! Which modules go into the initramfs, chosen by rules rather than a file list, so a new kernel release
//! (renamed or split drivers) either still works or fails the build with a message naming the rule.
//!
//! A rule names a directory (every module below `kernel/<dir>/`), a module that must exist, or one that
//! may be absent (hardware that only some kernel configurations support). Rules are grouped in named
//! categories; a category marked `boot` lists modules PID 1 loads whatever the hardware (filesystems,
//! codepages, `crc32c`), the others are loaded when a device asks for them. The selection is the rule
//! matches plus everything they depend on, hard or soft.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::depmod::{DepmodError, ModuleDb};
use crate::index::normalize;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("module rule `{category}` needs {module}, but there is no such module in {modules_dir} and the kernel does not have it built in. Use a kernel package that has it, or change the rule")]
    MissingModule {
        category: String,
        module: String,
        modules_dir: PathBuf,
    },
    #[error("module rule `{category}` takes every module below kernel/{dir}/, but {modules_dir} has none there. Use a kernel package with those drivers, or change the rule")]
    EmptyDir {
        category: String,
        dir: String,
        modules_dir: PathBuf,
    },
    #[error("module rule `{category}`: {source}")]
    Depmod {
        category: String,
        source: DepmodError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Every module below `kernel/<dir>/`; at least one must exist.
    Dir(String),
    /// This module must exist (loadable or builtin).
    Name(String),
    /// This module if the kernel has it.
    OptionalName(String),
    /// Not this module, though a `Dir` rule of the category matches it (its dependencies still come in
    /// if another match needs them).
    Except(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    /// The modules the rules match (not their dependencies) are loaded at boot unconditionally.
    pub boot: bool,
    pub rules: Vec<Rule>,
}

impl Category {
    fn new(name: &str, boot: bool, rules: Vec<Rule>) -> Self {
        Category {
            name: name.into(),
            boot,
            rules,
        }
    }
}

fn names(list: &[&str]) -> Vec<Rule> {
    list.iter().map(|n| Rule::Name(n.to_string())).collect()
}

fn optional(list: &[&str]) -> Vec<Rule> {
    list.iter()
        .map(|n| Rule::OptionalName(n.to_string()))
        .collect()
}

const NET_DIRS: &[&str] = &[
    "drivers/net/ethernet/intel",
    "drivers/net/ethernet/realtek",
    "drivers/net/ethernet/broadcom",
    "drivers/net/ethernet/aquantia",
    "drivers/net/ethernet/atheros",
    "drivers/net/ethernet/marvell",
    "drivers/net/usb",
];

/// The adapters met most (and checked to be there): hypervisors', Intel's, Realtek's, Broadcom's and the
/// common USB ones.
const NET_NAMES: &[&str] = &[
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "r8169",
    "tg3",
    "bnx2",
    "bnx2x",
    "atlantic",
    "usbnet",
    "cdc_ether",
    "r8152",
    "ax88179_178a",
];

const NET_EXCEPT: &[&str] = &[
    "ice",
    "i40e",
    "iavf",
    "igbvf",
    "ixgbevf",
    "bnxt_en",
    "cnic",
    "b44",
    "e100",
    "ixgb",
    "skge",
    "8139cp",
    "atl1",
    "atl2",
    "qmi_wwan",
    "hso",
    "sierra_net",
    "cdc_mbim",
    "huawei_cdc_ncm",
    "kalmia",
    "lg_vl600",
    "cdc_phonet",
    "ipheth",
];

/// The module set of the rescue stick: every way a PC, server or VM attaches its disks, USB and card
/// readers for the stick and target drives, keyboards, and the filesystems we mount.
pub fn default_rules() -> Vec<Category> {
    vec![
        Category::new(
            "virtio",
            false,
            names(&[
                "virtio_blk",
                "virtio_scsi",
                "virtio_pci",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_ring",
                "virtio",
            ])
            .into_iter()
            .chain(optional(&["virtio_mmio", "virtio_input"]))
            .collect(),
        ),
        // All of drivers/ata is about 50 modules and 3 MB uncompressed (under 1 MB compressed): cheaper than
        // missing the one old PATA/SATA chip a technician meets.
        Category::new(
            "ata",
            false,
            [Rule::Dir("drivers/ata".into())]
                .into_iter()
                .chain(names(&["ahci", "ata_piix", "ata_generic", "libata"]))
                .collect(),
        ),
        // Not all of drivers/nvme/host: nvme-rdma/-tcp/-fc are network fabrics that pull in the RDMA and
        // FC stacks for disks we cannot image anyway. VMD hides NVMe drives on many Intel laptops.
        Category::new(
            "nvme",
            false,
            names(&["nvme", "nvme_core"])
                .into_iter()
                .chain(optional(&["vmd"]))
                .collect(),
        ),
        Category::new(
            "scsi",
            false,
            names(&["scsi_mod"])
                .into_iter()
                .chain(optional(&["sr_mod", "scsi_common"]))
                .collect(),
        ),
        // usb-storage and uas hand their disks to SCSI; nothing asks for sd_mod by modalias at that point.
        Category::new("scsi-disk", true, names(&["sd_mod"])),
        // The HBAs of common servers and hypervisors. Rarer SAS chips (pm80xx, mvsas, isci) are left out:
        // each pulls in libsas for about 2 MB.
        Category::new(
            "hba",
            false,
            optional(&[
                "megaraid_sas",
                "mpt3sas",
                "hpsa",
                "smartpqi",
                "aacraid",
                "mptspi",
                "mptsas",
                "vmw_pvscsi",
                "hv_storvsc",
                "xen_blkfront",
            ]),
        ),
        Category::new(
            "usb-host",
            false,
            names(&[
                "xhci_pci", "xhci_hcd", "ehci_pci", "ehci_hcd", "ohci_pci", "ohci_hcd", "uhci_hcd",
            ]),
        ),
        // The ums-* sub-drivers are what some card readers and old enclosures need; the whole directory is
        // under 1 MB.
        Category::new(
            "usb-storage",
            false,
            [Rule::Dir("drivers/usb/storage".into())]
                .into_iter()
                .chain(names(&["usb_storage", "uas"]))
                .collect(),
        ),
        Category::new(
            "mmc",
            false,
            names(&["mmc_block", "mmc_core", "sdhci", "sdhci_pci", "sdhci_acpi"])
                .into_iter()
                .chain(optional(&[
                    "rtsx_pci_sdmmc",
                    "rtsx_usb_sdmmc",
                    "cqhci",
                    "via_sdmmc",
                ]))
                .collect(),
        ),
        // PS/2 (i8042, atkbd) is built in. Laptop keyboards behind I2C and vendor HID drivers that fix
        // common keyboards' reports are optional. Not hid_asus: it pulls in asus-wmi and the ACPI video
        // stack (1.7 MB), and hid_generic drives those keyboards' ordinary keys.
        Category::new(
            "keyboard",
            false,
            names(&["usbhid", "hid_generic", "hid"])
                .into_iter()
                .chain(optional(&[
                    "hid_apple",
                    "hid_logitech_dj",
                    "hid_logitech_hidpp",
                    "hid_microsoft",
                    "hid_cherry",
                    "hid_lenovo",
                    "hid_chicony",
                    "hid_corsair",
                    "i2c_hid_acpi",
                    "hyperv_keyboard",
                    "hid_hyperv",
                ]))
                .collect(),
        ),
        // Wired network adapters, for images on other machines: the vendors' directories of the NICs PCs,
        // laptops and servers carry (Intel, Realtek, Broadcom, Aquantia, Atheros/Qualcomm, Marvell), USB
        // Ethernet adapters, and the hypervisors' NICs. Left out: 25-100G datacenter adapters and their
        // virtual functions (ice, i40e, iavf, igbvf, ixgbevf, bnxt_en; large, and needing firmware
        // packages), the iSCSI/FCoE offload of Broadcom's (cnic), adapters of before 2005 (b44, e100, ixgb,
        // skge, 8139cp, atl1, atl2; b44 alone pulls in ssb, pcmcia and mmc for 0.8 MB), and USB modems and
        // phones, which are no Ethernet (qmi_wwan, hso, sierra_net, cdc_mbim, huawei_cdc_ncm, kalmia,
        // lg-vl600, cdc-phonet, ipheth).
        Category::new(
            "net",
            false,
            NET_DIRS
                .iter()
                .map(|d| Rule::Dir(d.to_string()))
                .chain(names(NET_NAMES))
                .chain(optional(&["vmxnet3", "hv_netvsc", "xen_netfront"]))
                .chain(NET_EXCEPT.iter().map(|n| Rule::Except(n.to_string())))
                .collect(),
        ),
        // Shares the kernel mounts itself: SMB2/3 and NFS (v4 and v3); each is loaded when first mounted.
        Category::new(
            "network-filesystems",
            false,
            names(&["cifs", "nfs", "nfsv4", "nfsv3"]),
        ),
        // What SMB 3 signs and encrypts with (AES-CMAC, AES-CCM and AES-GCM, SHA-512 for 3.1.1's
        // preauthentication), which the kernel asks for by algorithm when a share is mounted. cifs names
        // them as soft dependencies without `pre:`, which no module tool follows: without them every
        // SMB 3 mount fails (ENOENT) and only SMB 2.1 works.
        Category::new(
            "network-crypto",
            false,
            names(&[
                "cmac",
                "ccm",
                "gcm",
                "ecb",
                "ctr",
                "ghash_generic",
                "sha512_generic",
            ])
            .into_iter()
            .chain(optional(&[
                "aesni_intel",
                "ghash_clmulni_intel",
                "sha512_ssse3",
                "sha256_ssse3",
            ]))
            .collect(),
        ),
        Category::new(
            "filesystems",
            true,
            names(&[
                "ext4",
                "vfat",
                "exfat",
                "fuse",
                "efivarfs",
                "nls_cp437",
                "nls_ascii",
                "nls_utf8",
                "nls_iso8859_1",
            ]),
        ),
        // ext4 metadata checksums; the softdep only names an alias, and PID 1 must not depend on the
        // kernel's request_module timing for it.
        Category::new("crc32c", true, names(&["crc32c_generic", "crc32c_intel"])),
    ]
}

/// The chosen modules and the ones to load at boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Rule matches and their dependency closure: every loadable module to copy.
    pub modules: BTreeSet<String>,
    /// Loaded at boot whatever the hardware, in rule order.
    pub boot: Vec<String>,
    /// `OptionalName` modules this kernel does not have.
    pub missing_optional: Vec<String>,
}

/// Applies `rules` to `db`. Modules named by rules that the kernel has built in need nothing copied.
pub fn select(db: &ModuleDb, rules: &[Category]) -> Result<Selection, SelectError> {
    let mut sel = Selection::default();
    for cat in rules {
        let mut matched: Vec<String> = Vec::new();
        for rule in &cat.rules {
            match rule {
                Rule::Dir(dir) => {
                    let found = db.under_dir(dir);
                    if found.is_empty() {
                        return Err(SelectError::EmptyDir {
                            category: cat.name.clone(),
                            dir: dir.clone(),
                            modules_dir: db.modules_dir().into(),
                        });
                    }
                    matched.extend(found.into_iter().map(|m| m.name.clone()));
                }
                Rule::Except(_) => {}
                Rule::Name(n) | Rule::OptionalName(n) => match db.get(n) {
                    Some(m) => matched.push(m.name.clone()),
                    None if db.builtin().names.contains(&normalize(n)) => {}
                    None if matches!(rule, Rule::OptionalName(_)) => {
                        sel.missing_optional.push(normalize(n))
                    }
                    None => {
                        return Err(SelectError::MissingModule {
                            category: cat.name.clone(),
                            module: n.clone(),
                            modules_dir: db.modules_dir().into(),
                        })
                    }
                },
            }
        }
        let except: Vec<String> = cat
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Except(n) => Some(normalize(n)),
                _ => None,
            })
            .collect();
        matched.retain(|m| !except.contains(&normalize(m)));
        let closed = db
            .closure(matched.iter().map(String::as_str))
            .map_err(|source| SelectError::Depmod {
                category: cat.name.clone(),
                source,
            })?;
        sel.modules.extend(closed);
        if cat.boot {
            for m in matched {
                if !sel.boot.contains(&m) {
                    sel.boot.push(m);
                }
            }
        }
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::small_kernel;

    fn db() -> (ModuleDb, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = ModuleDb::scan(&small_kernel(dir.path())).unwrap();
        (db, dir)
    }

    fn cat(name: &str, boot: bool, rules: Vec<Rule>) -> Category {
        Category::new(name, boot, rules)
    }

    #[test]
    fn rules_plus_closure() {
        let (db, _d) = db();
        let rules = vec![
            cat("ata", false, vec![Rule::Dir("drivers/ata".into())]),
            cat(
                "fs",
                true,
                vec![
                    Rule::Name("ext4".into()),
                    Rule::Name("unix".into()),
                    Rule::OptionalName("btrfs".into()),
                ],
            ),
            cat("usb", false, vec![Rule::Name("usb-storage".into())]),
        ];
        let sel = select(&db, &rules).unwrap();
        let want = [
            "ahci",
            "crc32c_generic",
            "crc32c_intel",
            "ext4",
            "jbd2",
            "libahci",
            "libata",
            "mbcache",
            "scsi_mod",
            "usb_storage",
            "usbcore",
        ];
        assert_eq!(
            sel.modules.iter().map(String::as_str).collect::<Vec<_>>(),
            want
        );
        assert_eq!(sel.boot, ["ext4"]);
        assert_eq!(sel.missing_optional, ["btrfs"]);
        assert!(!sel.modules.contains("snd"));
    }

    #[test]
    fn missing_name_and_empty_dir_are_errors_naming_the_rule() {
        let (db, _d) = db();
        let e = select(&db, &[cat("fs", true, vec![Rule::Name("xfs".into())])]).unwrap_err();
        assert!(matches!(&e, SelectError::MissingModule { module, .. } if module == "xfs"));
        let msg = e.to_string();
        assert!(
            msg.contains("`fs`") && msg.contains("xfs") && msg.contains(crate::testutil::RELEASE),
            "{msg}"
        );

        let e = select(
            &db,
            &[cat(
                "nv",
                false,
                vec![Rule::Dir("drivers/nvme/host".into())],
            )],
        )
        .unwrap_err();
        assert!(matches!(e, SelectError::EmptyDir { .. }), "{e}");
        assert!(e.to_string().contains("kernel/drivers/nvme/host/"), "{e}");
    }

    /// An exception takes a module out of a directory's matches; what another match needs still comes in.
    #[test]
    fn exceptions_leave_a_module_out_of_a_directory() {
        let (db, _d) = db();
        let sel = select(
            &db,
            &[cat(
                "ata",
                false,
                vec![
                    Rule::Dir("drivers/ata".into()),
                    Rule::Except("ahci".into()),
                    Rule::Except("libahci".into()),
                ],
            )],
        )
        .unwrap();
        assert_eq!(
            sel.modules.iter().map(String::as_str).collect::<Vec<_>>(),
            ["libata", "scsi_mod"]
        );
        let sel = select(
            &db,
            &[cat(
                "ata",
                false,
                vec![
                    Rule::Dir("drivers/ata".into()),
                    Rule::Except("libahci".into()),
                ],
            )],
        )
        .unwrap();
        assert!(sel.modules.contains("libahci"), "ahci needs it");
    }

    #[test]
    fn default_rules_are_well_formed() {
        let rules = default_rules();
        let mut seen = BTreeSet::new();
        for c in &rules {
            assert!(seen.insert(c.name.clone()), "duplicate category {}", c.name);
            assert!(!c.rules.is_empty());
        }
        let boot: Vec<&str> = rules
            .iter()
            .filter(|c| c.boot)
            .flat_map(|c| &c.rules)
            .filter_map(|r| match r {
                Rule::Name(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        for m in [
            "ext4",
            "vfat",
            "efivarfs",
            "sd_mod",
            "crc32c_generic",
            "nls_cp437",
        ] {
            assert!(boot.contains(&m), "{m} is not a boot module");
        }
    }
}
