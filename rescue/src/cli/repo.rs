//! `rescue repo init` and `rescue snapshots`: making a repository and listing what it holds.

use std::path::PathBuf;

use serde_json::json;

use crate::ops;
use crate::repo;
use crate::units::human_size;

#[derive(clap::Subcommand, Debug)]
pub enum RepoCmd {
    /// Make a repository in a new or empty folder (on a drive, or a mounted share).
    Init {
        /// The folder.
        repo: PathBuf,
        /// Encrypt everything stored (chunks, snapshot names, indexes) with a key protected by a
        /// passphrase: from --passphrase-file, RESCUE_PASSPHRASE, or typed twice on the terminal. Without
        /// the passphrase nothing in it can be read: keep it safe.
        #[arg(long)]
        encrypt: bool,
        /// The passphrase, the first line of this file (with --encrypt).
        #[arg(long, value_name = "FILE", requires = "encrypt")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
pub struct SnapshotsArgs {
    /// The repository.
    pub repo: PathBuf,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: super::imaging::NetArgs,
}

pub fn run(cmd: RepoCmd) -> anyhow::Result<i32> {
    match cmd {
        RepoCmd::Init {
            repo,
            encrypt,
            passphrase_file,
        } => {
            let passphrase = if encrypt {
                Some(new_passphrase(passphrase_file.as_deref())?)
            } else {
                None
            };
            let loc = ops::Location::parse(&repo.to_string_lossy())?;
            let mut net = super::imaging::NetArgs::default().options(&loc)?;
            net.passphrase = None;
            let r = ops::init_repo(&loc, passphrase.as_ref(), &net)?;
            if r.encrypted() {
                eprintln!(
                    "encrypted with XChaCha20-Poly1305; the key is wrapped by the passphrase (Argon2id). \
                     Without the passphrase nothing in it can be read"
                );
            }
            eprintln!(
                "made the repository {} (id {}, {} chunks); capture into it with \
                 `rescue capture DISK --repo {} --name NAME`",
                repo.display(),
                r.config.id,
                human_size(u64::from(r.config.chunk_size)),
                repo.display()
            );
            Ok(0)
        }
    }
}

/// A new repository's passphrase: from the file, RESCUE_PASSPHRASE, or typed twice.
fn new_passphrase(file: Option<&std::path::Path>) -> anyhow::Result<ops::Secret> {
    if let Some(f) = file {
        return ops::read_passphrase_file(f);
    }
    if let Some(p) = std::env::var(ops::PASSPHRASE_VAR)
        .ok()
        .filter(|p| !p.is_empty())
    {
        return Ok(ops::Secret::new(p));
    }
    let first = super::net::ask_secret("Passphrase for the new repository: ")?.ok_or_else(|| {
        anyhow::anyhow!(
            "an encrypted repository needs a passphrase: --passphrase-file FILE, RESCUE_PASSPHRASE, or a \
             terminal to type it on"
        )
    })?;
    let again = super::net::ask_secret("The same passphrase again: ")?;
    if again.as_ref() != Some(&first) {
        anyhow::bail!("the two passphrases differ; nothing was made");
    }
    Ok(first)
}

pub fn snapshots(a: SnapshotsArgs) -> anyhow::Result<i32> {
    let loc = ops::Location::parse(&a.repo.to_string_lossy())?;
    let net = a.net.options(&loc)?;
    let (list, problems) = ops::list_snapshots(&loc, &net)?;
    if a.json {
        let snapshots: Vec<_> = list
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e.meta).unwrap_or_default();
                v["snapshot"] = json!(e.label());
                v
            })
            .collect();
        println!(
            "{}",
            json!({"repository": a.repo, "snapshots": snapshots, "problems": problems})
        );
    } else {
        if list.is_empty() {
            eprintln!("{}: no snapshots yet", a.repo.display());
        }
        for e in &list {
            let m = &e.meta;
            let source = [
                m.source.model.as_str(),
                m.source.serial.as_str(),
                m.source.path.as_str(),
            ]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
            println!(
                "{}  {} of {} ({})  {} used, {} as an image, {} new",
                e.label(),
                source,
                human_size(m.source.size),
                if m.host.is_empty() { "-" } else { &m.host },
                human_size(m.used_bytes),
                human_size(m.image_bytes),
                human_size(m.new_bytes)
            );
        }
        for p in &problems {
            eprintln!("warning: {p}");
        }
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The repository.
    pub repo: PathBuf,
    /// Also read every chunk the snapshots refer to, decompress it and check its hash.
    #[arg(long)]
    pub read_data: bool,
    /// Threads reading chunks (default: every core).
    #[arg(long, default_value_t = ops::default_threads())]
    pub threads: usize,
    /// Progress as JSON lines on stderr and the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: super::imaging::NetArgs,
}

