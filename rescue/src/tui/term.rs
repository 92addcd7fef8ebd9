//! The terminal side of the TUI: set up the console (or a host terminal), read keys, redraw, and carry
//! out the state machine's effects — mounting stores, reading image indexes, running `ops` jobs in a
//! thread — feeding their results back. Detection, used-space scans and the kernel log run in
//! background threads so the screen never freezes.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};

use crate::detect::{self, DetectOptions, Report};
use crate::init::{EXIT_POWEROFF, EXIT_REBOOT};
use crate::ops::{self, LinkOutcome, Location, Progress};
use crate::plan::grow::DataContents;
use crate::store::{self, Store};

use super::app::{App, Effect, ImageSummary, JobResult, Key, Mode, OpenedStore, Request};

/// Messages from the background threads.
enum Msg {
    Report(Report),
    Usage(String, u64),
    Kernel(Vec<String>),
    Progress(Progress),
    Finished(JobResult),
    /// What the rescue stick's data partition holds (disk path, contents).
    StickData(String, DataContents),
    /// An image read for the restore wizard.
    Image(Box<Result<ImageSummary, String>>),
    /// A folder of an image listed for the browse wizard.
    Files(Box<Result<ops::Listing, String>>),
    /// A step of bringing the network up, and its end.
    NetLine(String),
    NetDone(Result<Vec<LinkOutcome>, String>),
    /// An sftp:// server's host key, read for the URL being typed.
    HostKey(Result<Option<ops::HostKey>, String>),
    Repo(Box<Result<ops::RepoState, String>>),
}

pub struct UiOptions {
    pub mode: Mode,
    /// Devices or image files to show instead of every block device (host demos and tests).
    pub paths: Vec<PathBuf>,
    /// Folders offered as places for images (host).
    pub folders: Vec<PathBuf>,
}

/// Run the UI until the user quits (host) or powers off (PID 1). Returns the process exit status
/// (`EXIT_POWEROFF`/`EXIT_REBOOT` tell PID 1 what to do).
pub fn run(opts: UiOptions) -> io::Result<i32> {
    let detect_opts = crate::ops::detect_options();
    let report = detect_now(&opts.paths, &detect_opts);
    let mut app = App::new(opts.mode, report, store::now_unix());
    app.folders = opts.folders.iter().map(|d| Store::directory(d)).collect();

    let (tx, rx) = channel::<Msg>();
    let redetect = Arc::new(AtomicBool::new(false));
    spawn_detector(
        opts.paths.clone(),
        detect_opts.clone(),
        tx.clone(),
        redetect.clone(),
    );
    spawn_usage(app.report.clone(), tx.clone());
    spawn_stick_check(app.report.clone(), tx.clone());
    if opts.mode == Mode::Pid1 {
        spawn_kmsg(tx.clone());
    }

    let mut terminal = setup(opts.mode)?;
    let result = event_loop(&mut terminal, &mut app, &tx, &rx, &redetect, &detect_opts);
    restore_terminal(&mut terminal, opts.mode);
    result
}

type Term = Terminal<CrosstermBackend<io::Stdout>>;

fn setup(mode: Mode) -> io::Result<Term> {
    terminal::enable_raw_mode()?;
    let mut out = io::stdout();
    if mode == Mode::Host {
        crossterm::execute!(out, terminal::EnterAlternateScreen)?;
    }
    crossterm::execute!(out, terminal::Clear(terminal::ClearType::All))?;
    let backend = CrosstermBackend::new(out);
    // A serial console reports 0×0: draw 80×24 there and do not follow resizes we cannot see.
    let viewport = match terminal::size() {
        Ok((w, h)) if w > 0 && h > 0 => Viewport::Fullscreen,
        _ => Viewport::Fixed(Rect::new(0, 0, 80, 24)),
    };
    Terminal::with_options(backend, TerminalOptions { viewport })
}

fn restore_terminal(t: &mut Term, mode: Mode) {
    let _ = terminal::disable_raw_mode();
    if mode == Mode::Host {
        let _ = crossterm::execute!(t.backend_mut(), terminal::LeaveAlternateScreen);
    }
    let _ = t.show_cursor();
}

