//! Bad input to the builder: a clear message naming the file, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;

fn builder(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "the builder panicked:\n{text}");
    (out.status.success(), text)
}

#[test]
fn a_missing_kernel_package_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, text) = builder(&[
        "initramfs",
        "--out-dir",
        out.to_str().unwrap(),
        "--kernel-deb",
        "/nonexistent/kernel.deb",
    ]);
    assert!(!ok);
    assert!(text.contains("/nonexistent/kernel.deb"), "{text}");
}

#[test]
fn a_corrupt_kernel_package_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("linux-image-broken_1_amd64.deb");
    std::fs::write(
        &deb,
        b"!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (ok, text) = builder(&[
        "initramfs",
        "--out-dir",
        out.to_str().unwrap(),
        "--kernel-deb",
        deb.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(text.contains("linux-image-broken_1_amd64.deb"), "{text}");
}

#[test]
fn a_dynamic_rescue_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kdir = dir.path().join("modules/6.1.0-test");
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::write(dir.path().join("vmlinuz"), b"kernel").unwrap();
    let (ok, text) = builder(&[
        "initramfs",
        "--out-dir",
        dir.path().join("out").to_str().unwrap(),
        "--kernel",
        dir.path().join("vmlinuz").to_str().unwrap(),
        "--modules-dir",
        kdir.to_str().unwrap(),
        "--rescue-bin",
        "/bin/sh",
    ]);
    assert!(!ok);
    assert!(
        text.contains("/bin/sh") && text.contains("not fully static"),
        "{text}"
    );
}
