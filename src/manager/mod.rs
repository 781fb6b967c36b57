//! The control manager's use cases: what a card holder or a help desk does with the card that
//! PKCS#11 has no words for. Every use case runs over the same core as the module
//! ([`crate::token::Library`]: sessions, login, objects, and its typed card changes); nothing
//! here sends an APDU or builds TLV of its own.

pub mod certs;
pub mod cms;
pub mod demo;
pub mod doctor;
pub mod lock;
pub mod p12;
pub mod pin;
pub mod register;
pub mod renew;
pub mod repair;
pub mod secret;
pub mod status;

use crate::token::{self, library, Attr, Error as TokenError};
use cryptoki_sys::*;
use std::fmt;
use std::path::PathBuf;

/// A failure told to the user in words, with the class that decides the process exit code.
#[derive(Debug)]
pub struct ManagerError {
    /// What kind of failure it is.
    pub class: ErrorClass,
    /// What went wrong and, where possible, what to do.
    pub message: String,
}

/// The kinds of failure a `tessera` command ends with, each with its own exit code (listed in
/// `tessera --help` and so in the man page; `--json` errors carry the class by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// Something unexpected inside Tessera (exit 1).
    Internal,
    /// The command line or an input file named on it is wrong (exit 2, as for clap's own
    /// usage errors).
    Usage,
    /// A wrong, blocked or malformed PIN, PUK or password (exit 3).
    Credential,
    /// No reader, no card, or the card went away (exit 4).
    NoCard,
    /// Damaged data: on the card, in the virtual card file, in a .p12 or a signature (exit 5).
    Damaged,
    /// Refused: by the card (it lacks the feature) or by policy (expired, not the staged key,
    /// …); nothing was changed (exit 6).
    Refused,
    /// A signature that is intact but whose signer does not chain to a trusted CA (exit 7).
    Untrusted,
}

impl ErrorClass {
    /// The process exit code of this class.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Internal => 1,
            Self::Usage => 2,
            Self::Credential => 3,
            Self::NoCard => 4,
            Self::Damaged => 5,
            Self::Refused => 6,
            Self::Untrusted => 7,
        }
    }
}

impl ManagerError {
    /// An error of `class` with `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManagerError {}

/// Result of a manager use case.
pub type Result<T> = std::result::Result<T, ManagerError>;

/// Fails with a usage error (a wrong argument, an input file that cannot be read).
pub fn fail_usage<T>(message: impl Into<String>) -> Result<T> {
    Err(ManagerError::new(ErrorClass::Usage, message))
}

/// Fails with a damaged-data error.
pub fn fail_damaged<T>(message: impl Into<String>) -> Result<T> {
    Err(ManagerError::new(ErrorClass::Damaged, message))
}

/// Fails with a refusal (the card cannot, or policy forbids; nothing was changed).
pub fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(ManagerError {
        class: ErrorClass::Refused,
        message: message.into(),
    })
}

impl From<TokenError> for ManagerError {
    fn from(e: TokenError) -> Self {
        let class = match e.rv() {
            CKR_PIN_INCORRECT | CKR_PIN_LOCKED | CKR_PIN_LEN_RANGE => ErrorClass::Credential,
            CKR_TOKEN_NOT_PRESENT | CKR_DEVICE_REMOVED | CKR_TOKEN_NOT_RECOGNIZED => {
                ErrorClass::NoCard
            }
            CKR_FUNCTION_FAILED
            | CKR_FUNCTION_REJECTED
            | CKR_FUNCTION_NOT_SUPPORTED
            | CKR_DEVICE_MEMORY => ErrorClass::Refused,
            CKR_USER_NOT_LOGGED_IN => ErrorClass::NoCard,
            CKR_DEVICE_ERROR => ErrorClass::Damaged,
            _ => ErrorClass::Internal,
        };
        let message = match e.rv() {
            CKR_PIN_INCORRECT => "wrong PIN or PUK".to_owned(),
            CKR_PIN_LOCKED => "blocked: no tries left".to_owned(),
            CKR_PIN_LEN_RANGE => "PINs and PUKs are 6 to 8 characters (nothing was sent to the card)".to_owned(),
            CKR_TOKEN_NOT_PRESENT | CKR_DEVICE_REMOVED => "no card in the reader".to_owned(),
            CKR_TOKEN_NOT_RECOGNIZED => "the card has no PIV application".to_owned(),
            CKR_USER_NOT_LOGGED_IN => "the card was reset by another program; try again".to_owned(),
            CKR_FUNCTION_FAILED => {
                "the card's management key is unknown (neither stored PIN-protected nor the factory default); run `tessera setup` on a card you set up with another tool's key".to_owned()
            }
            CKR_FUNCTION_REJECTED => "the card cannot keep the old key (no MOVE KEY); refusing to overwrite it".to_owned(),
            CKR_FUNCTION_NOT_SUPPORTED => "this card does not offer that (it lacks the command); nothing was changed".to_owned(),
            CKR_DEVICE_MEMORY => "the card is full (all retired key slots used)".to_owned(),
            rv => format!("card operation failed (PKCS#11 error {rv:#x})"),
        };
        ManagerError { class, message }
    }
}

