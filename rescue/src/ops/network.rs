//! The network links, and bringing them up (`rescue.net=` at boot, `rescue net up`).

pub use crate::net::config::NetSpec;
pub use crate::net::Link;
pub use crate::net::Outcome as LinkOutcome;

/// Every network link, with its addresses.
pub fn links() -> Vec<Link> {
    crate::net::links()
}

/// Bring links up as `spec` (the `rescue.net=` syntax) says; `say` is told each step. Fails only when
/// `spec` cannot be read; each link's own result is in the list.
pub fn bring_up(spec: &str, say: &mut dyn FnMut(String)) -> anyhow::Result<Vec<LinkOutcome>> {
    let spec = NetSpec::parse(spec)?;
    Ok(crate::net::bring_up(&spec, say))
}
