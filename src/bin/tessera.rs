//! `tessera`, the control manager. This file only parses the command line and reports; the
//! work is done by the library (`tessera_pkcs11::vcard`, later the manager use cases).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tessera_pkcs11::vcard::{self, CardFile, CardState};

/// Tessera smart-card control manager.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The software PIV card (state kept in one file).
    #[command(subcommand)]
    Vcard(VcardCommand),
}

#[derive(Subcommand)]
enum VcardCommand {
    /// Create a factory-fresh virtual PIV card (PIN 123456, PUK 12345678, default 3DES key).
    ///
    /// Example: tessera vcard init ~/.local/share/tessera/card.json --serial 1000001
    Init {
        /// Card state file to create (refuses to overwrite).
        file: PathBuf,
        /// Card serial number (GET SERIAL); random when omitted.
        #[arg(long)]
        serial: Option<u32>,
    },
    /// Insert the card into pcscd's vpcd reader until SIGTERM/SIGINT.
    ///
    /// Example: tessera vcard serve card.json --vpcd 127.0.0.1:35963
    Serve {
        /// Card state file.
        file: PathBuf,
        /// Address where the vpcd reader driver listens.
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// Exit when the reader closes the connection instead of reconnecting.
        #[arg(long)]
        once: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Vcard(VcardCommand::Init { file, serial }) => {
            let serial = serial.unwrap_or_else(|| rand::random::<u32>() % 90_000_000 + 10_000_000);
            CardFile::create(&file, &CardState::factory(serial))?;
            println!(
                "created virtual PIV card {} (serial {serial})",
                file.display()
            );
            Ok(())
        }
        Command::Vcard(VcardCommand::Serve { file, vpcd, once }) => {
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, Arc::clone(&stop))?;
            }
            vcard::vpcd::serve(&file, &vpcd, stop, once)?;
            Ok(())
        }
    }
}
