//! Network locations and the network screen: snapshots (80×24 and 132×40) of the URL steps and of the
//! links, and the state machines — a capture onto a share and a restore and verify from one, the URL and
//! password typed; a bad URL refused with the reason; the password in no rendered screen, status line,
//! log or effect's debug text; DHCP asked for from the network screen.

use super::app::*;
use super::capture::CapStep;
use super::clone::VStep;
use super::restore::RStep;
use super::tests::{app, keys, render, restore_onto, snap, summary, type_text};
use crate::ops::{Link, LinkOutcome, Location};

const PASSWORD: &str = "Sm8-pass,word";
const URL: &str = "smb://root@10.0.2.2:4450/images/pc";

/// No rendered screen (at 80×24), status line or log line holds the password.
fn no_password(a: &App) {
    let screen = render(a, 80, 24);
    assert!(!screen.contains(PASSWORD), "{screen}");
    assert!(!screen.contains("Sm8"), "{screen}");
    assert!(!a.status.clone().unwrap_or_default().contains("Sm8"));
    assert!(a.log.iter().all(|l| !l.contains("Sm8")), "{:?}", a.log);
    assert!(!format!("{:?}", a.screen).contains("Sm8"));
}

/// Type `text` a key at a time, checking every screen on the way.
fn type_checked(a: &mut App, text: &str) {
    for c in text.chars() {
        a.on_key(Key::Char(c));
        no_password(a);
    }
}

/// The capture wizard on its network step (the last destination row).
fn capture_to_url_step(a: &mut App) {
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    a.on_key(Key::End);
    let Screen::Capture(w) = &a.screen else {
        panic!("not in the capture wizard")
    };
    assert!(w.on_network_row());
    a.on_key(Key::Enter);
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Url);
}

fn remote_url(loc: &Location) -> &crate::url::Url {
    match loc {
        Location::Remote(u) => u,
        Location::Local(p) => panic!("a local path: {}", p.display()),
        Location::Snapshot(s) => panic!("a snapshot: {s}"),
    }
}

#[test]
fn snapshot_network_locations() {
    let mut a = app();
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    a.on_key(Key::End);
    snap("capture_dest_network", &a);
    a.on_key(Key::Enter);
    type_text(&mut a, URL);
    a.on_key(Key::Tab);
    type_text(&mut a, PASSWORD);
    snap("capture_url", &a);
    a.on_key(Key::Enter);
    snap("capture_summary_network", &a);

    let mut a = app();
    a.on_key(Key::Char('r'));
    a.on_key(Key::End);
    snap("restore_store_network", &a);
    a.on_key(Key::Enter);
    type_text(&mut a, "https://tech@images.example/pc.rimg");
    a.on_key(Key::Tab);
    type_text(&mut a, PASSWORD);
    a.on_key(Key::Enter);
    snap("restore_url_reading", &a);
}

#[test]
fn snapshot_network_screen() {
    let mut a = app();
    assert_eq!(a.on_key(Key::Char('n')), vec![Effect::ListLinks]);
    snap("network_reading", &a);
    a.on_links(vec![link("lo", false, None, &["127.0.0.1/8"]), eth0(&[])]);
    snap("network_links", &a);
    a.on_key(Key::Char('d'));
    a.on_net_line("eth0: asking for a DHCP lease".into());
    a.on_net_line("eth0: DHCP lease 10.0.2.15/24 from 10.0.2.2, for 86400 s".into());
    a.on_net_done(Ok(vec![LinkOutcome {
        link: "eth0".into(),
        result: Ok("DHCP lease 10.0.2.15/24 from 10.0.2.2, for 86400 s".into()),
    }]));
    a.on_links(vec![eth0(&["10.0.2.15/24", "fec0::5054:ff:fe12:3456/64"])]);
    snap("network_dhcp", &a);
    a.on_links(vec![]);
    snap("network_none", &a);
}

fn link(name: &str, ethernet: bool, carrier: Option<bool>, addresses: &[&str]) -> Link {
    Link {
        name: name.into(),
        index: 1,
        mac: "52:54:00:12:34:56".into(),
        ethernet,
        driver: ethernet.then(|| "virtio_net".into()),
        up: carrier.is_some() || name == "lo",
        carrier,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
    }
}

fn eth0(addresses: &[&str]) -> Link {
    link("eth0", true, Some(true), addresses)
}

