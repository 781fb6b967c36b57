//! `tessera list` and `tessera status`: what is on the card, how long each certificate stays
//! valid, how many PIN and PUK tries are left, and which factory credentials are still set.

use super::{with, CardSession, Result};
use crate::applet::piv::KeySlot;
use crate::token::objects::KeyEntry;
use crate::token::slot::{Contents, Counter, Problem};
use der::Decode;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Renew at least this many days before expiry (warning).
pub const WARN_DAYS: i64 = 30;
/// Urgent: this many days or fewer left.
pub const URGENT_DAYS: i64 = 7;

/// A certificate as the status report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    /// Subject (RFC 4514).
    pub subject: String,
    /// Issuer (RFC 4514).
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Valid from (UTC, RFC 3339).
    pub not_before: String,
    /// Valid until (UTC, RFC 3339).
    pub not_after: String,
    /// Whole days left (negative once expired).
    pub days_left: i64,
    /// ok, warning (renew soon), urgent, expired, not-yet-valid.
    pub state: &'static str,
}

/// One populated key slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotReport {
    /// Key reference, hex ("9a").
    pub slot: String,
    /// What the slot is for.
    pub name: String,
    /// Key algorithm.
    pub algorithm: String,
    /// Generated on the card (true), imported (false), unknown (null).
    pub generated: Option<bool>,
    /// The certificate, if any.
    pub certificate: Option<CertReport>,
}

/// PIN or PUK counter.
#[derive(Debug, Clone, Serialize)]
pub struct CounterReport {
    /// Tries left.
    pub tries_left: Option<u8>,
    /// Tries allowed.
    pub tries_total: Option<u8>,
    /// Still the factory value.
    pub factory_default: bool,
}

/// `tessera status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Token label.
    pub label: String,
    /// Card serial.
    pub serial: String,
    /// Firmware version.
    pub version: Option<String>,
    /// PIN counter.
    pub pin: CounterReport,
    /// PUK counter.
    pub puk: CounterReport,
    /// The management key is the factory default.
    pub management_key_default: bool,
    /// Populated key slots.
    pub slots: Vec<SlotReport>,
    /// Retired keys counted by Key History.
    pub key_history: u8,
    /// Things the holder should do.
    pub warnings: Vec<String>,
    /// An interrupted change not finished yet (`null` when none).
    pub pending_change: Option<PendingReport>,
    /// What is wrong with the key/certificate pairs (empty when every pair belongs together).
    pub problems: Vec<ProblemReport>,
}

/// An interrupted change, as status reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingReport {
    /// What it was doing.
    pub change: String,
    /// prepared (will be undone) or committed (will be finished).
    pub phase: &'static str,
    /// What to do.
    pub fix: String,
}

