//! `tessera`, the control manager. This file parses the command line, asks for secrets and
//! prints; the use cases live in the library (`tessera::manager`, `::vcard`).

use clap::{CommandFactory, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tessera::manager::{self, certs, pin, secret, status, Options};
use tessera::vcard::{self, CardFile, CardState};
use zeroize::Zeroizing;

/// Tessera smart-card control manager: status, PIN/PUK, loading and renewing e-Certs.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Use the card in the reader whose name contains NAME.
    #[arg(long, global = true, value_name = "NAME")]
    reader: Option<String>,
    /// Use the card with this serial number.
    #[arg(long, global = true, value_name = "N")]
    serial: Option<String>,
    /// Use this virtual card file (also TESSERA_VCARD).
    #[arg(long, global = true, value_name = "FILE", env = "TESSERA_VCARD")]
    vcard: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Answer yes to confirmations.
    #[arg(long, global = true)]
    yes: bool,
    /// Read the PIN from FILE ('-' for standard input) instead of prompting.
    #[arg(long, global = true, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// Read the PUK from FILE ('-' for standard input).
    #[arg(long, global = true, value_name = "FILE")]
    puk_file: Option<PathBuf>,
    /// Read a .p12 password from FILE ('-' for standard input).
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// When another program is changing the card, wait at most this long before giving up
    /// (nothing is changed then).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 120)]
    wait: u64,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  tessera status                          certificates, expiry, PIN/PUK tries left
  tessera import renewed-ecert.p12        load a renewed e-Cert (asks for the file's password and the PIN)
  tessera pin change                      change the PIN
  tessera pin unblock                     set a new PIN with the PUK
  tessera export -o me.pem                a copy of the e-Cert for a bank or portal
  tessera vcard init card.json            a virtual PIV card for testing

Exit status:
  0  success
  1  internal error
  2  usage: wrong arguments or an input file that cannot be read
  3  wrong, blocked or malformed PIN, PUK or password
  4  no reader or no card (or the card was removed)
  5  damaged data: card contents, virtual card file, .p12 file or signature
  6  refused: the card cannot do it, or policy forbids it (nothing was changed)
  7  the signature is intact but its signer is not trusted
With --json, an error is printed on standard output as
  {\"error\": {\"class\": \"credential\", \"exit_code\": 3, \"message\": \"…\"}}";

#[derive(Subcommand)]
enum Command {
    /// Readers and cards.
    List,
    /// Certificates with validity and days left, PIN/PUK tries, factory credentials.
    Status,
    /// PIN: change, unblock with the PUK, set retry counts.
    #[command(subcommand)]
    Pin(PinCommand),
    /// PUK: change.
    #[command(subcommand)]
    Puk(PukCommand),
    /// First use: replace the factory PIN and PUK and set a random management key.
    ///
    /// Secrets (file/stdin mode): current PIN, new PIN, current PUK, new PUK, one per line.
    Setup,
    /// Reset the card to its factory state: every key and certificate on it is erased.
    ///
    /// The last resort when the PUK is blocked (or to hand the card on). Asks to type the
    /// card's serial number (or give it with --confirm-serial N). The card allows this only
    /// with the PIN and the PUK blocked: both are blocked first. Afterwards the card has the
    /// factory PIN 123456, PUK 12345678 and management key; run `tessera setup`.
    Reset {
        /// The card's serial number, as typed confirmation (for scripts).
        #[arg(long, value_name = "N")]
        confirm_serial: Option<String>,
    },
    /// Finish or undo an interrupted change, and take off certificates whose key is not on
    /// the card (a copy of each is saved first).
    ///
    /// Tessera records every change on the card before it makes it, so a change interrupted by
    /// a crash, a pulled key or a closed lid is finished or undone by the next program that
    /// opens the card; `repair` does it explicitly, with the PIN a PIN-protected management key
    /// needs, and says what it did. Exits non-zero when something is still wrong.
    Repair {
        /// Where certificates taken off the card are saved first.
        #[arg(long, value_name = "DIR")]
        backup_dir: Option<PathBuf>,
    },
    /// Load an e-Cert (key, certificate, chain) from a PKCS#12 file.
    ///
    /// Secrets (file/stdin mode): the .p12 password from --password-file, the PIN from --pin-file.
    Import {
        /// The .p12/.pfx file.
        file: PathBuf,
        /// Key slot (default: from the certificate's key usage).
        #[arg(long)]
        slot: Option<String>,
        /// Load even an expired certificate.
        #[arg(long)]
        force: bool,
        /// Where a replaced certificate is saved first.
        #[arg(long, value_name = "DIR")]
        backup_dir: Option<PathBuf>,
    },
    /// Write a copy of a certificate.
    Export {
        /// Key slot (default: the e-Cert — the one certificate on the card; with several,
        /// name the slot).
        #[arg(long)]
        slot: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "pem")]
        format: certs::Format,
        /// Include the CA chain stored with it.
        #[arg(long)]
        chain: bool,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Remove the e-Cert (key and certificate) from a slot.
    Delete {
        /// Key slot.
        #[arg(long)]
        slot: String,
    },
    /// Renewal with a new key generated on the card.
    #[command(subcommand)]
    Renew(manager::renew::RenewCommand),
    /// Make a CMS signature of a file with the card.
    Sign(manager::cms::SignArgs),
    /// Check a CMS signature.
    Verify(manager::cms::VerifyArgs),
    /// Register the module with Firefox, Thunderbird, NSS databases or p11-kit.
    Register(manager::register::RegisterArgs),
    /// Check the system: PC/SC service, readers, cards, the module, browsers.
    Doctor(manager::doctor::DoctorArgs),
    /// The whole e-Cert story on a fresh virtual card, each step verified.
    Demo(manager::demo::DemoArgs),
    /// Shell completions.
    Completions {
        /// bash, zsh, fish, …
        shell: clap_complete::Shell,
    },
    /// The software PIV card (state kept in one file).
    #[command(subcommand)]
    Vcard(VcardCommand),
}

#[derive(Subcommand)]
enum PinCommand {
    /// Change the PIN (asks for the current and the new one).
    Change,
    /// Unblock the PIN with the PUK and set a new PIN.
    Unblock,
    /// Set how many tries the PIN and the PUK get (asks for both).
    Retries {
        /// PIN tries.
        #[arg(long, default_value_t = 3)]
        pin: u8,
        /// PUK tries.
        #[arg(long, default_value_t = 3)]
        puk: u8,
    },
}

#[derive(Subcommand)]
enum PukCommand {
    /// Change the PUK (asks for the current and the new one).
    Change,
}

#[derive(Subcommand)]
enum VcardCommand {
    /// Create a factory-fresh virtual PIV card (PIN 123456, PUK 12345678, default 3DES key).
    ///
    /// Example: tessera vcard init ~/.local/share/tessera/card.json --serial 1000001
    ///
    /// Example: tessera vcard init plain.json --profile piv-basic
    Init {
        /// Card state file to create (refuses to overwrite). The card's serial number
        /// (GET SERIAL, and the CHUID's GUID) is the global --serial N, random when omitted.
        file: PathBuf,
        /// The card family the card behaves like: yubikey-5.7 (every YubiKey extension),
        /// yubikey-4 (firmware 4.3.7: no GET METADATA, MOVE KEY, GET SERIAL or AES management
        /// key), piv-basic (plain SP 800-73-4: no YubiKey extension, no admin data), quirky
        /// (odd answers of independent PIV applets, no extended length).
        #[arg(
            long,
            value_name = "NAME",
            default_value = "yubikey-5.7",
            value_parser = clap::builder::TypedValueParser::try_map(
                clap::builder::PossibleValuesParser::new(vcard::Profile::ALL.map(vcard::Profile::name)),
                |name| name.parse::<vcard::Profile>(),
            )
        )]
        profile: vcard::Profile,
        /// The card application: piv, or idprime (a Thales IDPrime card personalised as an
        /// issuer would: factory PIN 0000, the e-Certs of --personalize).
        #[arg(
            long,
            value_name = "KIND",
            default_value = "piv",
            value_parser = clap::builder::TypedValueParser::try_map(
                clap::builder::PossibleValuesParser::new(vcard::CardKind::ALL.map(vcard::CardKind::name)),
                |name| name.parse::<vcard::CardKind>(),
            )
        )]
        kind: vcard::CardKind,
        /// IDPrime: an e-Cert (.p12, its password from --password-file) for the next key
        /// container (kxc00, kxc01, …); repeat for several e-Certs.
        #[arg(long, value_name = "P12")]
        personalize: Vec<PathBuf>,
        /// IDPrime: the model the card presents: 3810 (IDPrime MD 3810) or 940.
        #[arg(
            long,
            value_name = "MODEL",
            default_value = "3810",
            value_parser = clap::builder::TypedValueParser::try_map(
                clap::builder::PossibleValuesParser::new(vcard::idprime::model::Model::ALL.map(vcard::idprime::model::Model::name)),
                |name| name.parse::<vcard::idprime::model::Model>(),
            )
        )]
        model: vcard::idprime::model::Model,
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
    // Output piped into `head` or `grep -q` ends quietly when the reader goes away, as
    // command-line tools do, instead of a panic on a broken pipe.
    // SAFETY: called once at start-up before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every failure says its class in its exit status (see `tessera --help`).
            let class = match e.downcast_ref::<manager::ManagerError>() {
                Some(m) => m.class,
                None if e.is::<std::io::Error>() => manager::ErrorClass::Usage,
                None => manager::ErrorClass::Refused,
            };
            if json {
                let report = serde_json::json!({
                    "error": {
                        "class": class,
                        "exit_code": class.exit_code(),
                        "message": e.to_string(),
                    }
                });
                println!("{report}");
            }
            eprintln!("tessera: {e}");
            ExitCode::from(class.exit_code())
        }
    }
}