#[test]
fn capture_onto_a_share_carries_the_password_in_the_url_only() {
    let mut a = app();
    capture_to_url_step(&mut a);
    type_checked(&mut a, URL);
    // Tab to the password field: shown as one * per character.
    a.on_key(Key::Tab);
    type_checked(&mut a, PASSWORD);
    assert!(render(&a, 80, 24).contains(&format!("Password: {}", "*".repeat(PASSWORD.len()))));
    // Letters are text here: '?' opens no help, 'q' does not quit.
    let e = keys(
        &mut a,
        &[
            Key::Char('?'),
            Key::Char('q'),
            Key::Backspace,
            Key::Backspace,
        ],
    );
    assert!(e.is_empty());
    assert_eq!(a.overlay, None);
    a.on_key(Key::Enter);
    no_password(&a);
    let Screen::Capture(w) = &a.screen else {
        panic!("{:?}", a.status)
    };
    assert_eq!(w.step, CapStep::Summary);
    let screen = render(&a, 80, 24);
    // The URL redacted, .rimg added; no space check.
    assert!(
        screen.contains("smb://root:***@10.0.2.2:4450/images/pc.rimg"),
        "{screen}"
    );
    assert!(
        screen.contains("unknown until the share is mounted"),
        "{screen}"
    );
    assert_eq!(w.space_warning(), None);
    let e = a.on_key(Key::Enter);
    no_password(&a);
    assert!(!format!("{e:?}").contains("Sm8"));
    let [Effect::Start(Request::Capture(spec))] = e.as_slice() else {
        panic!("expected a capture to start, got {e:?}")
    };
    let u = remote_url(&spec.output);
    assert_eq!(u.password.as_ref().unwrap().expose(), PASSWORD);
    assert_eq!(u.user.as_deref(), Some("root"));
    assert_eq!(u.path, "/images/pc.rimg");
    assert_eq!(u.port, Some(4450));
    assert!(a.log.iter().any(|l| l.contains("smb://root:***@10.0.2.2")));
    // The progress and result screens show the title: no password there either.
    let mut failed = crate::ops::Outcome::new("capture", Some(spec.output.to_string()));
    failed.error = Some(format!(
        "{}: the server refused the user name or password",
        spec.output
    ));
    a.on_finished(JobResult::of(&Request::Capture(spec.clone()), &failed));
    no_password(&a);
}

#[test]
fn a_bad_url_is_refused_with_the_reason_and_esc_goes_back() {
    let mut a = app();
    capture_to_url_step(&mut a);
    type_text(&mut a, "https://web.example/images/pc.rimg");
    assert!(a.on_key(Key::Enter).is_empty());
    let why = a.status.clone().unwrap();
    assert!(why.contains("a web server cannot take an image"), "{why}");
    assert!(render(&a, 80, 24).contains("a web server cannot take an image"));
    for _ in 0..40 {
        a.on_key(Key::Backspace);
    }
    type_text(&mut a, "nas/images/pc.rimg");
    a.on_key(Key::Enter);
    assert!(a.status.clone().unwrap().contains("is not a URL"));
    for _ in 0..40 {
        a.on_key(Key::Backspace);
    }
    type_text(&mut a, "smb://nas:99999/images/pc.rimg");
    a.on_key(Key::Enter);
    assert!(a.status.clone().unwrap().contains("port `99999`"));
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Url);
    // Esc: back to the destinations; a local drive chosen then is used, not the URL.
    a.on_key(Key::Esc);
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Dest);
    assert_eq!(w.output(), None);
}

#[test]
fn a_user_without_a_password_is_asked_once() {
    let mut a = app();
    capture_to_url_step(&mut a);
    type_text(&mut a, URL);
    a.on_key(Key::Enter);
    assert!(a.status.clone().unwrap().contains("password of root"));
    let e = keys(&mut a, &[Key::Enter, Key::Enter]);
    let [Effect::Start(Request::Capture(spec))] = e.as_slice() else {
        panic!("{e:?}")
    };
    assert_eq!(remote_url(&spec.output).password, None);
}

/// The restore wizard's network step, `url` and the password typed, Enter pressed.
fn restore_url_typed(a: &mut App, url: &str) -> Vec<Effect> {
    a.on_key(Key::Char('r'));
    a.on_key(Key::End);
    a.on_key(Key::Enter);
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Url);
    type_checked(a, url);
    a.on_key(Key::Tab);
    type_checked(a, PASSWORD);
    a.on_key(Key::Enter)
}

