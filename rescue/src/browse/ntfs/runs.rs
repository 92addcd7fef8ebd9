//! Runlists (mapping pairs) of non-resident attributes, and the pieces of data they describe:
//! clusters on disk, sparse runs as holes, bytes past the initialised size as zeros, and compression
//! units (16 clusters) that are stored compressed, stored plain, or not at all.

use super::record::Attr;
use crate::browse::read::{Pieces, Src};

pub(crate) use crate::fs::ntfs::Run;

/// Decodes the mapping pairs of one segment of a non-resident attribute (the used-block maps' decoder):
/// every run must lie inside the volume's `clusters`, and the runs must cover the segment exactly.
pub(crate) fn decode(a: &Attr, clusters: u64) -> Result<Vec<Run>, String> {
    crate::fs::ntfs::decode_runs(&a.raw, clusters)
}

/// The pieces of `size` bytes described by `runs` (in order), of which the first `initialized` are
/// written; `unit` is the compression unit in clusters for a compressed attribute.
pub(crate) fn pieces(
    runs: &[Run],
    cluster: u64,
    size: u64,
    initialized: u64,
    unit: Option<u64>,
) -> Pieces {
    let mut out = Pieces::default();
    let end = size.min(initialized);
    match unit {
        None => {
            for r in runs {
                let Some(lcn) = r.lcn else { continue };
                let at = r.vcn * cluster;
                if at >= end {
                    break;
                }
                out.push(
                    at,
                    (r.len * cluster).min(end - at),
                    Src::Disk(lcn * cluster),
                );
            }
        }
        Some(u) => {
            let mut unit = Unit {
                index: 0,
                parts: Vec::new(),
                allocated: 0,
            };
            for r in runs {
                let Some(lcn) = r.lcn else { continue };
                let mut v = r.vcn;
                while v < r.vcn + r.len {
                    let k = v / u;
                    if k != unit.index {
                        unit.flush(&mut out, u, cluster, end);
                        unit.index = k;
                    }
                    let upto = (r.vcn + r.len).min((k + 1) * u);
                    unit.parts
                        .push((v, (lcn + v - r.vcn) * cluster, (upto - v) * cluster));
                    unit.allocated += upto - v;
                    v = upto;
                }
            }
            unit.flush(&mut out, u, cluster, end);
        }
    }
    out
}

/// The clusters of one compression unit seen so far: (vcn, disk offset, bytes).
struct Unit {
    index: u64,
    parts: Vec<(u64, u64, u64)>,
    allocated: u64,
}

impl Unit {
    /// A full unit is stored plain; a partly allocated one is compressed; an empty one is zeros.
    fn flush(&mut self, out: &mut Pieces, u: u64, cluster: u64, end: u64) {
        let start = self.index * u * cluster;
        if self.allocated > 0 && start < end {
            if self.allocated >= u {
                for &(vcn, disk, len) in &self.parts {
                    let at = vcn * cluster;
                    if at < end {
                        out.push(at, len.min(end - at), Src::Disk(disk));
                    }
                }
            } else {
                let ranges = self.parts.iter().map(|&(_, d, l)| (d, l)).collect();
                out.push(start, (u * cluster).min(end - start), Src::Lznt1(ranges));
            }
        }
        self.parts.clear();
        self.allocated = 0;
    }
}
