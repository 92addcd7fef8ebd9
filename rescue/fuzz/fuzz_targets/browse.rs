//! Filesystems browsed read-only (docs/BROWSE.md): whatever the bytes, opening them as a partition,
//! listing every folder and reading every file is refused or read, never a panic or a hang.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rescue::browse::{self, Kind};
use rescue::image::ReadAt;

fuzz_target!(|data: &[u8]| {
    let part: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    let Ok(fs) = browse::open(part) else {
        return;
    };
    let _ = fs.notes();
    let Ok(root) = fs.root() else {
        return;
    };
    // Folders by path, each once, a bounded number of entries in all.
    let mut seen = HashSet::new();
    let mut stack = vec![(String::new(), root)];
    let mut budget = 10_000usize;
    while let Some((path, dir)) = stack.pop() {
        if !seen.insert(path.clone()) || path.len() > 4096 {
            continue;
        }
        let Ok(children) = fs.children(&dir) else {
            continue;
        };
        for c in children {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return;
            }
            let p = format!("{path}/{}", c.name);
            match c.kind {
                Kind::Dir => stack.push((p, c)),
                Kind::File => {
                    if let Ok(mut r) = fs.open(&c) {
                        let mut buf = vec![0u8; 4096];
                        let _ = r.read_at(0, &mut buf);
                        let _ = r.read_at(r.size().saturating_sub(10), &mut buf);
                    }
                    let _ = fs.stat(&p);
                }
                _ => {}
            }
        }
    }
});