#[test]
fn restore_from_a_url_inspects_it_and_plans_without_an_image_disk() {
    let mut a = app();
    let e = restore_url_typed(&mut a, "https://tech@images.example/pc.rimg");
    no_password(&a);
    let [Effect::Inspect(loc)] = e.as_slice() else {
        panic!("{e:?}")
    };
    let u = remote_url(loc);
    assert_eq!(u.password.as_ref().unwrap().expose(), PASSWORD);
    // While it is read, keys wait.
    assert!(a.on_key(Key::Enter).is_empty());
    let mut image = summary();
    image.location = loc.clone();
    image.image_disk = None;
    a.on_image(Ok(image));
    no_password(&a);
    assert!(render(&a, 80, 24).contains("https://tech:***@images.example/pc.rimg"));
    a.on_key(Key::Enter);
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Target);
    // The drive that held the local image is a target like any other now.
    let vdb = w.targets.iter().find(|t| t.device == "/dev/vdb").unwrap();
    assert!(vdb.verdict.is_ok(), "{:?}", vdb.verdict);
    let e = restore_onto(&mut a, "/dev/vdc");
    no_password(&a);
    let [Effect::Start(Request::Restore(spec))] = e.as_slice() else {
        panic!("{e:?}")
    };
    assert_eq!(&spec.image, loc);
}

#[test]
fn a_url_that_cannot_be_read_keeps_the_step_and_esc_stops_waiting() {
    let mut a = app();
    restore_url_typed(&mut a, "smb://root@nas/images/pc.rimg");
    a.on_image(Err(
        "smb://root:***@nas/images/pc.rimg: cannot find the server".into(),
    ));
    assert!(a.status.clone().unwrap().contains("cannot find the server"));
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Url);
    assert!(!w.reading);
    // Again, and stop waiting: a late answer is ignored.
    a.on_key(Key::Enter);
    a.on_key(Key::Esc);
    a.on_image(Ok(summary()));
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Url);
    assert_eq!(w.image, None);
}

#[test]
fn verify_from_a_url_starts_on_it() {
    let mut a = app();
    a.on_key(Key::Char('v'));
    a.on_key(Key::End);
    a.on_key(Key::Enter);
    let Screen::Verify(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, VStep::Url);
    type_checked(&mut a, "http://10.0.2.2:8080/pc.rimg");
    let e = a.on_key(Key::Enter);
    let [Effect::Start(Request::Verify(spec))] = e.as_slice() else {
        panic!("{e:?}")
    };
    assert_eq!(remote_url(&spec.image).host, "10.0.2.2");
}

#[test]
fn the_network_screen_lists_links_and_asks_for_dhcp_once() {
    let mut a = app();
    // From the menu too.
    let n = MENU.iter().position(|m| m.1 == 'n').unwrap();
    a.on_key(Key::Enter);
    let e = keys(&mut a, &vec![Key::Down; n]);
    assert!(e.is_empty());
    assert_eq!(a.on_key(Key::Enter), vec![Effect::ListLinks]);
    assert_eq!(a.screen, Screen::Network);
    a.on_links(vec![link("lo", false, None, &[]), eth0(&[])]);
    let names: Vec<_> = a
        .net
        .links
        .iter()
        .flatten()
        .map(|l| l.name.clone())
        .collect();
    assert_eq!(names, ["eth0"]);
    let screen = render(&a, 80, 24);
    assert!(
        screen.contains("eth0       virtio_net   carrier yes  no address"),
        "{screen}"
    );
    assert_eq!(a.on_key(Key::Char('d')), vec![Effect::BringUpDhcp]);
    assert!(a.net.busy);
    assert!(a.on_key(Key::Char('d')).is_empty());
    assert!(a.status.clone().unwrap().contains("already"));
    a.on_net_line("eth0: DHCP lease 10.0.2.15/24 from 10.0.2.2, for 86400 s".into());
    a.on_net_done(Ok(vec![LinkOutcome {
        link: "eth0".into(),
        result: Ok("DHCP lease".into()),
    }]));
    assert!(!a.net.busy);
    assert!(a.log.iter().any(|l| l.contains("DHCP lease 10.0.2.15/24")));
    assert!(render(&a, 80, 24).contains("done: eth0 up"));
    // A failure says so.
    a.on_key(Key::Char('d'));
    a.on_net_done(Ok(vec![LinkOutcome {
        link: "eth0".into(),
        result: Err("no carrier after 6 s".into()),
    }]));
    assert!(render(&a, 80, 24).contains("no link came up"));
    assert_eq!(a.on_key(Key::Char('r')), vec![Effect::ListLinks]);
    a.on_key(Key::Esc);
    assert_eq!(a.screen, Screen::Overview);
    // None at all: the likely reason.
    a.on_key(Key::Char('n'));
    a.on_links(vec![]);
    assert!(render(&a, 80, 24).contains("the NIC's driver may be missing"));
}

