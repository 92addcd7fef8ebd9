//! Coldplug and hotplug. At boot, every device already in sysfs publishes a `modalias`; we load what
//! matches them. Devices that appear later (a disk behind a freshly loaded controller, a USB stick plugged in
//! after boot) arrive as kernel uevents on a netlink socket, which a listener thread turns into more loads.
//! The listener also knows when the system has gone quiet, which is how PID 1 tells "all disks detected".

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ModuleLoader;
use crate::sys::UeventSocket;

/// One kernel uevent, the fields we use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: String,
    pub modalias: Option<String>,
    pub devname: Option<String>,
}

/// Parse a kernel uevent datagram: `ACTION@DEVPATH\0KEY=VALUE\0...`. Anything else (such as udev's
/// `libudev` messages) is `None`.
pub fn parse(msg: &[u8]) -> Option<Uevent> {
    let mut parts = msg.split(|&b| b == 0).filter(|p| !p.is_empty());
    let header = std::str::from_utf8(parts.next()?).ok()?;
    if !header.contains('@') {
        return None;
    }
    let mut ev = Uevent::default();
    for p in parts {
        let Ok(kv) = std::str::from_utf8(p) else {
            continue;
        };
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "ACTION" => ev.action = v.to_string(),
            "DEVPATH" => ev.devpath = v.to_string(),
            "SUBSYSTEM" => ev.subsystem = v.to_string(),
            "MODALIAS" => ev.modalias = Some(v.to_string()),
            "DEVNAME" => ev.devname = Some(v.to_string()),
            _ => {}
        }
    }
    if ev.action.is_empty() {
        return None;
    }
    Some(ev)
}

/// Every `modalias` published under `sysfs/devices`, sorted and unique.
pub fn coldplug_aliases(sysfs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![sysfs.join("devices")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            // sysfs is full of symlinks back up the tree; following them would loop.
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == "modalias" {
                if let Ok(s) = std::fs::read_to_string(e.path()) {
                    let s = s.trim();
                    if !s.is_empty() {
                        out.push(s.to_string());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Shared between the listener thread and whoever waits for the system to settle.
pub struct Activity {
    last: Mutex<Instant>,
    in_flight: AtomicUsize,
    events: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn events_seen(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// Block until no module load is running and no uevent arrived for `quiet`, and no USB storage
    /// device is still waiting for its SCSI scan; give up after `max`. Returns whether it settled.
    pub fn wait_settled(&self, sysfs: &Path, quiet: Duration, max: Duration) -> bool {
        let start = Instant::now();
        loop {
            let idle = self.last.lock().map(|l| l.elapsed()).unwrap_or(quiet);
            let busy = self.in_flight.load(Ordering::SeqCst) > 0;
            if !busy && idle >= quiet && usb_storage_pending(sysfs) == 0 {
                return true;
            }
            if start.elapsed() >= max {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// USB storage interfaces bound to a driver whose SCSI host has no target yet: usb-storage waits
/// `delay_use` seconds before it scans, a gap with no uevents that must not count as "settled".
pub fn usb_storage_pending(sysfs: &Path) -> usize {
    let mut pending = 0;
    for driver in ["usb-storage", "uas"] {
        let Ok(entries) = std::fs::read_dir(sysfs.join("bus/usb/drivers").join(driver)) else {
            continue;
        };
        for intf in entries.flatten() {
            if !intf.file_name().to_string_lossy().contains(':') {
                continue;
            }
            let Ok(children) = std::fs::read_dir(intf.path()) else {
                continue;
            };
            for host in children.flatten() {
                if !host.file_name().to_string_lossy().starts_with("host") {
                    continue;
                }
                let has_target = std::fs::read_dir(host.path())
                    .map(|d| {
                        d.flatten()
                            .any(|t| t.file_name().to_string_lossy().starts_with("target"))
                    })
                    .unwrap_or(false);
                if !has_target {
                    pending += 1;
                }
            }
        }
    }
    pending
}

/// Start the listener thread. Open the socket *before* coldplug so no event between the sysfs walk and
/// the listener is lost. `on_event` sees every parsed uevent (after its module load was started).
pub fn spawn_listener(
    socket: UeventSocket,
    loader: Arc<ModuleLoader>,
    on_event: impl Fn(&Uevent) + Send + 'static,
) -> Arc<Activity> {
    let activity = Arc::new(Activity {
        last: Mutex::new(Instant::now()),
        in_flight: AtomicUsize::new(0),
        events: AtomicUsize::new(0),
    });
    let act = activity.clone();
    std::thread::spawn(move || loop {
        let msg = match socket.recv(1000) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("rescue: uevent socket: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let Some(ev) = parse(&msg) else { continue };
        act.events.fetch_add(1, Ordering::Relaxed);
        act.touch();
        if ev.action == "add" {
            if let Some(alias) = ev.modalias.clone() {
                act.in_flight.fetch_add(1, Ordering::SeqCst);
                let (loader, act2) = (loader.clone(), act.clone());
                // A load can take a while (probing hardware); never hold up the socket for it.
                std::thread::spawn(move || {
                    let _ = loader.load_alias(&alias);
                    act2.touch();
                    act2.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
        on_event(&ev);
    });
    activity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_uevents() {
        let msg = b"add@/devices/pci0000:00/0000:00:04.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\0SEQNUM=812\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.subsystem, "pci");
        assert_eq!(
            ev.modalias.as_deref(),
            Some("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00")
        );
    }

    #[test]
    fn ignores_udev_and_garbage() {
        assert!(parse(b"libudev\0\xfe\xed").is_none());
        assert!(parse(b"").is_none());
        assert!(parse(b"add@/x\0NOACTION\0").is_none());
    }

    #[test]
    fn coldplug_walks_a_fake_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("devices/pci0000:00/0000:00:04.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("modalias"), "pci:v00001AF4d00001001\n").unwrap();
        std::fs::write(dir.path().join("devices/modalias"), "\n").unwrap();
        assert_eq!(coldplug_aliases(dir.path()), ["pci:v00001AF4d00001001"]);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&bytes);
        }
    }
}
