//! `rescue job`: run an unattended job (docs/JOBS.md) and print its outcome; a thin front end over `job`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use crate::init::{EXIT_POWEROFF, EXIT_REBOOT};
use crate::job::{self, After, JobEnv};

pub use crate::init::EXIT_NO_JOB;

#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// A job file, or the inline form: `action=restore image.label=DATA image.path=x.rimg target.internal=true`.
    pub job: String,
    /// The job file is on the rescue stick's data partition (a path relative to its root).
    #[arg(long)]
    pub on_stick: bool,
    /// Only consider these devices or image files as disks (default: every block device).
    #[arg(long = "disk")]
    pub disks: Vec<PathBuf>,
    /// Wait this many seconds before starting; Enter cancels (for unattended boots).
    #[arg(long, default_value_t = 0)]
    pub countdown: u64,
    /// Progress as JSON lines on stderr and the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Exit with the status that asks PID 1 to power off or reboot, as the job's `after` says.
    #[arg(long, hide = true)]
    pub apply_after: bool,
    /// Print PID 1's command-begin marker once there is a job to run (none when `--on-stick` finds no
    /// job file: a normal boot shows no markers).
    #[arg(long, hide = true)]
    pub markers: bool,
}

pub fn run(a: JobArgs) -> anyhow::Result<i32> {
    let detect = super::detect_options();
    let arg = if a.on_stick {
        let Some((dir, mounted_here)) = job::stick_data_dir(&detect) else {
            return Ok(EXIT_NO_JOB);
        };
        let path = dir.join(a.job.trim_start_matches('/'));
        if !path.exists() {
            // No job: PID 1 goes on to the UI, and prints no markers.
            // Leave the stick as it was: a mounted data partition cannot be grown, for one.
            if mounted_here {
                let _ = crate::store::mount::unmount(&dir);
            }
            return Ok(EXIT_NO_JOB);
        }
        eprintln!(
            "rescue: job file {} found on the rescue stick",
            path.display()
        );
        path.display().to_string()
    } else {
        a.job.clone()
    };
    if a.markers {
        println!("{}", crate::init::CMD_BEGIN);
    }
    let spec = job::load(&arg).map_err(|e| anyhow::anyhow!(e))?;
    if a.countdown > 0 && !countdown(a.countdown, &spec) {
        eprintln!("rescue: the job was cancelled before it started; nothing was touched");
        return Ok(1);
    }
    let env = JobEnv {
        detect,
        disks: a.disks.clone(),
    };
    let (ctl, printers) = super::progress::control(a.json, false);
    let outcome = job::run(&spec, &env, ctl);
    printers.finish();
    if a.json {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    for line in outcome.summary() {
        eprintln!("rescue: {line}");
    }
    match (&outcome.log, &outcome.result_file) {
        (Some(l), Some(r)) => eprintln!("rescue: log {l}; result {r}"),
        _ => eprintln!(
            "rescue: warning: the log or result file could not be written beside the image"
        ),
    }
    if !outcome.ok {
        eprintln!("rescue: THE JOB FAILED. Nothing reports success; see the error above.");
        return Ok(1);
    }
    Ok(match (a.apply_after, spec.after) {
        (true, After::Poweroff) => EXIT_POWEROFF,
        (true, After::Reboot) => EXIT_REBOOT,
        _ => 0,
    })
}

/// Announce the job and wait; Enter cancels. Returns whether to go on.
fn countdown(seconds: u64, spec: &job::JobSpec) -> bool {
    eprintln!(
        "rescue: an unattended {:?} job starts in {seconds} s (after it: {:?}). Press Enter to cancel.",
        spec.action, spec.after
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_ok() {
            let _ = tx.send(());
        }
    });
    rx.recv_timeout(Duration::from_secs(seconds)).is_err()
}
