//! Registering the module with browsers and p11-kit. Filled in by the registration work.
use super::{fail, Options, Result};

/// `tessera register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {}

/// Runs `tessera register`.
pub fn run(_opts: &Options, _args: &RegisterArgs) -> Result<()> {
    fail("registration is not available yet")
}
