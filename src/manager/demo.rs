//! `tessera demo`. Filled in by the demo work.
use super::{fail, Options, Result};

/// `tessera demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {}

/// Runs `tessera demo`.
pub fn run(_opts: &Options, _args: &DemoArgs) -> Result<()> {
    fail("the demo is not available yet")
}