fn event_loop(
    terminal: &mut Term,
    app: &mut App,
    tx: &Sender<Msg>,
    rx: &Receiver<Msg>,
    redetect: &Arc<AtomicBool>,
    detect_opts: &DetectOptions,
) -> io::Result<i32> {
    let mut cancel: Option<Arc<AtomicBool>> = None;
    let mut quitting = false;
    let mut esc = EscJoiner::default();
    loop {
        terminal.draw(|f| super::view::draw(f, app))?;
        let mut effects = Vec::new();
        let mut keys = Vec::new();
        if event::poll(Duration::from_millis(if esc.pending() { 30 } else { 150 }))? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    if let Some(key) = map_key(k) {
                        keys = esc.feed(key, Instant::now());
                    }
                }
                Event::Resize(_, _) => {
                    let _ = terminal.autoresize();
                }
                _ => {}
            }
        } else {
            keys = esc.flush_stale(Instant::now());
        }
        for key in keys {
            effects.extend(app.on_key(key));
        }
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Report(r) => {
                    spawn_usage(r.clone(), tx.clone());
                    spawn_stick_check(r.clone(), tx.clone());
                    app.set_report(r);
                }
                Msg::Usage(dev, used) => app.on_usage(dev, used),
                Msg::StickData(disk, contents) => app.on_stick_data(disk, contents),
                Msg::Kernel(lines) => {
                    app.kernel_log.extend(lines);
                    let excess = app.kernel_log.len().saturating_sub(2000);
                    app.kernel_log.drain(..excess);
                }
                Msg::Progress(p) => app.on_progress(p),
                Msg::Image(r) => effects.extend(app.on_image(*r)),
                Msg::Files(r) => app.on_files(*r),
                Msg::NetLine(line) => app.on_net_line(line),
                Msg::HostKey(r) => effects.extend(app.on_host_key(r)),
                Msg::Repo(r) => effects.extend(app.on_repo(*r)),
                Msg::NetDone(r) => {
                    app.on_net_done(r);
                    app.on_links(ops::links());
                }
                Msg::Finished(r) => {
                    cancel = None;
                    app.on_finished(r);
                    redetect.store(true, Ordering::Relaxed);
                    if quitting {
                        return Ok(0);
                    }
                }
            }
        }
        for effect in effects {
            match effect {
                Effect::Quit => {
                    if cancel.is_some() {
                        // Wait for the job to stop so nothing is left half-written.
                        quitting = true;
                    } else {
                        return Ok(0);
                    }
                }
                Effect::PowerOff => return Ok(EXIT_POWEROFF),
                Effect::Reboot => return Ok(EXIT_REBOOT),
                Effect::Redetect => redetect.store(true, Ordering::Relaxed),
                Effect::Cancel => {
                    if let Some(c) = &cancel {
                        c.store(true, Ordering::Relaxed);
                    }
                }
                Effect::OpenStore(s, access) => {
                    let r = open_store(&s, access, detect_opts);
                    if let Ok(o) = &r {
                        app.log
                            .push(format!("opened {} at {}", s.title(), o.dir.display()));
                    }
                    app.on_store(r);
                }
                Effect::Inspect(loc) => {
                    // Off the UI thread: over the network this takes seconds (a share is mounted).
                    let (tx, opts) = (tx.clone(), detect_opts.clone());
                    std::thread::spawn(move || {
                        let _ = tx.send(Msg::Image(Box::new(summarize(&loc, &opts))));
                    });
                }
                Effect::ListFiles(spec, path) => {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let _ = tx.send(Msg::Files(Box::new(list_files(&spec, &path))));
                    });
                }
                Effect::ReadHostKey(loc) => {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let key = ops::sftp_host_key(&loc, &ops::NetOptions::default());
                        let _ = tx.send(Msg::HostKey(key));
                    });
                }
                Effect::LookAtRepo(loc, passphrase) => {
                    // Off the UI thread: a share is mounted, and unlocking takes a second (Argon2id).
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let _ = tx.send(Msg::Repo(Box::new(look_at_repo(&loc, passphrase))));
                    });
                }
                Effect::ListLinks => app.on_links(ops::links()),
                Effect::BringUpDhcp => spawn_dhcp(tx.clone()),
                Effect::Unmount(dirs) => {
                    let results = dirs
                        .iter()
                        .map(|d| store::mount::unmount(d).map_err(|e| ops::describe(&e)))
                        .collect();
                    app.on_unmounted(results);
                    redetect.store(true, Ordering::Relaxed);
                }
                Effect::Start(spec) => {
                    let flag = Arc::new(AtomicBool::new(false));
                    cancel = Some(flag.clone());
                    spawn_job(spec, flag, detect_opts.clone(), tx.clone());
                }
            }
        }
    }
}

/// Joins arrow keys that a slow line (a serial console) split into a lone Esc and the characters `[B`:
/// the terminal library sees Esc alone when the rest has not arrived yet. An Esc followed within a
/// moment by `[` or `O` and a final letter is the arrow it was sent as; anything else passes through.
#[derive(Debug, Default)]
pub struct EscJoiner {
    held: Vec<Key>,
    since: Option<Instant>,
}

const ESC_WAIT: Duration = Duration::from_millis(80);

