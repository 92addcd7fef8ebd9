//! The NBD server (docs/NBD.md): whatever a client sends — greeting flags, options, requests — the
//! connection is served or ended, never a panic, and no allocation beyond the protocol's bounds.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rescue::image::ReadAt;
use rescue::nbd::{serve_connection, Export, Served};

fuzz_target!(|data: &[u8]| {
    // A 1 MiB disk of a pattern; the bytes are the client's whole side of one connection.
    let disk: Arc<dyn ReadAt> = Arc::new((0..1u32 << 20).map(|i| i as u8).collect::<Vec<u8>>());
    let export = Export {
        name: "disk".into(),
        description: String::new(),
        disk,
        allocation: None,
    };
    let Ok(served) = Served::new(export, None, Arc::new(|_: &str| {})) else {
        return;
    };
    let _ = serve_connection(&served, &mut &data[..], &mut std::io::sink(), "fuzz");
});