impl From<crate::token::mechanism::KeyError> for ManagerError {
    fn from(e: crate::token::mechanism::KeyError) -> Self {
        TokenError::from(e).into()
    }
}

impl From<std::io::Error> for ManagerError {
    fn from(e: std::io::Error) -> Self {
        ManagerError {
            class: ErrorClass::Usage,
            message: e.to_string(),
        }
    }
}

/// How the user picked a card, and how they want answers.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--reader NAME`: a reader whose name contains this.
    pub reader: Option<String>,
    /// `--serial N`: the card with this serial.
    pub serial: Option<String>,
    /// `--vcard FILE`: a virtual card file (also taken from TESSERA_VCARD).
    pub vcard: Option<PathBuf>,
    /// Machine-readable output.
    pub json: bool,
    /// Answer confirmations with yes.
    pub yes: bool,
    /// Where to read the PIN (file or `-` for standard input).
    pub pin_file: Option<PathBuf>,
    /// Where to read the PUK.
    pub puk_file: Option<PathBuf>,
    /// Where to read a .p12 password.
    pub password_file: Option<PathBuf>,
    /// How long a change waits for another program to finish with the card (`None`: the
    /// default, [`DEFAULT_WAIT`]).
    pub wait: Option<std::time::Duration>,
}

/// How long a change waits for the card by default.
pub const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// An open read/write session on the chosen card.
pub struct CardSession {
    /// Session handle in the core.
    pub handle: CK_SESSION_HANDLE,
    /// Its slot.
    pub slot: CK_SLOT_ID,
    /// What the user sees as the card's name.
    pub label: String,
    /// The card's change lock, held by commands that change the card.
    lock: Option<lock::ChangeLock>,
}

