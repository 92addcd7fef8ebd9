//! The job description (docs/JOBS.md): a TOML file, or the same keys inline on the kernel command line
//! (`rescue.job="action=restore image.label=RESCUE-DATA image.path=golden.rimg target.internal=true"`).
//! Disks are chosen by rules (serial, model, bus, size, internal/removable), never by kernel names.

use serde::Deserialize;

use crate::detect::select::{parse_size_range, DiskRules, PartRules, Selector};
use crate::ops;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Capture,
    Restore,
    Verify,
    Clone,
}

/// What to do when the job succeeded. A failed job always stays on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    #[default]
    Stay,
    Poweroff,
    Reboot,
}

/// Where the image is: a filesystem (by label, UUID or a selector) and a path on it; a URL (`smb://`,
/// `http(s)://`, …); or, on a host, a plain file path (`file`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// A selector naming the filesystem's device (`serial=X,part=2`).
    pub device: Option<String>,
    /// Path of the image on that filesystem. For capture it may hold `{serial}`, `{model}` and `{date}`.
    pub path: Option<String>,
    /// A plain path (host use): the image file itself.
    pub file: Option<String>,
    /// A network location (`smb://HOST/SHARE/x.rimg`, `https://HOST/x.rimg`); for capture it may hold
    /// `{serial}`, `{model}` and `{date}`.
    pub url: Option<String>,
    /// A credentials file (`username=`, `password=`) for `url`: an absolute path, or a path on the
    /// rescue stick's data partition.
    pub credentials: Option<String>,
    /// CA certificates (PEM) to trust for an https:// `url` instead of the Mozilla roots (a path as for
    /// `credentials`).
    pub ca_file: Option<String>,
    /// A repository (a folder path on this machine, or an `smb://`/`nfs://` URL of one); with
    /// `snapshot`. A repository on a filesystem found by `label`, `uuid` or `device` is named by `path`
    /// instead.
    pub repo: Option<String>,
    /// The snapshot in the repository: `NAME` (capture: the new snapshot's name, which may hold
    /// `{serial}`, `{model}`; restore and verify: the latest of that name) or `NAME@TIME`.
    pub snapshot: Option<String>,
    /// An encrypted repository's passphrase file (a path as for `credentials`).
    pub passphrase_file: Option<String>,
}

/// Rules choosing one disk. Every given rule must hold, and exactly one disk may match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub serial: Option<String>,
    pub model: Option<String>,
    pub bus: Option<String>,
    /// `MIN..MAX` with units (`200G..300G`, `..64G`).
    pub size: Option<String>,
    /// The only internal (non-removable, not USB, not the rescue stick) disk that matches.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub removable: bool,
    /// A partition of that disk (capture of one partition, restore into one partition).
    pub partition: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// Capture only these partitions.
    #[serde(default)]
    pub partitions: Vec<u32>,
    /// Restore only this partition of the image (into `target.partition`).
    pub partition: Option<u32>,
    #[serde(default = "default_level")]
    pub level: i32,
    #[serde(default)]
    pub raw: bool,
    /// Capture: read every gap outside the partitions, however large.
    #[serde(default)]
    pub keep_unallocated: bool,
    /// Read back (restore, clone) or verify the new image (capture).
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// Restore: check every chunk of the image before the first write.
    #[serde(default = "default_precheck")]
    pub precheck: bool,
}

// The defaults are the operations' own (`ops`), but a job verifies a new image too.
fn default_level() -> i32 {
    ops::DEFAULT_LEVEL
}

fn default_verify() -> bool {
    ops::RestoreSpec::default().verify
}

