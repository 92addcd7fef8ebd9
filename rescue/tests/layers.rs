//! The crate's layers (docs/ARCHITECTURE.md), proved on its own source: a module uses only modules of a
//! lower layer. Reads every `crate::…` path in the code of `rescue/src` (comments, string literals and
//! test code left out) and names each file and path that goes against the layers, or that reaches past
//! `ops` from a front end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

/// From the bottom: each module may use those of the layers before its own, never its own layer's others
/// nor a higher one.
const LAYERS: &[&[&str]] = &[
    &["units", "url", "sys"],
    &["image", "hw", "net"],
    &["vdisk", "nbd", "partclone"],
    &["detect"],
    &["init", "fs", "clonezilla"],
    &["plan", "browse"],
    &["engine"],
    &["store"],
    &["repo"],
    &["ops"],
    &["job"],
    &["tui"],
    &["cli"],
];

/// The front ends: they reach the layers below `ops` only through it (and the types of `plan`, `store`,
/// `detect`, `init` and `units` they present).
const FRONT_ENDS: &[&str] = &["job", "tui", "cli"];
const BEHIND_OPS: &[&str] = &[
    "engine",
    "image",
    "fs",
    "browse",
    "hw",
    "net",
    "sys",
    "vdisk",
    "nbd",
    "partclone",
    "clonezilla",
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `src` without comments, string and char literals (their text replaced by spaces, so nothing inside
/// them counts as a path).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident(b.get(i.wrapping_sub(1)))
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            out.push(' ');
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            // 'x'
            i += 3;
            out.push(' ');
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\u{…}'
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// `code` without the items marked `#[cfg(test)]` (a `mod x;` line, or a braced item).
fn without_test_code(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its `;` when that comes before any `{`, else where its braces close.
        let end = match (after.find(';'), after.find('{')) {
            (Some(semi), Some(open)) if semi < open => semi + 1,
            (Some(semi), None) => semi + 1,
            (_, Some(open)) => {
                let mut depth = 0;
                let mut end = after.len();
                for (k, ch) in after[open..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The first module name of every `crate::` path in `code`, including each one of `crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if ident(code[..at].chars().last().as_ref()) {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name: String = part.trim().chars().take_while(|c| ident(Some(c))).collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| ident(Some(c))).collect();
            out.push(name);
        }
    }
    out
}

/// Files that hold only tests.
fn test_file(path: &Path) -> bool {
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.starts_with("tests")
        || name.ends_with("_tests")
        || name == "proptests"
        || name == "testutil"
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every use of a module against the layers under `src`, as `file: crate::x (why)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        if test_file(rel) {
            continue;
        }
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            found.push(format!(
                "{}: module `{module}` has no layer; add it to LAYERS here and to docs/ARCHITECTURE.md",
                rel.display()
            ));
            continue;
        };
        let code = without_test_code(&code_only(&std::fs::read_to_string(&file).unwrap()));
        let mut seen = Vec::new();
        for dep in crate_paths(&code) {
            if dep == module || seen.contains(&dep) {
                continue;
            }
            seen.push(dep.clone());
            match layer_of(&dep) {
                Some(_) if FRONT_ENDS.contains(&module.as_str()) && BEHIND_OPS.contains(&dep.as_str()) => {
                    found.push(format!(
                        "{}: uses crate::{dep} from the front end `{module}`; front ends reach it only \
                         through ops",
                        rel.display()
                    ))
                }
                Some(l) if l < own => {}
                Some(l) => found.push(format!(
                    "{}: uses crate::{dep} (layer {l}) from `{module}` (layer {own}); a module may use only \
                     lower layers",
                    rel.display()
                )),
                None => {}
            }
        }
    }
    found
}

#[test]
fn the_crate_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let v = violations(&src);
    assert!(
        v.is_empty(),
        "imports against the layers:\n{}",
        v.join("\n")
    );
}

/// The check itself, on a small tree: a back-import in code is caught and named; the same path in a
/// comment, a string, test code or a test file is not.
#[test]
fn a_back_import_is_caught_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("plan")).unwrap();
    std::fs::write(src.join("units.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(
        src.join("plan.rs"),
        "//! Uses crate::cli in a comment only.\nuse crate::units::f;\nuse crate::{detect, units};\n\
         fn g() { let s = \"crate::tui\"; let r = r#\"crate::ops\"#; }\n\
         #[cfg(test)]\nmod tests {\n    use crate::cli::x;\n    fn h() { { } }\n}\n\
         #[cfg(test)]\nmod more;\nfn after() { crate::engine::run(); }\n",
    )
    .unwrap();
    std::fs::write(src.join("plan/tests.rs"), "use crate::cli::y;\n").unwrap();
    std::fs::write(src.join("plan/grow.rs"), "use crate::{store::x, units};\n").unwrap();
    std::fs::write(src.join("mystery.rs"), "use crate::units;\n").unwrap();
    std::fs::write(
        src.join("tui.rs"),
        "use crate::{ops, plan, store};\nfn f() { crate::engine::run(); }\n",
    )
    .unwrap();
    let v = violations(src);
    assert_eq!(v.len(), 4, "{v:#?}");
    assert!(
        v[0].starts_with("mystery.rs: module `mystery` has no layer"),
        "{v:#?}"
    );
    assert!(
        v[1].starts_with("plan/grow.rs: uses crate::store (layer 7) from `plan`"),
        "{v:#?}"
    );
    assert!(
        v[2].starts_with("plan.rs: uses crate::engine (layer 6) from `plan` (layer 5)"),
        "{v:#?}"
    );
    assert!(
        v[3].starts_with("tui.rs: uses crate::engine from the front end `tui`"),
        "{v:#?}"
    );
}