/// A key/certificate problem, as status and doctor report it.
#[derive(Debug, Clone, Serialize)]
pub struct ProblemReport {
    /// Key slot ("9a"), or "card" for the whole card.
    pub slot: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// The problems of what a card holds, in words with their fixes.
pub fn problem_reports(contents: &Contents) -> Vec<ProblemReport> {
    contents
        .problems
        .iter()
        .filter_map(|p| {
            let slot = p.slot().map_or_else(|| "card".to_owned(), |s| s.to_string());
            let (problem, fix) = match p {
                Problem::Mismatch(s) => (
                    "the certificate does not belong to the key in the slot (it is not shown to applications)".to_owned(),
                    format!("`tessera repair` takes it off the card (a copy is saved); then load the right e-Cert with `tessera import FILE.p12 --slot {s}`"),
                ),
                Problem::CertificateWithoutKey(s) => (
                    "a certificate without a key (it is not shown to applications)".to_owned(),
                    format!("`tessera repair` takes it off the card (a copy is saved); load the e-Cert again with `tessera import FILE.p12 --slot {s}`"),
                ),
                Problem::KeyWithoutCertificate(s) => (
                    "a key without a certificate".to_owned(),
                    format!("load its certificate (`tessera import` or `pkcs11-tool --write-object`), or remove the key with `tessera delete --slot {s}`"),
                ),
                Problem::UnreadableCertificate(s) => (
                    "the certificate cannot be read or does not parse (it is not shown to applications)".to_owned(),
                    format!("load the e-Cert again (`tessera import FILE.p12 --slot {s}`), or remove it with `tessera delete --slot {s}`"),
                ),
                Problem::DamagedRecord => (
                    "Tessera's change record (data object 5FFF70) cannot be read".to_owned(),
                    "`tessera repair` rewrites it".to_owned(),
                ),
                // Reported as the pending change.
                Problem::Unfinished(_) => return None,
            };
            Some(ProblemReport { slot, problem, fix })
        })
        .collect()
}

fn pending_report(contents: &Contents) -> Option<PendingReport> {
    let p = contents.pending.as_ref()?;
    let change = crate::token::library::credential_steps(p.kind, p.steps)
        .map_or_else(|| crate::token::library::describe_pending(p), str::to_owned);
    let phase = match p.phase {
        crate::applet::piv::change::Phase::Prepared => "prepared",
        crate::applet::piv::change::Phase::Committed => "committed",
    };
    Some(PendingReport {
        change,
        phase,
        fix: "run `tessera repair` (it asks for the PIN, which the card's management key needs)"
            .into(),
    })
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Describes a certificate (DER).
pub fn cert_report(der_bytes: &[u8]) -> Option<CertReport> {
    let cert = x509_cert::Certificate::from_der(der_bytes).ok()?;
    let tbs = &cert.tbs_certificate;
    let nb = tbs.validity.not_before.to_unix_duration().as_secs() as i64;
    let na = tbs.validity.not_after.to_unix_duration().as_secs() as i64;
    let now = now_unix();
    let days_left = (na - now).div_euclid(86_400);
    let state = if now < nb {
        "not-yet-valid"
    } else if now > na {
        "expired"
    } else if days_left < URGENT_DAYS {
        "urgent"
    } else if days_left < WARN_DAYS {
        "warning"
    } else {
        "ok"
    };
    Some(CertReport {
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        serial: hex::encode(tbs.serial_number.as_bytes()),
        not_before: tbs.validity.not_before.to_date_time().to_string(),
        not_after: tbs.validity.not_after.to_date_time().to_string(),
        days_left,
        state,
    })
}

/// Human name of a slot.
pub fn slot_name(slot: KeySlot) -> String {
    match slot.retired_number() {
        Some(n) => format!("Retired key management {n}"),
        None => match slot.reference() {
            0x9A => "PIV Authentication".into(),
            0x9C => "Digital Signature".into(),
            0x9D => "Key Management".into(),
            _ => "Card Authentication".into(),
        },
    }
}

fn slot_report(e: &KeyEntry) -> SlotReport {
    SlotReport {
        slot: e.slot.to_string(),
        name: slot_name(e.slot),
        algorithm: e.algorithm.name().to_owned(),
        generated: e.generated,
        certificate: e.certificate.as_ref().and_then(|c| cert_report(&c.der)),
    }
}

fn counter(c: &Counter) -> CounterReport {
    CounterReport {
        tries_left: c.tries_left,
        tries_total: c.total,
        factory_default: c.is_default,
    }
}

/// Builds the status report of the session's card (no APDU beyond what the core caches,
/// plus one GET METADATA for the management key).
pub fn status(card: &CardSession) -> Result<StatusReport> {
    let (contents, pin, puk): (Contents, Counter, Counter) =
        with(|lib| lib.card_snapshot(card.handle))?;
    let management_key_default =
        with(|lib| lib.management_key_is_default(card.handle))?.unwrap_or(false);
    let slots: Vec<SlotReport> = contents.entries.iter().map(slot_report).collect();
    let mut warnings = Vec::new();
    if pin.is_default {
        warnings.push("the PIN is still the factory default 123456: change it (`tessera setup` or `tessera pin change`)".into());
    }
    if puk.is_default {
        warnings.push("the PUK is still the factory default 12345678: change it (`tessera setup` or `tessera puk change`)".into());
    }
    if management_key_default {
        warnings.push("the management key is the factory default: anyone can replace your certificates (`tessera setup`)".into());
    }
    if pin.tries_left == Some(0) {
        warnings.push("the PIN is blocked: unblock it with the PUK (`tessera pin unblock`)".into());
    }
    if puk.tries_left == Some(0) {
        warnings.push("the PUK is blocked".into());
    }
    for s in &slots {
        if let Some(c) = &s.certificate {
            match c.state {
                "expired" => warnings.push(format!("slot {} certificate expired on {}", s.slot, c.not_after)),
                "urgent" => warnings.push(format!(
                    "slot {} certificate expires in {} days: renew now (`tessera renew request --slot {}`)",
                    s.slot, c.days_left, s.slot
                )),
                "warning" => warnings.push(format!(
                    "slot {} certificate expires in {} days: renew at least a week before",
                    s.slot, c.days_left
                )),
                _ => {}
            }
        }
    }
    Ok(StatusReport {
        label: contents.label.clone(),
        serial: contents.serial.clone(),
        version: contents
            .version
            .map(|v| format!("{}.{}.{}", v[0], v[1], v[2])),
        pin: counter(&pin),
        puk: counter(&puk),
        management_key_default,
        slots,
        key_history: contents
            .history
            .on_card_certs
            .saturating_add(contents.history.off_card_certs),
        warnings,
        pending_change: pending_report(&contents),
        problems: problem_reports(&contents),
    })
}

/// Plain-text rendering of a status report.
pub fn render(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Card:        {} (serial {})", r.label, r.serial);
    if let Some(v) = &r.version {
        let _ = writeln!(out, "Firmware:    {v}");
    }
    let tries = |c: &CounterReport| match (c.tries_left, c.tries_total) {
        (Some(l), Some(t)) => format!("{l} of {t} tries left"),
        (Some(l), None) => format!("{l} tries left"),
        _ => "unknown".into(),
    };
    let _ = writeln!(
        out,
        "PIN:         {}{}",
        tries(&r.pin),
        if r.pin.factory_default {
            " (factory default)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "PUK:         {}{}",
        tries(&r.puk),
        if r.puk.factory_default {
            " (factory default)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Key history: {} retired key(s)", r.key_history);
    if r.slots.is_empty() {
        let _ = writeln!(out, "No keys on the card.");
    }
    for s in &r.slots {
        let _ = writeln!(out, "\nSlot {} — {} ({})", s.slot, s.name, s.algorithm);
        match &s.certificate {
            Some(c) => {
                let _ = writeln!(out, "  Subject:   {}", c.subject);
                let _ = writeln!(out, "  Issuer:    {}", c.issuer);
                let _ = writeln!(out, "  Serial:    {}", c.serial);
                let _ = writeln!(out, "  Valid:     {} to {}", c.not_before, c.not_after);
                let _ = writeln!(out, "  Days left: {} ({})", c.days_left, c.state);
            }
            None => {
                let _ = writeln!(out, "  (key without certificate)");
            }
        }
    }
    if !r.warnings.is_empty() {
        let _ = writeln!(out);
        for w in &r.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    if let Some(p) = &r.pending_change {
        let _ = writeln!(
            out,
            "\nproblem: an interrupted change is not finished: {}",
            p.change
        );
        let _ = writeln!(out, "  fix: {}", p.fix);
    }
    for p in &r.problems {
        let _ = writeln!(out, "\nproblem: slot {}: {}", p.slot, p.problem);
        let _ = writeln!(out, "  fix: {}", p.fix);
    }
    out
}