fn default_precheck() -> bool {
    ops::RestoreSpec::default().precheck
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            partitions: vec![],
            partition: None,
            level: default_level(),
            raw: false,
            keep_unallocated: false,
            verify: default_verify(),
            precheck: default_precheck(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub action: Action,
    #[serde(default)]
    pub after: After,
    pub image: Option<ImageSpec>,
    pub source: Option<DiskSpec>,
    pub target: Option<DiskSpec>,
    #[serde(default)]
    pub options: JobOptions,
    /// A folder URL (`http(s)://HOST/results/`, WebDAV `PUT`) the result file is also sent to: for
    /// images read from a web server, which cannot hold it, and to collect a fleet's results.
    pub results: Option<String>,
}

impl JobSpec {
    /// A job file's text.
    pub fn from_toml(text: &str) -> Result<JobSpec, String> {
        let spec: JobSpec = toml::from_str(text).map_err(|e| e.to_string())?;
        spec.check()?;
        Ok(spec)
    }

    /// The inline form: `key=value` words (separated by spaces or `;`), keys as in the file with the
    /// table as a prefix (`image.path=x.rimg`, `target.serial=WD1`, `options.level=5`).
    pub fn from_inline(text: &str) -> Result<JobSpec, String> {
        let mut top = String::new();
        let mut tables: Vec<(String, String)> = Vec::new();
        for word in text
            .split(|c: char| c == ';' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("`{word}` is not key=value"))?;
            let value = toml_value(value);
            match key.split_once('.') {
                None => top.push_str(&format!("{key} = {value}\n")),
                Some((table, k)) => match tables.iter_mut().find(|(t, _)| t == table) {
                    Some((_, body)) => body.push_str(&format!("{k} = {value}\n")),
                    None => tables.push((table.to_string(), format!("{k} = {value}\n"))),
                },
            }
        }
        for (t, body) in tables {
            top.push_str(&format!("[{t}]\n{body}"));
        }
        JobSpec::from_toml(&top)
    }

    /// What each action needs, checked before anything is touched.
    fn check(&self) -> Result<(), String> {
        let need = |what: bool, msg: &str| if what { Ok(()) } else { Err(msg.to_string()) };
        match self.action {
            Action::Capture => {
                need(self.source.is_some(), "a capture job needs [source] rules")?;
                need(
                    self.image.is_some(),
                    "a capture job needs [image] (where to write it)",
                )?;
            }
            Action::Restore => {
                need(self.image.is_some(), "a restore job needs [image]")?;
                need(self.target.is_some(), "a restore job needs [target] rules")?;
            }
            Action::Verify => need(self.image.is_some(), "a verify job needs [image]")?,
            Action::Clone => {
                need(self.source.is_some(), "a clone job needs [source] rules")?;
                need(self.target.is_some(), "a clone job needs [target] rules")?;
            }
        }
        if let Some(i) = &self.image {
            let places = [&i.label, &i.uuid, &i.device, &i.file, &i.url, &i.repo]
                .iter()
                .filter(|x| x.is_some())
                .count();
            need(
                places == 1,
                "[image] needs exactly one of label, uuid, device (the filesystem holding it), file, url \
                 or repo",
            )?;
            need(
                i.file.is_some() || i.url.is_some() || i.repo.is_some() || i.path.is_some(),
                "[image] needs path (the image's path on that filesystem)",
            )?;
            need(
                i.repo.is_none() || i.snapshot.is_some(),
                "[image] repo needs snapshot (the snapshot's name in it)",
            )?;
            if let Some(snap) = &i.snapshot {
                let name = snap.split('@').next().unwrap_or("");
                let bare = name.replace("{serial}", "x").replace("{model}", "x");
                crate::url::check_name(&bare).map_err(|e| format!("image.snapshot: {e}"))?;
            }
            if let Some(u) = &i.url {
                crate::url::Url::parse(u).map_err(|e| format!("image.url: {e}"))?;
            }
        }
        if let Some(r) = &self.results {
            let url = crate::url::Url::parse(r).map_err(|e| format!("results: {e}"))?;
            need(
                matches!(url.scheme, crate::url::Scheme::Http | crate::url::Scheme::Https),
                "results must be an http:// or https:// folder (the server must accept PUT, as WebDAV does)",
            )?;
        }
        for (name, d) in [("source", &self.source), ("target", &self.target)] {
            if let Some(d) = d {
                let s = d.selector()?;
                need(
                    s.disk != DiskRules::default(),
                    &format!("[{name}] needs at least one rule (serial, model, bus, size, internal, removable)"),
                )?;
            }
        }
        need(
            (1..=19).contains(&self.options.level),
            "options.level must be 1..19",
        )?;
        Ok(())
    }
}

impl DiskSpec {
    pub fn selector(&self) -> Result<Selector, String> {
        let mut rules = DiskRules {
            serial: self.serial.clone(),
            model: self.model.clone(),
            internal: self.internal,
            removable: self.removable,
            ..DiskRules::default()
        };
        if let Some(b) = &self.bus {
            rules.bus = Selector::parse(&format!("bus={b}"))?.disk.bus;
        }
        if let Some(s) = &self.size {
            let (min, max) = parse_size_range(s)?;
            rules.min_size = min;
            rules.max_size = max;
        }
        if rules.internal && rules.removable {
            return Err("internal and removable exclude each other".into());
        }
        Ok(Selector {
            disk: rules,
            part: PartRules::default(),
        })
    }
}