/// Starts the core once for this process, with the virtual card the options name.
pub fn start(opts: &Options) -> Result<()> {
    // TESSERA_LOG / TESSERA_LOG_FILE work for the control manager as for the module.
    crate::logging::init();
    if let Some(path) = &opts.vcard {
        std::env::set_var(crate::vcard::ENV_VCARD, path);
    }
    // The manager sees each card whole in one token, card authentication (9E) included.
    library::set_card_auth_tokens(false);
    match library::initialize(crate::vcard::standard_connectors()) {
        Ok(()) => Ok(()),
        Err(e) if e.rv() == CKR_CRYPTOKI_ALREADY_INITIALIZED => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs `f` with the core library.
pub fn with<R>(f: impl FnOnce(&token::Library) -> token::Result<R>) -> Result<R> {
    Ok(library::with(f)?)
}

/// [`with`], saying `unsupported` when the card lacks what `f` needs (the core answers
/// CKR_FUNCTION_NOT_SUPPORTED before it changes anything).
pub fn with_card_feature<R>(
    unsupported: &str,
    f: impl FnOnce(&token::Library) -> token::Result<R>,
) -> Result<R> {
    library::with(f).map_err(|e| {
        if e.rv() == CKR_FUNCTION_NOT_SUPPORTED {
            ManagerError {
                class: ErrorClass::Refused,
                message: unsupported.to_owned(),
            }
        } else {
            e.into()
        }
    })
}

/// A card the user can pick.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CardChoice {
    /// Slot ID.
    pub slot: CK_SLOT_ID,
    /// Reader or virtual card.
    pub reader: String,
    /// Token label.
    pub label: String,
    /// Card serial.
    pub serial: String,
    /// Card application.
    pub applet: String,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_owned()
}

/// Every present card.
pub fn cards() -> Result<Vec<CardChoice>> {
    with(|lib| {
        let mut out = Vec::new();
        for slot in lib.slot_list(true)? {
            let info = lib.slot_info(slot)?;
            let Some(token) = settled_token_info(lib, slot) else {
                continue;
            };
            out.push(CardChoice {
                slot,
                reader: text(&info.slotDescription),
                label: text(&token.label),
                serial: text(&token.serialNumber),
                applet: "PIV".into(),
            });
        }
        Ok(out)
    })
}

/// How long a card that is present but does not answer yet is given: pcscd resets a card when
/// a program that was using it dies, and a card just inserted is still being powered.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The token of a slot whose reader reports a card, waiting up to [`SETTLE`] for a card that
/// cannot be connected to or read yet; `None` when it stays unreadable.
fn settled_token_info(lib: &token::Library, slot: CK_SLOT_ID) -> Option<CK_TOKEN_INFO> {
    // (a virtual card file that cannot be read is not settling)
    let reader = matches!(lib.slot_location(slot), Ok(token::Location::Reader(_)));
    let until = std::time::Instant::now() + if reader { SETTLE } else { Default::default() };
    loop {
        match lib.token_info(slot) {
            Ok(t) => return Some(t),
            Err(e)
                if matches!(
                    e.rv(),
                    CKR_TOKEN_NOT_PRESENT | CKR_DEVICE_ERROR | CKR_DEVICE_REMOVED
                ) && std::time::Instant::now() < until =>
            {
                log::debug!(
                    "slot {slot}: card not answering yet ({:#x}); trying again",
                    e.rv()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(_) => return None,
        }
    }
}

/// Opens a read/write session on the card the options pick (the only card when there is one).
pub fn open(opts: &Options) -> Result<CardSession> {
    start(opts)?;
    let all = cards()?;
    let picked: Vec<&CardChoice> = all
        .iter()
        .filter(|c| {
            opts.reader
                .as_ref()
                .is_none_or(|r| c.reader.contains(r.as_str()))
        })
        .filter(|c| opts.serial.as_ref().is_none_or(|s| &c.serial == s))
        .collect();
    let card = match picked.as_slice() {
        [one] => (*one).clone(),
        [] if all.is_empty() => {
            // A virtual card file that is there but cannot be read is not a missing card.
            for path in crate::vcard::configured_paths() {
                if !path.exists() {
                    return Err(ManagerError::new(ErrorClass::NoCard, format!(
                        "the virtual card file {} does not exist: create it with `tessera vcard init {}`",
                        path.display(),
                        path.display()
                    )));
                }
                if let Some(problem) = virtual_card_problem(&path) {
                    return Err(ManagerError::new(ErrorClass::Damaged, format!(
                        "{problem}: restore it from a backup, or make a new card with `tessera vcard init` (a new card has new keys)"
                    )));
                }
            }
            return Err(ManagerError::new(ErrorClass::NoCard, "no card found: insert a card, or name a virtual card with --vcard FILE (run `tessera doctor`)"));
        }
        [] => {
            return Err(ManagerError::new(
                ErrorClass::NoCard,
                "no card matches --reader/--serial (see `tessera list`)",
            ))
        }
        _ => return fail("several cards are present: pick one with --reader NAME or --serial N (see `tessera list`)"),
    };
    let handle = with(|lib| lib.open_session(card.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION))?;
    Ok(CardSession {
        handle,
        slot: card.slot,
        label: card.label,
        lock: None,
    })
}

/// Why the virtual card file at `path` cannot be used (`None`: it opens): unreadable,
/// truncated, not a card — in words that name the file.
pub fn virtual_card_problem(path: &std::path::Path) -> Option<String> {
    match crate::vcard::CardFile::open(path) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "the virtual card file {} cannot be used ({e})",
            path.display()
        )),
    }
}

