//! `tessera doctor`. Filled in by the system-check work.
use super::{fail, Options, Result};

/// `tessera doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {}

/// Runs `tessera doctor`.
pub fn run(_opts: &Options, _args: &DoctorArgs) -> Result<()> {
    fail("the system check is not available yet")
}