fn options(cli: &Cli) -> Options {
    Options {
        reader: cli.reader.clone(),
        serial: cli.serial.clone(),
        vcard: cli.vcard.clone(),
        json: cli.json,
        yes: cli.yes,
        pin_file: cli.pin_file.clone(),
        puk_file: cli.puk_file.clone(),
        password_file: cli.password_file.clone(),
        wait: Some(std::time::Duration::from_secs(cli.wait)),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Box<dyn std::error::Error>> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn confirm(opts: &Options, question: &str) -> Result<bool, Box<dyn std::error::Error>> {
    if opts.yes {
        return Ok(true);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err("confirmation needed: add --yes".into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let opts = options(&cli);
    match cli.command {
        Command::List => {
            manager::start(&opts)?;
            let cards = manager::cards()?;
            if opts.json {
                return print_json(&cards);
            }
            if cards.is_empty() {
                println!("no cards (insert one, or use --vcard FILE)");
            }
            for c in cards {
                println!(
                    "{}  {}  serial {}  [{}]",
                    c.reader, c.label, c.serial, c.applet
                );
            }
        }
        Command::Status => {
            let card = manager::open(&opts)?;
            let report = status::status(&card)?;
            if opts.json {
                return print_json(&report);
            }
            print!("{}", status::render(&report));
        }
        Command::Pin(PinCommand::Change) => {
            let card = manager::open_for_change(&opts)?;
            let [old, new] = two(secret::read_many(
                &["current PIN", "new PIN"],
                opts.pin_file.as_deref(),
            )?)?;
            pin::change_pin(&card, old.as_bytes(), new.as_bytes())?;
            println!("PIN changed");
        }
        Command::Pin(PinCommand::Unblock) => {
            let card = manager::open_for_change(&opts)?;
            let [puk, new] = two(secret::read_many(
                &["PUK", "new PIN"],
                opts.puk_file.as_deref(),
            )?)?;
            pin::unblock(&card, puk.as_bytes(), new.as_bytes())?;
            println!("PIN unblocked and set");
        }
        Command::Pin(PinCommand::Retries { pin: p, puk: k }) => {
            let card = manager::open_for_change(&opts)?;
            let pin_value = secret::read("PIN", opts.pin_file.as_deref(), false)?;
            let puk_value = secret::read("PUK", opts.puk_file.as_deref(), false)?;
            pin::set_retries(&card, pin_value.as_bytes(), puk_value.as_bytes(), p, k)?;
            println!("PIN tries {p}, PUK tries {k}");
        }
        Command::Puk(PukCommand::Change) => {
            let card = manager::open_for_change(&opts)?;
            let [old, new] = two(secret::read_many(
                &["current PUK", "new PUK"],
                opts.puk_file.as_deref(),
            )?)?;
            pin::change_puk(&card, old.as_bytes(), new.as_bytes())?;
            println!("PUK changed");
        }
        Command::Setup => {
            let card = manager::open_for_change(&opts)?;
            let secrets = secret::read_many(
                &["current PIN", "new PIN", "current PUK", "new PUK"],
                opts.pin_file.as_deref(),
            )?;
            let [pin_old, pin_new, puk_old, puk_new]: [Zeroizing<String>; 4] =
                secrets.try_into().map_err(|_| "four secrets needed")?;
            let report = pin::setup(
                &card,
                pin_old.as_bytes(),
                pin_new.as_bytes(),
                puk_old.as_bytes(),
                puk_new.as_bytes(),
            )?;
            if opts.json {
                return print_json(&report);
            }
            if report.management_key_changed {
                println!("PIN and PUK replaced; a random {} management key is stored PIN-protected on the card", report.management_key);
            } else {
                println!(
                    "PIN and PUK replaced; the management key is {}",
                    report.management_key
                );
            }
        }
        Command::Import {
            ref file,
            ref slot,
            force,
            ref backup_dir,
        } => {
            let card = manager::open_for_change(&opts)?;
            // The file and its password are checked before the PIN is asked: a damaged file
            // or a mistyped password never costs the holder a PIN entry (on a terminal the
            // password may be typed again).
            let p12 = manager::p12::P12File::open(file)?;
            let interactive =
                opts.password_file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin());
            let mut attempt = 0;
            let password = loop {
                attempt += 1;
                let password = secret::read(
                    &format!("password for {}", file.display()),
                    opts.password_file.as_deref(),
                    false,
                )?;
                match p12.decrypt(&password) {
                    Ok(_) => break password,
                    Err(e) if e.is_wrong_password() && interactive && attempt < 3 => {
                        eprintln!("wrong password for {}: try again", file.display());
                    }
                    Err(e) => return Err(manager::ManagerError::from(e).into()),
                }
            };
            let pin_value = secret::read("PIN", opts.pin_file.as_deref(), false)?;
            let slot = slot.as_deref().map(certs::parse_slot).transpose()?;
            let backup_dir = backup_dir.clone().unwrap_or_else(default_backup_dir);
            let report = certs::import(
                &card,
                &certs::ImportOptions {
                    file,
                    password: &password,
                    slot,
                    force,
                    backup_dir,
                },
                pin_value.as_bytes(),
            )?;
            if opts.json {
                return print_json(&report);
            }
            println!("loaded {} into slot {}", report.subject, report.slot);
            if let Some(b) = &report.backup {
                println!("the replaced certificate was saved to {}", b.display());
            }
            println!(
                "the new key signed a challenge and the certificate verified it: {}",
                if report.verified { "ok" } else { "FAILED" }
            );
            if !report.verified {
                return Err("the loaded key does not match its certificate".into());
            }
        }
        Command::Export {
            ref slot,
            format,
            chain,
            ref output,
        } => {
            let card = manager::open(&opts)?;
            let slot = slot.as_deref().map(certs::parse_slot).transpose()?;
            let slot = match slot {
                Some(s) => s,
                None => certs::ecert_slot(&card)?,
            };
            let bytes = certs::export(&card, slot, format, chain)?;
            match output {
                Some(path) => {
                    std::fs::write(path, &bytes)?;
                    eprintln!("wrote {}", path.display());
                }
                None => std::io::stdout().write_all(&bytes)?,
            }
        }
        Command::Delete { ref slot } => {
            let slot = certs::parse_slot(slot)?;
            let card = manager::open_for_change(&opts)?;
            if !confirm(
                &opts,
                &format!(
                    "Remove the key and certificate in slot {slot} from {}?",
                    card.label
                ),
            )? {
                return Err("nothing was removed".into());
            }
            let pin_value = secret::read("PIN", opts.pin_file.as_deref(), false)?;
            certs::delete(&card, slot, pin_value.as_bytes())?;
            println!("slot {slot} is now empty");
        }
        Command::Reset { ref confirm_serial } => {
            let card = manager::open_for_change(&opts)?;
            let serial = card.serial()?;
            let typed = match confirm_serial {
                Some(s) => s.clone(),
                None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                    eprint!(
                        "This erases every key and certificate on {} for good. Type its serial number ({serial}) to go on: ",
                        card.label
                    );
                    std::io::stderr().flush()?;
                    let mut answer = String::new();
                    std::io::stdin().read_line(&mut answer)?;
                    answer.trim().to_owned()
                }
                None => {
                    return Err(manager::ManagerError::new(
                        manager::ErrorClass::Usage,
                        "a reset needs the card's serial number typed: --confirm-serial N",
                    )
                    .into())
                }
            };
            if typed != serial {
                return Err(manager::ManagerError::new(
                    manager::ErrorClass::Refused,
                    format!(
                        "{typed:?} is not the card's serial number ({serial}): nothing was erased"
                    ),
                )
                .into());
            }
            let report = pin::reset(&card)?;
            if opts.json {
                return print_json(&report);
            }
            println!(
                "the card is back to its factory state (PIN and PUK were blocked first: {} and {} wrong tries); PIN 123456, PUK 12345678: run `tessera setup`",
                report.pin_tries_spent, report.puk_tries_spent
            );
        }
        Command::Repair { ref backup_dir } => {
            let card = manager::open_for_change(&opts)?;
            let pin_value = secret::read("PIN", opts.pin_file.as_deref(), false)?;
            let backup_dir = backup_dir.clone().unwrap_or_else(default_backup_dir);
            let report = manager::repair::repair(&card, pin_value.as_bytes(), &backup_dir)?;
            if opts.json {
                print_json(&report)?;
            } else {
                for d in &report.done {
                    println!("{d}");
                }
                for s in &report.saved {
                    println!("saved a copy: {s}");
                }
                for r in &report.remaining {
                    println!("still wrong: {r}");
                }
            }
            if !report.remaining.is_empty() {
                return Err("the card still needs attention (see above)".into());
            }
        }
        Command::Renew(ref cmd) => manager::renew::run(&opts, cmd)?,
        Command::Sign(ref args) => manager::cms::sign(&opts, args)?,
        Command::Verify(ref args) => manager::cms::verify(&opts, args)?,
        Command::Register(ref args) => manager::register::run(&opts, args)?,
        Command::Doctor(ref args) => manager::doctor::run(&opts, args)?,
        Command::Demo(ref args) => manager::demo::run(&opts, args)?,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tessera",
                &mut std::io::stdout(),
            );
        }
        Command::Vcard(VcardCommand::Init {
            file,
            profile,
            kind,
            personalize,
            model,
        }) => {
            let serial = match &opts.serial {
                Some(s) => s
                    .parse::<u32>()
                    .map_err(|_| format!("--serial must be a number, not {s}"))?,
                None => rand::random::<u32>() % 90_000_000 + 10_000_000,
            };
            if kind == vcard::CardKind::IdPrime {
                return init_idprime(&opts, &file, serial, model, &personalize);
            }
            if !personalize.is_empty() {
                return Err(
                    "--personalize is for --kind idprime (a PIV card takes e-Certs \
                            with `tessera import`)"
                        .into(),
                );
            }
            CardFile::create(&file, &CardState::factory_for(profile, serial))?;
            println!(
                "created virtual PIV card {} (serial {serial}, profile {profile}: {})",
                file.display(),
                profile.models()
            );
        }
        Command::Vcard(VcardCommand::Serve { file, vpcd, once }) => {
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, Arc::clone(&stop))?;
            }
            vcard::vpcd::serve(&file, &vpcd, stop, once)?;
        }
    }
    Ok(())
}