/// `rescue check`: exit 0 when everything checks out, 2 when something does not (each named).
pub fn check(a: CheckArgs) -> anyhow::Result<i32> {
    let repo = ops::Location::parse(&a.repo.to_string_lossy())?;
    let net = a.net.options(&repo)?;
    let (ctl, printers) = super::progress::control(a.json, true);
    let result = ops::check_repo(&repo, a.read_data, a.threads, &net, ctl);
    printers.finish();
    let r = result?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["ok"] = json!(r.problems.is_empty());
        v["repository"] = json!(repo.to_string());
        println!("{v}");
    } else {
        for p in &r.problems {
            eprintln!("problem: {p}");
        }
        eprintln!(
            "{}: {} snapshots, {} chunks ({}){}; {}",
            repo,
            r.snapshots,
            r.chunks,
            human_size(r.chunk_bytes),
            if a.read_data {
                format!(", {} read and hashed", human_size(r.read_bytes))
            } else {
                " (add --read-data to hash every chunk)".to_string()
            },
            if r.problems.is_empty() {
                "everything checks out".to_string()
            } else {
                format!("{} problems", r.problems.len())
            }
        );
        if r.unreferenced_chunks > 0 {
            eprintln!(
                "note: {} chunk objects ({}) belong to no snapshot (removed snapshots, stopped captures); \
                 prune removes them",
                r.unreferenced_chunks,
                human_size(r.unreferenced_bytes)
            );
        }
    }
    Ok(if r.problems.is_empty() { 0 } else { 2 })
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// The repository.
    pub repo: PathBuf,
    /// Keep the N newest snapshots of each name.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: usize,
    /// Keep the newest snapshot of each of the N newest days that have one (UTC).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: usize,
    /// Keep the newest snapshot of each of the N newest weeks (Monday to Sunday) that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: usize,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: usize,
    /// Only the snapshots of this name (the others are kept).
    #[arg(long)]
    pub name: Option<String>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: super::imaging::NetArgs,
}

/// `rescue prune`.
pub fn prune(a: PruneArgs) -> anyhow::Result<i32> {
    let repo = ops::Location::parse(&a.repo.to_string_lossy())?;
    let net = a.net.options(&repo)?;
    let keep = repo::Keep {
        last: a.keep_last,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
    };
    let r = ops::prune_repo(&repo, &keep, a.name.as_deref(), a.dry_run, &net)?;
    if a.json {
        println!("{}", serde_json::to_value(&r)?);
        return Ok(0);
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for k in &r.kept {
        println!("keep    {k}");
    }
    for k in &r.removed {
        println!("{}  {k}", if r.dry_run { "would remove" } else { "remove" });
    }
    eprintln!(
        "{}: kept {} snapshots, {verb} {} and {} chunk objects ({})",
        repo,
        r.kept.len(),
        r.removed.len(),
        r.chunks_removed,
        human_size(r.bytes_freed)
    );
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The image to add (a file, a URL, or another repository's REPO::NAME[@TIME]), or a Clonezilla image
    /// (its directory, or a partclone image) to make into an image of ours.
    pub image: PathBuf,
    /// The repository to add it to.
    #[arg(long, value_name = "REPO", requires = "name")]
    pub repo: Option<PathBuf>,
    /// The snapshot's name (its time is the image's capture time).
    #[arg(long, requires = "repo")]
    pub name: Option<String>,
    /// A Clonezilla image only: the image file to write instead of a snapshot.
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["repo", "name"])]
    pub output: Option<PathBuf>,
    /// A Clonezilla image only: the zstd level of the new image.
    #[arg(long, default_value_t = ops::DEFAULT_LEVEL)]
    pub level: i32,
    /// Progress as JSON lines on stderr and the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: super::imaging::NetArgs,
}

