//! `Url::parse` and `redact` on arbitrary text: no panic, and a parsed URL never shows its password; the
//! same text as a credentials file: no panic, and an error never repeats a line (it may be a password).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::url::{redact, Url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact(text);
    if let Err(e) = rescue::ops::parse_credentials(text) {
        for line in text.lines().filter(|l| l.len() > 8) {
            assert!(!e.contains(line), "{e}");
        }
    }
    if let Ok(u) = Url::parse(text) {
        let shown = u.to_string();
        if let Some(p) = &u.password {
            assert!(shown.contains(":***@"), "{shown}");
            let _ = p;
        }
        assert_eq!(Url::parse(&u.expose()).map(|v| v.to_string()), Ok(shown));
    }
});