impl EscJoiner {
    pub fn pending(&self) -> bool {
        !self.held.is_empty()
    }

    pub fn feed(&mut self, key: Key, now: Instant) -> Vec<Key> {
        let mut out = self.flush_stale(now);
        match (self.held.as_slice(), key) {
            ([], Key::Esc) => {
                self.held.push(key);
                self.since = Some(now);
            }
            ([Key::Esc], Key::Char('[' | 'O')) => self.held.push(key),
            ([Key::Esc, _], Key::Char(c @ ('A' | 'B' | 'C' | 'D' | 'H' | 'F'))) => {
                self.held.clear();
                out.push(match c {
                    'A' => Key::Up,
                    'B' => Key::Down,
                    'C' => Key::Right,
                    'D' => Key::Left,
                    'H' => Key::Home,
                    _ => Key::End,
                });
            }
            _ => {
                out.append(&mut self.held);
                out.push(key);
            }
        }
        out
    }

    /// Held keys older than the wait are what they seemed: a real Esc (and whatever followed).
    pub fn flush_stale(&mut self, now: Instant) -> Vec<Key> {
        match self.since {
            Some(t) if !self.held.is_empty() && now.duration_since(t) > ESC_WAIT => {
                std::mem::take(&mut self.held)
            }
            _ => Vec::new(),
        }
    }
}

fn map_key(k: KeyEvent) -> Option<Key> {
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        return None;
    }
    Some(match k.code {
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Char(c) => Key::Char(c),
        _ => return None,
    })
}

fn detect_now(paths: &[PathBuf], opts: &DetectOptions) -> Report {
    if paths.is_empty() {
        detect::detect_all(opts)
    } else {
        detect::detect_paths(paths, opts)
    }
}

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

/// Re-detect when a block device appears or goes (hotplug: within half a second) or when asked.
fn spawn_detector(
    paths: Vec<PathBuf>,
    opts: DetectOptions,
    tx: Sender<Msg>,
    redetect: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut seen = block_devices();
        loop {
            std::thread::sleep(Duration::from_millis(400));
            let now = block_devices();
            let asked = redetect.swap(false, Ordering::Relaxed);
            if now != seen || asked {
                if now != seen {
                    // Let the kernel finish reading a new disk's partition table.
                    std::thread::sleep(Duration::from_millis(300));
                }
                seen = block_devices();
                if tx.send(Msg::Report(detect_now(&paths, &opts))).is_err() {
                    return;
                }
            }
        }
    });
}

/// Used bytes of every filesystem with a used-block map, for the overview's "used %".
fn spawn_usage(report: Report, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        for d in &report.disks {
            let mut send = |dev, used| tx.send(Msg::Usage(dev, used)).is_ok();
            ops::filesystem_usage(d, &mut send);
        }
    });
}

/// Whether the rescue stick's data partition holds files, for the offer to grow it.
fn spawn_stick_check(report: Report, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        for (disk, contents) in super::grow::check_stick(&report) {
            if tx.send(Msg::StickData(disk, contents)).is_err() {
                return;
            }
        }
    });
}

/// Kernel messages from /dev/kmsg, for the log view.
fn spawn_kmsg(tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let Ok(mut f) = std::fs::File::open("/dev/kmsg") else {
            return;
        };
        let mut buf = vec![0u8; 8192];
        loop {
            // Each read returns one record: "prio,seq,usec,flags;text".
            match f.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(500)),
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let line = match rec.split_once(';') {
                        Some((head, text)) => {
                            let usec: u64 = head
                                .split(',')
                                .nth(2)
                                .and_then(|u| u.parse().ok())
                                .unwrap_or(0);
                            format!(
                                "[{:>5}.{:03}] {}",
                                usec / 1_000_000,
                                (usec / 1000) % 1000,
                                text.lines().next().unwrap_or("")
                            )
                        }
                        None => rec.trim_end().to_string(),
                    };
                    if tx.send(Msg::Kernel(vec![line])).is_err() {
                        return;
                    }
                }
                // EPIPE: records were overwritten before we read them; carry on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(_) => return,
            }
        }
    });
}

fn open_store(
    s: &Store,
    access: store::Access,
    opts: &DetectOptions,
) -> Result<OpenedStore, String> {
    let dir = store::ensure_mounted(s, access, opts).map_err(|e| ops::describe(&e))?;
    let repos = ops::find_repositories(&dir);
    let mut images = store::find_images(&dir);
    for r in &repos {
        let root = dir.join(&r.rel);
        images.extend(r.snapshots.iter().rev().map(|e| store::ImageEntry {
            path: std::path::PathBuf::from(format!("{}::{}", root.display(), e.label())),
            size_bytes: e.meta.image_bytes,
            modified_unix: e.meta.time_unix,
        }));
    }
    Ok(OpenedStore {
        store: s.clone(),
        free_bytes: store::free_bytes(&dir),
        images,
        repos,
        dir,
    })
}

