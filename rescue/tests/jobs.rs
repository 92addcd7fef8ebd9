//! Unattended jobs through `rescue job` on a host, with disk image files as the disks (`--disk`): a capture
//! and a restore chosen by rules, the ambiguous-match and no-match refusals, the log and result files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{rescue_split as rescue, s};

use std::process::Command;

use builder::fixtures;

const MIB: u64 = 1 << 20;

#[test]
fn capture_then_restore_jobs_choose_disks_by_rules_and_leave_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.img");
    fixtures::create_disk(&src, &fixtures::demo_gpt()).unwrap();
    let dst = d.join("dst.img");
    std::fs::File::create(&dst)
        .unwrap()
        .set_len(200 * MIB)
        .unwrap();
    let blank = d.join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    let image = d.join("golden.rimg");

    // Capture: the source is the 168 MiB disk.
    let job = format!(
        "action=capture source.size=168M image.file={} options.level=3",
        s(&image)
    );
    let (rc, out, err) = rescue(&[
        "job",
        &job,
        "--disk",
        s(&src),
        "--disk",
        s(&dst),
        "--disk",
        s(&blank),
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let outcome: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(outcome["ok"], true, "{outcome:#}");
    assert_eq!(outcome["verified"], true, "the new image was verified");
    assert_eq!(outcome["source"]["path"], s(&src));
    let log = std::fs::read_to_string(format!("{}.log", s(&image))).unwrap();
    assert!(log.contains("capture: OK"), "{log}");
    let result = outcome["result_file"].as_str().unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(result).unwrap()).unwrap();
    assert_eq!(saved["root_hash"], outcome["root_hash"]);

    // Restore with a rule matching two disks: refused, naming both, nothing written.
    let job = format!(
        "action=restore image.file={} target.size=150M..400M",
        s(&image)
    );
    let before = std::fs::read(&dst).unwrap();
    let (rc, _, err) = rescue(&["job", &job, "--disk", s(&dst), "--disk", s(&blank)]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("matches 2 devices"), "{err}");
    assert!(err.contains(s(&dst)) && err.contains(s(&blank)), "{err}");
    assert!(err.contains("THE JOB FAILED"), "{err}");
    assert!(
        std::fs::read(&dst).unwrap() == before,
        "the target changed after a refusal"
    );
    // No match: refused, listing what was seen.
    let (rc, _, err) = rescue(&[
        "job",
        &format!("action=restore image.file={} target.size=1T..", s(&image)),
        "--disk",
        s(&dst),
    ]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("no disk matches") && err.contains(s(&dst)),
        "{err}"
    );
    // The failed runs left failed results beside the image.
    let failed = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .filter(|t| t.contains("\"ok\": false"))
        .count();
    assert!(
        failed >= 2,
        "expected failed result files for the refused runs"
    );

    // The exact rule: restored and read back.
    let (rc, out, err) = rescue(&[
        "job",
        &format!("action=restore image.file={} target.size=200M", s(&image)),
        "--disk",
        s(&dst),
        "--disk",
        s(&blank),
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let outcome: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(outcome["target"]["path"], s(&dst));
    assert_eq!(outcome["verified"], true);
    let (ok, text) = {
        let o = Command::new("sgdisk").arg("-v").arg(&dst).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert!(ok && text.contains("No problems found"), "{text}");
}

#[test]
fn job_files_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "action = \"restore\"\n[image]\nlabel = \"X\"\n[target]\ninternal = true\n",
    )
    .unwrap();
    let (rc, _, err) = rescue(&["job", s(&f)]);
    assert_eq!(rc, 1);
    assert!(err.contains(s(&f)) && err.contains("needs path"), "{err}");
    let (rc, _, err) = rescue(&["job", s(&dir.path().join("missing.toml"))]);
    assert_eq!(rc, 1);
    assert!(err.contains("cannot read the job file"), "{err}");
}

/// Jobs with a repository: a capture job makes the repository it names (encrypted with its passphrase
/// file) and adds a snapshot named after the source; a second capture adds almost nothing; a restore job
/// takes the latest snapshot of that name; records go to the repository's logs folder.
#[test]
fn jobs_capture_into_and_restore_from_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.img");
    fixtures::create_disk(&src, &fixtures::demo_mbr()).unwrap();
    let dst = d.join("dst.img");
    std::fs::File::create(&dst)
        .unwrap()
        .set_len(200 * MIB)
        .unwrap();
    let repo = d.join("repo");
    let pass = d.join("pass.txt");
    std::fs::write(&pass, "job secret\n").unwrap();
    let capture = format!(
        "action=capture source.size=128M image.repo={} image.snapshot=pc-{{model}} \
         image.passphrase_file={}",
        s(&repo),
        s(&pass)
    );
    let mut added = Vec::new();
    for _ in 0..2 {
        let (rc, out, err) = rescue(&[
            "job",
            &capture,
            "--disk",
            s(&src),
            "--disk",
            s(&dst),
            "--json",
        ]);
        assert_eq!(rc, 0, "{err}");
        let o: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(o["ok"], true, "{o:#}");
        assert_eq!(o["verified"], true);
        assert!(
            o["snapshot"].as_str().unwrap().starts_with("pc-unknown@"),
            "{o}"
        );
        added.push(o["new_bytes"].as_u64().unwrap());
        let result = o["result_file"].as_str().unwrap();
        assert!(result.starts_with(s(&repo.join("logs"))), "{result}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(added[1] * 100 < added[0], "{added:?}");
    let config = std::fs::read_to_string(repo.join("rescue-repo")).unwrap();
    assert!(config.contains("xchacha20poly1305"), "{config}");

    let restore = format!(
        "action=restore image.repo={} image.snapshot=pc-unknown target.size=200M \
         image.passphrase_file={}",
        s(&repo),
        s(&pass)
    );
    let (rc, out, err) = rescue(&["job", &restore, "--disk", s(&dst), "--json"]);
    assert_eq!(rc, 0, "{err}");
    let o: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(o["ok"], true, "{o:#}");
    let (rc, _, err) = rescue(&[
        "verify",
        &format!("{}::pc-unknown", repo.display()),
        "--against",
        s(&dst),
        "--passphrase-file",
        s(&pass),
    ]);
    assert_eq!(rc, 0, "{err}");
    // A snapshot name that is not one is refused when the job is read.
    let (rc, _, err) = rescue(&[
        "job",
        &format!(
            "action=restore image.repo={} image.snapshot=a/b target.size=200M",
            s(&repo)
        ),
        "--disk",
        s(&dst),
    ]);
    assert_eq!(rc, 1);
    assert!(err.contains("is not a snapshot name"), "{err}");
}