/// `rescue import`: an image file as a snapshot of a repository.
pub fn import(a: ImportArgs) -> anyhow::Result<i32> {
    if ops::is_clonezilla(&a.image) {
        return import_clonezilla(&a);
    }
    let (Some(repo), Some(name)) = (&a.repo, &a.name) else {
        anyhow::bail!(
            "name the repository and the snapshot (--repo REPO --name NAME); -o FILE is for importing a \
             Clonezilla image, and {} is none",
            a.image.display()
        );
    };
    let image = ops::Location::parse(&a.image.to_string_lossy())?;
    let repo_loc = ops::Location::parse(&repo.to_string_lossy())?;
    let mut net = a.net.options(&image)?;
    if net.passphrase.is_none() {
        // One passphrase: the repository's (or the image's, when it is a snapshot of another).
        net.passphrase = a.net.options(&repo_loc)?.passphrase;
    }
    let (ctl, printers) = super::progress::control(a.json, true);
    let result = ops::import(&image, &repo_loc, name, &net, ctl);
    printers.finish();
    let r = result?;
    if a.json {
        println!(
            "{}",
            json!({"ok": true, "snapshot": r.snapshot.label(), "root_hash": r.snapshot.meta.root_hash,
                   "same_root_hash": r.same_root_hash, "new_bytes": r.stats.new_bytes,
                   "new_chunks": r.stats.new_chunks, "reused_chunks": r.stats.reused_chunks,
                   "seconds": r.seconds})
        );
    } else {
        eprintln!(
            "imported {} as {} in {:.1} s: {} new ({} chunks; {} already there); root hash {}{}",
            image,
            r.snapshot.label(),
            r.seconds,
            human_size(r.stats.new_bytes),
            r.stats.new_chunks,
            r.stats.reused_chunks,
            r.snapshot.meta.root_hash,
            if r.same_root_hash {
                ", the image file's"
            } else {
                " (the repository held some chunks stored otherwise)"
            }
        );
    }
    Ok(0)
}

/// `rescue import DIR -o FILE` (or `--repo REPO --name NAME`): a Clonezilla image made into ours.
fn import_clonezilla(a: &ImportArgs) -> anyhow::Result<i32> {
    let output = match (&a.output, &a.repo, &a.name) {
        (Some(o), _, _) => ops::Location::Local(o.clone()),
        (None, Some(repo), Some(name)) => {
            ops::Location::parse(&format!("{}::{name}", repo.to_string_lossy()))?
        }
        _ => anyhow::bail!(
            "say where the imported image goes: -o FILE.rimg, or --repo REPO --name NAME for a snapshot"
        ),
    };
    let net = a.net.options(&output)?;
    let (ctl, printers) = super::progress::control(a.json, true);
    let result = ops::import_clonezilla(&a.image, &output, a.level, &net, ctl);
    printers.finish();
    let r = result?;
    let c = &r.capture;
    if a.json {
        println!(
            "{}",
            json!({"ok": true, "image": output.to_string(), "root_hash": c.root_hash,
                   "image_bytes": c.image_bytes, "source_bytes": r.source_bytes, "used_bytes": c.bytes,
                   "restore_seconds": r.restore_seconds, "seconds": r.restore_seconds + c.seconds,
                   "verified": c.verified, "notes": c.notes})
        );
    } else {
        for n in &c.notes {
            eprintln!("note: {n}");
        }
        eprintln!(
            "imported {} into {} in {:.1} s ({:.1} s to unpack it, {:.1} s to capture it): {} of data in {} \
             (the Clonezilla image: {}); verified; root hash {}",
            a.image.display(),
            output,
            r.restore_seconds + c.seconds,
            r.restore_seconds,
            c.seconds,
            human_size(c.bytes),
            human_size(c.image_bytes.unwrap_or(0)),
            human_size(r.source_bytes),
            c.root_hash.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}
