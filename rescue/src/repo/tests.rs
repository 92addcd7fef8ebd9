use super::*;

fn entry(name: &str, t: u64, n: usize) -> SnapshotEntry {
    SnapshotEntry {
        id: format!("{t:012}-{n}"),
        key: format!("snapshots/{t:012}-{n}.snap"),
        path: std::path::PathBuf::new(),
        meta: SnapshotMeta {
            name: name.into(),
            time_unix: t,
            time: crate::units::iso_time(t),
            ..SnapshotMeta::default()
        },
    }
}

/// Times as listed (oldest first) → the times kept.
fn keep_times(times: &[u64], keep: Keep) -> Vec<u64> {
    let entries: Vec<SnapshotEntry> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| entry("pc", t, i))
        .collect();
    let refs: Vec<&SnapshotEntry> = entries.iter().collect();
    let ids = kept(&refs, &keep);
    entries
        .iter()
        .filter(|e| ids.contains(&e.id))
        .map(|e| e.meta.time_unix)
        .collect()
}

const DAY: u64 = 86_400;
/// Monday 2026-11-30 00:00 UTC.
const MONDAY: u64 = 1_795_996_800;

#[test]
fn keep_rules_count_as_restic_does() {
    assert_eq!(crate::units::iso_time(MONDAY), "2026-11-30T00:00:00Z");
    // Two a day over ten days, at 08:00 and 20:00.
    let times: Vec<u64> = (0..10)
        .flat_map(|d| [MONDAY + d * DAY + 8 * 3600, MONDAY + d * DAY + 20 * 3600])
        .collect();
    let last = *times.last().unwrap();
    assert_eq!(
        keep_times(
            &times,
            Keep {
                last: 3,
                ..Keep::default()
            }
        ),
        times[17..].to_vec()
    );
    // The newest of each of the last 3 days: the 20:00 ones.
    assert_eq!(
        keep_times(
            &times,
            Keep {
                daily: 3,
                ..Keep::default()
            }
        ),
        vec![MONDAY + 7 * DAY + 72_000, MONDAY + 8 * DAY + 72_000, last]
    );
    // Weeks start on Monday: days 0-6 are one week, 7-9 the next.
    assert_eq!(
        keep_times(
            &times,
            Keep {
                weekly: 5,
                ..Keep::default()
            }
        ),
        vec![MONDAY + 6 * DAY + 72_000, last]
    );
    // One month (December 2026 starts on day 1: 2026-12-01), November's last is day 0.
    assert_eq!(
        keep_times(
            &times,
            Keep {
                monthly: 2,
                ..Keep::default()
            }
        ),
        vec![MONDAY + 72_000, last]
    );
    // Rules add up; nothing is kept twice.
    let both = keep_times(
        &times,
        Keep {
            last: 1,
            daily: 2,
            ..Keep::default()
        },
    );
    assert_eq!(both, vec![MONDAY + 8 * DAY + 72_000, last]);
    // Two snapshots in one second are two for `last`.
    assert_eq!(
        keep_times(
            &[MONDAY, MONDAY],
            Keep {
                last: 2,
                ..Keep::default()
            }
        )
        .len(),
        2
    );
    assert!(keep_times(&times, Keep::default()).is_empty());
}

#[test]
fn snapshot_names_and_references() {
    for good in ["pc", "laptop-c", "a.b_c", "X1"] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(65)] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
    let r = SnapshotRef::parse("/mnt/backups::pc@2026-12-07")
        .unwrap()
        .unwrap();
    assert_eq!(r.name, "pc");
    assert_eq!(r.when, When::At("2026-12-07".into()));
    assert_eq!(r.to_string(), "/mnt/backups::pc@2026-12-07");
    let r = SnapshotRef::parse("smb://tech:pw@nas/share/repo::pc@latest")
        .unwrap()
        .unwrap();
    assert_eq!(r.when, When::Latest);
    assert_eq!(
        r.to_string(),
        "smb://tech:***@nas/share/repo::pc",
        "no password shown"
    );
    assert!(SnapshotRef::parse("/mnt/pc.rimg").is_none());
    assert!(SnapshotRef::parse("sftp://[::1]/x.rimg").is_none());
    assert!(SnapshotRef::parse("::pc").unwrap().is_err());
    assert!(SnapshotRef::parse("/r::").unwrap().is_err());
    assert!(SnapshotRef::parse("/r::pc@").unwrap().is_err());
}

mod props {
    use super::super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn file_bytes(meta: &SnapshotMeta, image: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), None).unwrap();
        let e = write_snapshot(&repo, meta, image, "0123456789abcdef").unwrap();
        std::fs::read(e.path).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_bytes_are_refused_or_read_never_a_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_snapshot(Path::new("x.snap"), &data);
        }

        #[test]
        fn a_snapshot_file_reads_back_and_any_changed_byte_is_caught(
            name in "[a-z][a-z0-9._-]{0,20}",
            t in 0u64..4_000_000_000,
            image in proptest::collection::vec(any::<u8>(), 0..300),
            flip in any::<prop::sample::Index>(),
        ) {
            let meta = SnapshotMeta { name, time_unix: t, time: crate::units::iso_time(t), ..SnapshotMeta::default() };
            let mut b = file_bytes(&meta, &image);
            let (m, i) = parse_snapshot(Path::new("x.snap"), &b).unwrap();
            prop_assert_eq!(&m, &meta);
            prop_assert_eq!(&i, &image);
            let at = flip.index(b.len());
            b[at] ^= 1;
            prop_assert!(parse_snapshot(Path::new("x.snap"), &b).is_err());
            b.truncate(at);
            prop_assert!(parse_snapshot(Path::new("x.snap"), &b).is_err());
        }

        #[test]
        fn snapshot_names_print_as_they_parse(
            repo in "/[a-z]{1,8}(/[a-z]{1,8}){0,2}",
            name in "[A-Za-z0-9][A-Za-z0-9._-]{0,30}",
            when in proptest::option::of("20[0-9]{2}-[01][0-9]-[0-3][0-9](T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z)?"),
        ) {
            let text = match &when { Some(w) => format!("{repo}::{name}@{w}"), None => format!("{repo}::{name}") };
            let r = SnapshotRef::parse(&text).unwrap().unwrap();
            prop_assert_eq!(r.to_string(), text);
            prop_assert_eq!(r.name, name);
        }
    }
}
