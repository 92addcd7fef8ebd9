//! The network screen (`n` on the overview): the links with their driver, carrier and addresses, and `d`
//! to bring every wired link up with DHCP in the background, showing what each step says (the lease, or
//! why a link was left alone). What it says goes into the log view too.

use crate::ops::{Link, LinkOutcome};

use super::app::{App, Effect, Key, Screen};

/// What the network screen shows; kept while the user is elsewhere, so a DHCP request that is still
/// running reports into it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetState {
    /// The links (loopback left out); `None` until listed.
    pub links: Option<Vec<Link>>,
    /// What bringing links up said, oldest first.
    pub lines: Vec<String>,
    /// DHCP is being asked for.
    pub busy: bool,
}

impl App {
    /// Open the network screen (its links listed afresh).
    pub(super) fn open_network(&mut self) -> Vec<Effect> {
        self.screen = Screen::Network;
        vec![Effect::ListLinks]
    }

    pub(super) fn network_key(&mut self, key: Key) -> Vec<Effect> {
        self.screen = Screen::Network;
        match key {
            Key::Char('d') if self.net.busy => {
                self.note("DHCP is being asked for already; the lines below say how it goes");
                vec![]
            }
            Key::Char('d') => {
                self.net.busy = true;
                self.net_line("bringing every wired link up with DHCP…".into());
                vec![Effect::BringUpDhcp]
            }
            Key::Char('r') => vec![Effect::ListLinks],
            Key::Char('l') => {
                self.screen = Screen::Log { scroll: 0 };
                vec![]
            }
            Key::Char('q') => self.quit_key(Screen::Network),
            Key::Esc | Key::Char('n') => {
                self.screen = Screen::Overview;
                vec![]
            }
            _ => vec![],
        }
    }

    /// The links as `term` read them.
    pub fn on_links(&mut self, links: Vec<Link>) {
        self.net.links = Some(links.into_iter().filter(|l| l.name != "lo").collect());
    }

    /// One step of bringing links up (`eth0: DHCP lease …`), for the screen and the log.
    pub fn on_net_line(&mut self, line: String) {
        self.net_line(line);
    }

    fn net_line(&mut self, line: String) {
        self.log.push(format!("network: {line}"));
        self.net.lines.push(line);
        let excess = self.net.lines.len().saturating_sub(200);
        self.net.lines.drain(..excess);
    }

    /// Bringing links up has ended: how many came up (or why it could not start).
    pub fn on_net_done(&mut self, result: Result<Vec<LinkOutcome>, String>) {
        self.net.busy = false;
        let line = match result {
            Err(e) => format!("could not bring links up: {e}"),
            Ok(o) if o.iter().any(|o| o.result.is_ok()) => {
                let up: Vec<&str> = o
                    .iter()
                    .filter(|o| o.result.is_ok())
                    .map(|o| o.link.as_str())
                    .collect();
                format!("done: {} up", up.join(", "))
            }
            Ok(_) => "done: no link came up (a cable in, and a DHCP server on it?)".into(),
        };
        self.net_line(line);
    }
}
