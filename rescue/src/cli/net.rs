//! `rescue net`: the network links and their addresses; `rescue net up [SPEC]` brings links up (what PID 1
//! runs for `rescue.net=`).

use crate::ops;

#[derive(clap::Args, Debug)]
pub struct NetArgs {
    #[command(subcommand)]
    pub action: Option<NetAction>,
    /// The links as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum NetAction {
    /// Bring links up: `dhcp` (every wired link with carrier), `eth0:dhcp`, or
    /// `eth0:192.168.1.20/24,gw=192.168.1.1,dns=192.168.1.1` (links separated by `;`).
    Up {
        #[arg(default_value = "dhcp")]
        spec: String,
    },
}

pub fn run(a: NetArgs) -> anyhow::Result<i32> {
    if let Some(NetAction::Up { spec }) = &a.action {
        let outcomes = ops::bring_up(spec, &mut |line| eprintln!("rescue: net: {line}"))?;
        // Success when a link that was asked for came up (with `dhcp`: any link).
        let ok = outcomes.iter().any(|o| o.result.is_ok());
        if !ok {
            eprintln!("rescue: net: no link came up");
        }
        show(a.json)?;
        return Ok(if ok { 0 } else { 1 });
    }
    show(a.json)?;
    Ok(0)
}

fn show(json: bool) -> anyhow::Result<()> {
    let links = ops::links();
    if json {
        println!("{}", serde_json::to_string_pretty(&links)?);
        return Ok(());
    }
    if links.is_empty() {
        println!("No network links.");
    }
    for l in &links {
        let state = match (l.up, l.carrier) {
            (false, _) => "down",
            (true, Some(true)) => "up, carrier",
            (true, _) => "up, no carrier",
        };
        println!(
            "{:<10} {:<17} {:<14} {}{}",
            l.name,
            l.mac,
            state,
            if l.addresses.is_empty() {
                "-".to_string()
            } else {
                l.addresses.join(" ")
            },
            l.driver
                .as_ref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Ask for the password of `shown` (a URL, password-less) on the terminal, without echo; `None` when
/// there is no terminal to ask on (then the server decides: a guest, or a refusal naming the user).
pub fn ask_password(shown: &str) -> anyhow::Result<Option<ops::Secret>> {
    ask_secret(&format!("Password for {shown}: "))
}

/// A line typed on the terminal without echo, after `prompt`; `None` when stdin is no terminal or the
/// line is empty.
pub fn ask_secret(prompt: &str) -> anyhow::Result<Option<ops::Secret>> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(None);
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    eprintln!();
    read?;
    let password = line.trim_end_matches(['\n', '\r']);
    Ok((!password.is_empty()).then(|| ops::Secret::new(password)))
}