/// Opens the card like [`open`] for a command that changes it: takes the card's change lock
/// first (waiting as [`lock::acquire`] says), then proves the cached contents current.
pub fn open_for_change(opts: &Options) -> Result<CardSession> {
    let mut card = open(opts)?;
    let source = with(|lib| lib.slot_location(card.slot))?;
    let notice = |m: &str| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{m}");
    };
    card.lock = Some(lock::acquire(
        &source,
        opts.wait.unwrap_or(DEFAULT_WAIT),
        &notice,
    )?);
    with(|lib| lib.check_card(card.handle))?;
    Ok(card)
}

impl CardSession {
    /// Logs in with the PIN; a wrong PIN reports the tries left read back from the card.
    pub fn login_user(&self, pin: &[u8]) -> Result<()> {
        match with(|lib| lib.login(self.handle, CKU_USER, pin)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(e, true)),
        }
    }

    /// Logs in as security officer with the PUK.
    pub fn login_so(&self, puk: &[u8]) -> Result<()> {
        match with(|lib| lib.login(self.handle, CKU_SO, puk)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(e, false)),
        }
    }

    /// Turns a PIN/PUK failure into words with the counter the card reported.
    pub fn explain(&self, e: ManagerError, pin: bool) -> ManagerError {
        let what = if pin { "PIN" } else { "PUK" };
        let counter = with(|lib| lib.card_snapshot(self.handle))
            .ok()
            .map(|(_, p, k)| if pin { p } else { k });
        let tries = counter.and_then(|c| c.tries_left);
        let message = match (e.message.as_str(), tries) {
            ("wrong PIN or PUK", Some(0)) | ("blocked: no tries left", _) if pin => {
                "the PIN is blocked: unblock it with the PUK (`tessera pin unblock`)".to_owned()
            }
            ("wrong PIN or PUK", Some(0)) | ("blocked: no tries left", _) => {
                "the PUK is blocked: the card can only be reset to its factory state, which erases every key on it (`tessera reset`)".to_owned()
            }
            ("wrong PIN or PUK", Some(n)) => format!("wrong {what}: {n} {} left", if n == 1 { "try" } else { "tries" }),
            ("wrong PIN or PUK", None) => format!("wrong {what}"),
            _ => e.message,
        };
        ManagerError {
            class: e.class,
            message,
        }
    }

    /// The card's serial number as the token reports it.
    pub fn serial(&self) -> Result<String> {
        let (contents, _, _) = with(|lib| lib.card_snapshot(self.handle))?;
        Ok(contents.serial)
    }

    /// Finds token objects matching `template`.
    pub fn find(&self, template: &[Attr]) -> Result<Vec<CK_OBJECT_HANDLE>> {
        with(|lib| {
            lib.find_init(self.handle, template)?;
            let found = lib.find(self.handle, 1024);
            lib.find_final(self.handle)?;
            found
        })
    }
}

impl Drop for CardSession {
    fn drop(&mut self) {
        let _ = library::with(|lib| lib.close_session(self.handle));
        // The change lock goes last, after the session logged the card out.
        self.lock.take();
    }
}

/// An attribute for a find template.
pub fn attr_ulong(ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Attr {
    Attr {
        ty,
        value: zeroize::Zeroizing::new(token::attr::ulong(v)),
    }
}

/// A byte-string attribute.
pub fn attr_bytes(ty: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Attr {
    Attr {
        ty,
        value: zeroize::Zeroizing::new(v.to_vec()),
    }
}

/// A boolean attribute.
pub fn attr_bool(ty: CK_ATTRIBUTE_TYPE, v: bool) -> Attr {
    Attr {
        ty,
        value: zeroize::Zeroizing::new(token::attr::bool(v)),
    }
}
