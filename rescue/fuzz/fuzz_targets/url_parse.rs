//! `Url::parse` and `redact` on arbitrary text: no panic, and a parsed URL never shows its password.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::url::{redact, Url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact(text);
    if let Ok(u) = Url::parse(text) {
        let shown = u.to_string();
        if let Some(p) = &u.password {
            assert!(shown.contains(":***@"), "{shown}");
            let _ = p;
        }
        assert_eq!(Url::parse(&u.expose()).map(|v| v.to_string()), Ok(shown));
    }
});
