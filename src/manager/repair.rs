//! `tessera repair`: finishes or undoes a change that a crash, a pulled key or a closed lid
//! interrupted, and takes away certificates the card cannot vouch for (whose slot holds
//! another key, or none) after saving a copy. Any Tessera program opening the card does the
//! first part by itself when it can; this command is the explicit way, with the PIN (which a
//! PIN-protected management key needs) and a report of what it did.

use super::{certs, with, CardSession, ManagerError, Result};
use crate::applet::piv::change::Recovered;
use crate::token::library::{credential_steps, describe_pending};
use serde::Serialize;
use std::path::Path;

/// What `tessera repair` did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RepairReport {
    /// Each thing done, in words.
    pub done: Vec<String>,
    /// Copies of certificates taken off the card.
    pub saved: Vec<String>,
    /// What is still wrong and how to fix it (empty: the card is whole).
    pub remaining: Vec<String>,
}

/// Runs the repair on an open card, with the PIN.
pub fn repair(card: &CardSession, pin: &[u8], backup_dir: &Path) -> Result<RepairReport> {
    let (before, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    let pending = before.pending.clone();
    card.login_user(pin)?;
    let outcome = with(|lib| lib.repair(card.handle)).map_err(|e| {
        if e.message.contains("management key") {
            ManagerError {
                class: crate::manager::ErrorClass::Refused,
                message: format!(
                    "{}: the unfinished change cannot be finished without it",
                    e.message
                ),
            }
        } else {
            e
        }
    })?;
    let mut report = RepairReport::default();
    match (&outcome.recovered, &pending) {
        (Some(Recovered::Finished(_)), Some(p)) => report.done.push(format!(
            "finished the interrupted change: {}",
            describe_pending(p)
        )),
        (Some(Recovered::Undone(_)), Some(p)) => report.done.push(format!(
            "undid the interrupted change (the card is as it was before it): {}",
            describe_pending(p)
        )),
        (Some(Recovered::Closed { kind, steps }), _) => report.done.push(format!(
            "closed the interrupted change: {}",
            credential_steps(*kind, *steps).unwrap_or(kind.describe())
        )),
        (Some(_), None) => report
            .done
            .push("finished or undid an interrupted change".into()),
        (None, _) => {}
    }
    let (after, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
    for (slot, der) in &outcome.removed {
        let path = certs::save_backup(backup_dir, &after.serial, *slot, der)?;
        report.done.push(format!(
            "removed the certificate in slot {slot}: the key in the slot is not its key"
        ));
        report.saved.push(path.display().to_string());
    }
    report.remaining = super::status::problem_reports(&after)
        .into_iter()
        .map(|p| format!("slot {}: {} ({})", p.slot, p.problem, p.fix))
        .collect();
    if report.done.is_empty() && report.remaining.is_empty() {
        report.done.push(
            "nothing to repair: every key and certificate on the card belong together".into(),
        );
    }
    Ok(report)
}
