//! The partition tables a restore or a clone writes. They are worked out before the target is touched, so
//! that a GPT that cannot be moved to the target's size fails the job with nothing written; they are
//! written once every data byte is flushed, in an order that leaves no valid-looking table until the last
//! write lands: entry arrays (and EBRs) first, then the backup GPT header, the primary header, and LBA 0.

use super::device::Target;
use super::readback::{Held, Ledger};
use super::EngineError;
use crate::image::TableRole;
use crate::plan::{tables, Layout, RestorePlan, StreamRole, TablePlan};

/// The table bytes to write, in the order to write them, and what to tell the user about them.
#[derive(Debug, Default)]
pub(super) struct Tables {
    writes: Vec<(u64, Vec<u8>)>,
    pub notes: Vec<String>,
}

/// When a table structure may be written: the lower, the earlier.
fn rank(role: TableRole) -> u8 {
    match role {
        TableRole::GptPrimaryEntries
        | TableRole::GptBackupEntries
        | TableRole::Ebr
        | TableRole::Other => 0,
        TableRole::GptBackupHeader => 1,
        TableRole::GptPrimaryHeader => 2,
        TableRole::Mbr => 3,
    }
}

/// The tables `plan` writes; `read(stream)` gives a table stream's captured bytes.
pub(super) fn prepare(
    layout: &Layout,
    plan: &RestorePlan,
    read: impl Fn(usize) -> Result<Vec<u8>, EngineError>,
) -> Result<Tables, EngineError> {
    let role = |stream: usize| match layout.streams[stream].kind {
        StreamRole::Table(role) => Some(role),
        _ => None,
    };
    let mut ranked: Vec<(u8, u64, Vec<u8>)> = Vec::new();
    let mut notes = Vec::new();
    match &plan.tables {
        TablePlan::Untouched => {}
        TablePlan::AsCaptured => {
            for p in &plan.placements {
                if let Some(r) = role(p.stream) {
                    ranked.push((rank(r), p.target_offset, read(p.stream)?));
                }
            }
        }
        TablePlan::RelocateGpt { target_size } => {
            let find = |wanted: TableRole| {
                (0..layout.streams.len()).find(|&s| role(s) == Some(wanted)).ok_or_else(|| {
                    EngineError::Failed(format!(
                        "the image has no {wanted:?} stream, so its GPT cannot be moved to a disk of another size; \
                         restore onto a disk of exactly {} bytes",
                        layout.size_bytes
                    ))
                })
            };
            let lba0 = read(find(TableRole::Mbr)?)?;
            let mut primary = read(find(TableRole::GptPrimaryHeader)?)?;
            primary.extend(read(find(TableRole::GptPrimaryEntries)?)?);
            let moved =
                tables::relocate_gpt(&lba0, &primary, layout.logical_sector_size, *target_size)
                    .map_err(|e| EngineError::Failed(e.to_string()))?;
            for (role, offset, bytes) in moved.writes {
                ranked.push((rank(role), offset, bytes));
            }
            notes.push(format!(
                "the GPT was moved to the end of the {target_size}-byte target (the source had {} bytes)",
                layout.size_bytes
            ));
        }
    }
    // Within a rank, from the end of the disk towards LBA 0.
    ranked.sort_by_key(|(r, offset, _)| (*r, std::cmp::Reverse(*offset)));
    Ok(Tables {
        writes: ranked.into_iter().map(|(_, o, b)| (o, b)).collect(),
        notes,
    })
}

impl Tables {
    /// Writes the tables in their order (the caller flushed the data first), noting each for the
    /// read-back.
    pub fn write(&self, target: &Target, ledger: Option<&Ledger>) -> Result<(), EngineError> {
        for (offset, bytes) in &self.writes {
            target.write_at(bytes, *offset)?;
            if let Some(l) = ledger {
                l.note_bytes(*offset, bytes, Held::Table);
            }
        }
        Ok(())
    }

    /// Each table write: where, and the bytes.
    pub fn writes(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.writes.iter().map(|(o, b)| (*o, b.as_slice()))
    }

    #[cfg(test)]
    pub fn offsets(&self) -> Vec<(u64, u64)> {
        self.writes
            .iter()
            .map(|(o, b)| (*o, b.len() as u64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan_capture, plan_restore_disk, CaptureRequest, Environment};

    /// Entry arrays first, then the backup header, the primary header, and LBA 0 last: as captured and
    /// moved to a larger disk alike. A GPT that cannot move fails before anything is written.
    #[test]
    fn tables_are_written_entries_first_and_lba0_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpt.img");
        builder::fixtures::create_disk(&path, &builder::fixtures::demo_gpt()).unwrap();
        let data = std::fs::read(&path).unwrap();
        let disk = super::super::tests::detect(&data);
        let layout = plan_capture(&disk, &CaptureRequest::default(), None)
            .unwrap()
            .layout;
        let read = |stream: usize| {
            let s = &layout.streams[stream];
            Ok(data[s.disk_offset as usize..(s.disk_offset + s.len) as usize].to_vec())
        };
        let size = data.len() as u64;
        for target_size in [size, size + (64 << 20)] {
            let mut target = disk.clone();
            target.path = "/dev/sdz".into();
            target.serial = None;
            target.size_bytes = target_size;
            let plan = plan_restore_disk(&layout, &target, &Environment::default(), true).unwrap();
            let tables = prepare(&layout, &plan, read).unwrap();
            let end = target_size - 512;
            let entries = 32 * 512;
            assert_eq!(
                tables.offsets(),
                [
                    (end - entries, entries),
                    (1024, entries),
                    (end, 512),
                    (512, 512),
                    (0, 512)
                ],
                "onto {target_size} bytes"
            );
            assert_eq!(tables.notes.len(), usize::from(target_size != size));
        }
        // A damaged primary header cannot be moved: refused while preparing.
        let mut target = disk.clone();
        target.size_bytes = size * 2;
        target.serial = None;
        let plan = plan_restore_disk(&layout, &target, &Environment::default(), true).unwrap();
        let damaged = |stream: usize| {
            read(stream).map(|mut b| {
                b[20] ^= 1;
                b
            })
        };
        assert!(prepare(&layout, &plan, damaged).is_err());
    }
}
