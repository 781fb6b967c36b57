//! CMS signatures made with the card. Filled in by the renewal work.
use super::{fail, Options, Result};

/// `tessera sign`.
#[derive(clap::Args, Debug)]
pub struct SignArgs {}

/// `tessera verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {}

/// Runs `tessera sign`.
pub fn sign(_opts: &Options, _args: &SignArgs) -> Result<()> {
    fail("signing is not available yet")
}

/// Runs `tessera verify`.
pub fn verify(_opts: &Options, _args: &VerifyArgs) -> Result<()> {
    fail("verification is not available yet")
}
