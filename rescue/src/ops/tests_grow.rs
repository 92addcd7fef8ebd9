//! Growing the stick's data partition as a whole operation: detected and planned again, refused when
//! the stick no longer matches the confirmed plan (stick images from `store::tests_grow`).

use boot::DataFs;

use crate::fs::testutil::{run_status, tool};
use crate::store::tests_grow::stick;

#[test]
fn the_whole_operation_checks_again_and_reports() {
    let s = stick(DataFs::Exfat);
    let plan = s.plan().unwrap();
    let outcome = super::grow::grow_stick(&plan, &s.opts, &mut |_| {}).unwrap();
    assert_eq!(outcome.report.new_size, plan.new_size());
    assert!(outcome.disk.boot_medium);
    // A plan the stick no longer matches is refused.
    let e = super::grow::grow_stick(&plan, &s.opts, &mut |_| {}).unwrap_err();
    assert!(
        format!("{e:#}").contains("already reaches the end"),
        "{e:#}"
    );
    let (code, _) = run_status(tool("sgdisk").arg("-v").arg(&s.path));
    assert_eq!(code, 0);
}
