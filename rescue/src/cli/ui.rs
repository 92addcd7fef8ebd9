//! The plain console front end PID 1 falls back to when the full-screen TUI cannot drive the terminal:
//! the disk list, redrawn whenever a disk appears or disappears, and line commands to refresh, power off
//! or reboot.

use std::io::BufRead;
use std::time::Duration;

use crate::detect;
use crate::init::{EXIT_POWEROFF, EXIT_REBOOT};

fn block_devices() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/block")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn show() {
    let report = detect::detect_all(&super::detect_options());
    println!("\n==== Disks ====\n{}", super::render_report(&report));
    println!("Enter: refresh   p: power off   r: reboot");
}

pub fn run() -> i32 {
    show();
    // Hotplug: a disk plugged in (or removed) while the list is shown is redrawn within half a second.
    std::thread::spawn(|| {
        let mut seen = block_devices();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = block_devices();
            if now != seen {
                seen = now;
                show();
            }
        }
    });
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("p") => return EXIT_POWEROFF,
            Ok("r") => return EXIT_REBOOT,
            Ok(_) => show(),
            Err(_) => break,
        }
    }
    // stdin closed: nothing more to read from the console; let PID 1 restart us.
    std::thread::sleep(Duration::from_secs(1));
    0
}
