//! The kernel command line: `rescue.cmd="disks --json"` runs one CLI command unattended, `rescue.stick=GUID`
//! names the medium we booted from, `rescue.verbose` keeps kernel messages on the console.

/// Split `/proc/cmdline` into parameters. Double quotes group words (`a="b c"` is one parameter, quotes
/// removed), as the kernel's own parser does.
pub fn split_params(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The value of `key=value` on the command line (the last one wins, as with the kernel).
pub fn param(cmdline: &str, key: &str) -> Option<String> {
    split_params(cmdline)
        .into_iter()
        .filter_map(|p| {
            p.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
        .next_back()
}

/// Whether a bare flag such as `rescue.verbose` is present.
pub fn flag(cmdline: &str, key: &str) -> bool {
    split_params(cmdline).iter().any(|p| p == key)
}

/// Split a command into arguments: whitespace separates, single quotes group (the kernel command line
/// already used the double quotes), a backslash escapes the next character.
pub fn split_args(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut in_quotes = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_quotes = !in_quotes;
                any = true;
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_parameters() {
        let c = "console=ttyS0 rescue.cmd=\"disks --json\" quiet rescue.stick=ABC\n";
        assert_eq!(param(c, "rescue.cmd").as_deref(), Some("disks --json"));
        assert_eq!(param(c, "rescue.stick").as_deref(), Some("ABC"));
        assert_eq!(param(c, "console").as_deref(), Some("ttyS0"));
        assert!(flag(c, "quiet"));
        assert!(!flag(c, "rescue.verbose"));
        assert_eq!(param(c, "missing"), None);
    }

    #[test]
    fn argument_splitting() {
        assert_eq!(
            split_args("capture /dev/vda -o '/mnt/my image.img'"),
            ["capture", "/dev/vda", "-o", "/mnt/my image.img"]
        );
        assert_eq!(split_args("  a\\ b  ''  "), ["a b", ""]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = split_params(&s);
            let _ = split_args(&s);
        }
    }
}
