//! The network, for image locations on other machines: which links there are, bringing them up (DHCPv4,
//! static addresses, IPv6 router advertisements) and resolving names. PID 1 brings links up at boot when
//! `rescue.net=` asks; otherwise they come up when a network location is first used.
//!
//! - `config`: what `rescue.net=` asks for.

pub mod config;