impl ImageSpec {
    /// The filesystem holding the image, as a selector (`None` for a plain file).
    pub fn store_selector(&self) -> Result<Option<Selector>, String> {
        if let Some(l) = &self.label {
            return Ok(Some(Selector {
                part: PartRules {
                    label: Some(l.clone()),
                    ..PartRules::default()
                },
                ..Selector::default()
            }));
        }
        if let Some(u) = &self.uuid {
            return Ok(Some(Selector {
                part: PartRules {
                    uuid: Some(u.clone()),
                    ..PartRules::default()
                },
                ..Selector::default()
            }));
        }
        match &self.device {
            Some(d) => Selector::parse(d).map(Some),
            None => Ok(None),
        }
    }
}

/// A value from the inline form as TOML: numbers and booleans as they are, anything else a string.
fn toml_value(v: &str) -> String {
    let literal = v == "true"
        || v == "false"
        || (v.parse::<i64>().is_ok() && !v.starts_with('+'))
        || (v.starts_with('[') && v.ends_with(']'));
    if literal {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_restore_file() {
        let j = JobSpec::from_toml(
            r#"
action = "restore"
after = "poweroff"
[image]
label = "RESCUE-DATA"
path = "images/golden.rimg"
[target]
internal = true
size = "100G..1T"
"#,
        )
        .unwrap();
        assert_eq!(j.action, Action::Restore);
        assert_eq!(j.after, After::Poweroff);
        let s = j.target.as_ref().unwrap().selector().unwrap();
        assert!(s.disk.internal);
        assert_eq!(s.disk.min_size, Some(100 << 30));
        assert!(j.options.verify);
    }

    #[test]
    fn the_inline_form_is_the_same_job() {
        let a = JobSpec::from_inline(
            "action=capture source.serial=SRC image.label=DATA image.path=x-{serial}.rimg options.level=5 after=reboot",
        )
        .unwrap();
        let b = JobSpec::from_toml(
            "action='capture'\nafter='reboot'\n[source]\nserial='SRC'\n[image]\nlabel='DATA'\npath='x-{serial}.rimg'\n[options]\nlevel=5\n",
        )
        .unwrap();
        assert_eq!(a, b);
        let c = JobSpec::from_inline(
            "action=capture;source.serial=SRC;image.file=/x.rimg;options.partitions=[1,2]",
        )
        .unwrap();
        assert_eq!(c.options.partitions, vec![1, 2]);
    }

    #[test]
    fn incomplete_or_unknown_jobs_are_refused_with_the_reason() {
        for (text, says) in [
            ("action=restore image.label=X image.path=a", "[target]"),
            ("action=capture image.label=X image.path=a", "[source]"),
            ("action=verify", "[image]"),
            (
                "action=restore image.path=a target.internal=true",
                "exactly one of",
            ),
            (
                "action=restore image.label=X target.internal=true",
                "needs path",
            ),
            (
                "action=clone source.serial=A target.size=2T..1T",
                "minimum is larger",
            ),
            (
                "action=clone source.serial=A target.partition=1",
                "at least one rule",
            ),
            ("action=format", "unknown variant"),
            ("action=verify image.file=x colour=red", "unknown field"),
            ("action=verify image.file=x options.level=30", "1..19"),
            ("nonsense", "not key=value"),
            (
                "action=verify image.url=http://h/a.rimg image.file=a",
                "exactly one of",
            ),
            (
                "action=verify image.url=ftp://h/a.rimg",
                "unknown scheme `ftp`",
            ),
            (
                "action=verify image.url=http://h/a.rimg results=smb://h/share/r/",
                "results must be an http",
            ),
        ] {
            let e = JobSpec::from_inline(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_fleet_job_names_its_image_and_results_by_url() {
        let j = JobSpec::from_toml(
            "action = \"restore\"\nafter = \"poweroff\"\nresults = \"https://srv/results/\"\n\
             [image]\nurl = \"https://srv/golden.rimg\"\ncredentials = \"net.cred\"\n\
             [target]\ninternal = true\n",
        )
        .unwrap();
        let i = j.image.unwrap();
        assert_eq!(i.url.as_deref(), Some("https://srv/golden.rimg"));
        assert_eq!(i.credentials.as_deref(), Some("net.cred"));
        assert_eq!(j.results.as_deref(), Some("https://srv/results/"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,120}") {
            let _ = JobSpec::from_inline(&s);
            let _ = JobSpec::from_toml(&s);
        }
    }
}
