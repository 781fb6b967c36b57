//! Renewal with an on-card key. Filled in by the renewal work.
use super::{fail, Options, Result};

/// `tessera renew …`.
#[derive(clap::Subcommand, Debug)]
pub enum RenewCommand {
    /// Write a renewal request signed by a new on-card key and by the current one.
    Request {},
    /// Install the renewed certificate.
    Install {},
}

/// Runs `tessera renew`.
pub fn run(_opts: &Options, _cmd: &RenewCommand) -> Result<()> {
    fail("renewal is not available yet")
}
