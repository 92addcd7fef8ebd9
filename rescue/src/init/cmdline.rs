//! The kernel command line: `rescue.cmd="disks --json"` runs CLI commands unattended (several, separated by
//! a standalone `;`), `rescue.stick=GUID` names the medium we booted from, `rescue.verbose` keeps kernel
//! messages on the console.

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
    tokens(cmd).into_iter().map(|t| t.text).collect()
}

/// Split `rescue.cmd` into commands, each a list of arguments. A standalone, unquoted `;` separates
/// commands (`mount /dev/vdb /mnt/t ; capture ...`); a quoted or escaped one (`';'`, `\;`) is an
/// ordinary argument, and so is a `;` inside a word. Empty commands (`a ; ; b`, a trailing `;`) are
/// dropped.
pub fn split_commands(cmd: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for t in tokens(cmd) {
        if t.text == ";" && !t.literal {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(t.text);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One word of a command, and whether quoting or escaping made any of it literal.
struct Token {
    text: String,
    literal: bool,
}

fn tokens(cmd: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut literal = false;
    let mut in_quotes = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_quotes = !in_quotes;
                any = true;
                literal = true;
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                    literal = true;
                }
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(Token {
                        text: std::mem::take(&mut cur),
                        literal,
                    });
                    any = false;
                    literal = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(Token { text: cur, literal });
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

    #[test]
    fn command_splitting() {
        let cmd = "mount /dev/vdb /mnt/t ; capture /dev/vda -o /mnt/t/disk.rimg ; umount /mnt/t";
        assert_eq!(
            split_commands(cmd),
            [
                vec!["mount", "/dev/vdb", "/mnt/t"],
                vec!["capture", "/dev/vda", "-o", "/mnt/t/disk.rimg"],
                vec!["umount", "/mnt/t"],
            ]
        );
        // One command stays one command, as before.
        assert_eq!(split_commands("disks --json"), [vec!["disks", "--json"]]);
        // Empty commands vanish; so does a command line of separators only.
        assert_eq!(split_commands(" ; a ; ; b ; "), [vec!["a"], vec!["b"]]);
        assert!(split_commands(" ; ; ").is_empty());
        assert!(split_commands("").is_empty());
        // Only a standalone, unquoted `;` separates.
        assert_eq!(
            split_commands("a ';' b \\; c d; e x;y"),
            [vec!["a", ";", "b", ";", "c", "d;", "e", "x;y"]]
        );
        assert_eq!(
            split_commands("capture /dev/vda -o '/mnt/my image.img' ; verify '/mnt/my image.img'"),
            [
                vec!["capture", "/dev/vda", "-o", "/mnt/my image.img"],
                vec!["verify", "/mnt/my image.img"],
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = split_params(&s);
            let _ = split_args(&s);
            let _ = split_commands(&s);
        }

        #[test]
        fn commands_are_the_arguments_split_at_bare_semicolons(s in "[a-c ;'\\\\]{0,40}") {
            let flat: Vec<String> = split_commands(&s).concat();
            let args: Vec<String> = split_args(&s);
            let bare = tokens(&s).iter().filter(|t| t.text == ";" && !t.literal).count();
            proptest::prop_assert_eq!(flat.len() + bare, args.len());
            for c in split_commands(&s) {
                proptest::prop_assert!(!c.is_empty());
            }
        }
    }
}
