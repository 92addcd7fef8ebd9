//! `rescue`: PID 1 of the rescue stick, the `/sbin/modprobe` the kernel calls, and a CLI on any Linux host.

#![deny(unsafe_code)]

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    if argv0.rsplit('/').next() == Some("modprobe") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(rescue::hw::modprobe_main(&args));
    }
    if std::process::id() == 1 {
        rescue::init::run_pid1();
    }
    std::process::exit(rescue::cli::main());
}