/// `tessera vcard init --kind idprime`: reads each e-Cert's .p12 (one password for all, from
/// --password-file or a prompt), personalises an IDPrime card with them and creates the file.
fn init_idprime(
    opts: &Options,
    file: &std::path::Path,
    serial: u32,
    model: vcard::idprime::model::Model,
    personalize: &[PathBuf],
) -> Result<(), Box<dyn std::error::Error>> {
    use vcard::idprime::{self, state::card_id};
    let mut p12s = Vec::new();
    if !personalize.is_empty() {
        let what = match personalize {
            [one] => format!("password for {}", one.display()),
            _ => "password for the .p12 files".to_owned(),
        };
        let password = secret::read(&what, opts.password_file.as_deref(), false)?;
        for path in personalize {
            p12s.push(manager::p12::read(path, &password)?);
        }
    }
    let ecerts: Vec<idprime::ECert<'_>> = p12s
        .iter()
        .map(|p| idprime::ECert {
            key: &p.key,
            certificate: &p.certificate,
        })
        .collect();
    let card = idprime::IdPrimeState::personalized(
        model,
        serial,
        &ecerts,
        idprime::CertificateFormat::Compressed,
        vcard::seal::KdfCost::DEFAULT,
    )?;
    let mut state = CardState::factory(serial);
    state.kind = vcard::CardKind::IdPrime;
    let keys: Vec<String> = card
        .keys
        .iter()
        .map(|(r, k)| format!("kxc{:02} key 0x{r:02X}", k.container))
        .collect();
    state.idprime = Some(card);
    CardFile::create(file, &state)?;
    println!(
        "created virtual IDPrime card {} ({}, serial {serial}, card id {}; factory PIN 0000, {} tries; {})",
        file.display(),
        model.product(),
        hex::encode(card_id(serial)),
        vcard::idprime::model::PIN_TRIES,
        if keys.is_empty() {
            "no e-Cert".to_owned()
        } else {
            keys.join(", ")
        }
    );
    Ok(())
}

/// The two secrets of a `read_many` of two.
fn two(v: Vec<Zeroizing<String>>) -> Result<[Zeroizing<String>; 2], Box<dyn std::error::Error>> {
    v.try_into().map_err(|_| "two secrets needed".into())
}

fn default_backup_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("tessera/backups")
}