/// The repository at `loc`, unlocked with `passphrase` when it is given.
fn look_at_repo(loc: &Location, passphrase: Option<ops::Secret>) -> Result<ops::RepoState, String> {
    let net = ops::NetOptions {
        passphrase,
        ..Default::default()
    };
    ops::look_at_repo(loc, &net).map_err(|e| ops::describe(&e))
}

/// Carry out, on this thread, an effect that asks the machine something (open a store, read an image,
/// look at a repository) and give `app` the answer, as the event loop does in the background; the
/// effects the answer leads to are returned, and so is any other effect (start a job, quit), left to
/// the caller. For tests that drive the wizards against real stores and repositories.
pub fn answer_now(app: &mut App, effect: Effect, opts: &DetectOptions) -> Vec<Effect> {
    match effect {
        Effect::OpenStore(s, access) => {
            app.on_store(open_store(&s, access, opts));
            vec![]
        }
        Effect::Inspect(loc) => app.on_image(summarize(&loc, opts)),
        Effect::ListFiles(spec, path) => {
            app.on_files(list_files(&spec, &path));
            vec![]
        }
        Effect::LookAtRepo(loc, passphrase) => app.on_repo(look_at_repo(&loc, passphrase)),
        other => vec![other],
    }
}

/// A folder of an image's filesystem, for the browse wizard.
fn list_files(spec: &ops::FilesSpec, path: &str) -> Result<ops::Listing, String> {
    ops::files_list(spec, path, &ops::NetOptions::default()).map_err(|e| ops::describe(&e))
}

/// What the restore wizard shows of an image. A URL's password is in `loc` itself.
fn summarize(loc: &Location, opts: &DetectOptions) -> Result<ImageSummary, String> {
    let info = ops::inspect(loc, &ops::NetOptions::default()).map_err(|e| ops::describe(&e))?;
    Ok(ImageSummary {
        location: loc.clone(),
        size_bytes: info.image_bytes,
        root_hash: info.root_hash,
        creation: info.creation,
        disk: info.disk,
        layout: info.layout,
        image_disk: loc.local().and_then(|p| detect::disk_holding(p, opts)),
        unreadable_ranges: info.unreadable.len(),
        virtual_format: info.virtual_format,
        other_format: info.other_format,
    })
}

/// DHCP on every wired link with carrier, each step sent as it is said.
fn spawn_dhcp(tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let lines = tx.clone();
        let result = ops::bring_up("dhcp", &mut |line| {
            let _ = lines.send(Msg::NetLine(line));
        })
        .map_err(|e| ops::describe(&e));
        let _ = tx.send(Msg::NetDone(result));
    });
}

fn spawn_job(spec: Request, cancel: Arc<AtomicBool>, opts: DetectOptions, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let (ptx, prx) = channel::<Progress>();
        let fwd = tx.clone();
        let forwarder = std::thread::spawn(move || {
            for p in prx {
                let _ = fwd.send(Msg::Progress(p));
            }
        });
        // The capture wizard shows a destination's room before the job starts.
        let ctl = ops::Control {
            cancel,
            progress: Some(ptx),
            notices: None,
        };
        let how = ops::RunOptions {
            create_folder: true,
            log: true,
            result_file: false,
            ..Default::default()
        };
        let outcome = ops::run(&spec, &how, &opts, ctl);
        let _ = forwarder.join();
        let _ = tx.send(Msg::Finished(JobResult::of(&spec, &outcome)));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_arrow_keys_are_joined_and_a_real_esc_is_kept() {
        let t0 = Instant::now();
        let mut j = EscJoiner::default();
        assert!(j.feed(Key::Esc, t0).is_empty());
        assert!(j.feed(Key::Char('['), t0).is_empty());
        assert_eq!(j.feed(Key::Char('B'), t0), vec![Key::Down]);
        // A lone Esc comes out once the wait is over.
        assert!(j.feed(Key::Esc, t0).is_empty());
        assert!(j.flush_stale(t0 + Duration::from_millis(10)).is_empty());
        assert_eq!(
            j.flush_stale(t0 + Duration::from_millis(200)),
            vec![Key::Esc]
        );
        // Esc then an ordinary key: both, in order.
        j.feed(Key::Esc, t0);
        assert_eq!(j.feed(Key::Char('c'), t0), vec![Key::Esc, Key::Char('c')]);
        // Text with '[' is not swallowed.
        assert_eq!(j.feed(Key::Char('['), t0), vec![Key::Char('[')]);
    }
}