fn host_key(pinned: bool) -> crate::ops::HostKey {
    crate::ops::HostKey {
        algorithm: "ssh-ed25519".into(),
        fingerprint: "SHA256:q3V8zTkz0b7bVYl0bmSvKx2D2yY2mJpR/9oH+3vQa1E".into(),
        pinned,
        check_on_server: "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub".into(),
    }
}

/// An sftp:// server's unpinned key is shown with the command to compare it on the server; `y` pins it
/// in the URL and goes on; `n` goes back with nothing sent; a pinned key goes on at once.
#[test]
fn an_unpinned_sftp_host_key_is_shown_and_pinned_on_y() {
    let url = "sftp://root@10.0.2.2:2222/srv/images/pc";
    let mut a = app();
    capture_to_url_step(&mut a);
    type_text(&mut a, url);
    let e = a.on_key(Key::Enter);
    let [Effect::ReadHostKey(loc)] = e.as_slice() else {
        panic!("expected the host key to be read, got {e:?}")
    };
    assert_eq!(remote_url(loc).host, "10.0.2.2");
    assert!(render(&a, 80, 24).contains("Reading the server's host key"));
    // Typing waits; Esc stops waiting and the late answer is ignored.
    assert!(a.on_key(Key::Char('x')).is_empty());
    a.on_key(Key::Esc);
    assert!(a.status.clone().unwrap().contains("not trusted"));
    assert!(a.on_host_key(Ok(Some(host_key(false)))).is_empty());
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Url);
    assert_eq!(w.entry.host_key, super::netloc::KeyCheck::NotRead);

    // Asked again: the key is shown, `n` refuses it.
    assert!(matches!(
        a.on_key(Key::Enter).as_slice(),
        [Effect::ReadHostKey(_)]
    ));
    assert!(a.on_host_key(Ok(Some(host_key(false)))).is_empty());
    let screen = render(&a, 100, 30);
    assert!(
        screen.contains("SHA256:q3V8zTkz0b7bVYl0bmSvKx2D2yY2mJpR/9oH+3vQa1E"),
        "{screen}"
    );
    assert!(
        screen.contains("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"),
        "{screen}"
    );
    snap("capture_sftp_host_key", &a);
    assert!(a.on_key(Key::Char('n')).is_empty());
    assert!(a.status.clone().unwrap().contains("nothing was sent"));

    // And again: `y` pins it in the URL and the summary follows.
    a.on_key(Key::Enter);
    a.on_host_key(Ok(Some(host_key(false))));
    assert!(a.on_key(Key::Char('y')).is_empty());
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Summary, "{:?}", a.status);
    let u = remote_url(w.remote.as_ref().unwrap());
    assert_eq!(
        u.param("fingerprint"),
        Some("SHA256:q3V8zTkz0b7bVYl0bmSvKx2D2yY2mJpR/9oH+3vQa1E")
    );
    assert_eq!(u.path, "/srv/images/pc.rimg");

    // A key known_hosts pins: straight on, nothing to confirm.
    let mut a = app();
    a.on_key(Key::Char('r'));
    a.on_key(Key::End);
    a.on_key(Key::Enter);
    type_text(&mut a, "sftp://root@10.0.2.2:2222/srv/images/pc.rimg");
    assert!(matches!(
        a.on_key(Key::Enter).as_slice(),
        [Effect::ReadHostKey(_)]
    ));
    let e = a.on_host_key(Ok(Some(host_key(true))));
    let [Effect::Inspect(loc)] = e.as_slice() else {
        panic!("expected the image to be read, got {e:?}")
    };
    assert_eq!(remote_url(loc).param("fingerprint"), None);

    // A failure to reach the server is said, and the URL can be changed.
    let mut a = app();
    a.on_key(Key::Char('v'));
    a.on_key(Key::End);
    a.on_key(Key::Enter);
    type_text(&mut a, "sftp://10.0.2.2/x.rimg");
    a.on_key(Key::Enter);
    a.on_host_key(Err("sftp://10.0.2.2/x.rimg: cannot connect: refused".into()));
    assert!(a.status.clone().unwrap().contains("cannot connect"));
    let Screen::Verify(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, VStep::Url);
}
