//! Which card application a virtual card carries — PIV (the default, and every card file from
//! before IDPrime) or a Thales IDPrime — and the one place that turns that into an ATR and an
//! applet. The transports (in-process and vpcd) ask this module for both and never name an
//! applet themselves; the applets know nothing of each other.

use super::idprime;
use super::piv::{self, Outcome};
use super::state::CardState;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The card application of a virtual card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum CardKind {
    /// The PIV applet (with the behaviour of its [`super::Profile`]).
    #[default]
    #[serde(rename = "piv")]
    Piv,
    /// A Thales IDPrime card (its model in the IDPrime state).
    #[serde(rename = "idprime")]
    IdPrime,
}

impl CardKind {
    /// Every kind, in `--kind` order.
    pub const ALL: [CardKind; 2] = [CardKind::Piv, CardKind::IdPrime];

    /// The name used on the command line and in the card file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Piv => "piv",
            Self::IdPrime => "idprime",
        }
    }
}

impl fmt::Display for CardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CardKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown card kind {s} (piv or idprime)"))
    }
}

/// The card's answer-to-reset: its PIV profile's, or its IDPrime model's.
pub fn atr(state: &CardState) -> Vec<u8> {
    match (state.kind, &state.idprime) {
        (CardKind::IdPrime, Some(card)) => idprime::atr(card),
        _ => state.atr(),
    }
}

/// The applet answering for a card, of the card's kind.
pub enum CardApplet {
    /// The PIV applet.
    Piv(piv::Applet),
    /// The IDPrime applet.
    IdPrime(idprime::Applet),
}

impl CardApplet {
    /// A freshly powered applet for a card of `kind`.
    pub fn new(kind: CardKind) -> Self {
        match kind {
            CardKind::Piv => Self::Piv(piv::Applet::new()),
            CardKind::IdPrime => Self::IdPrime(idprime::Applet::new()),
        }
    }

    /// The applet for `state`'s kind.
    pub fn for_state(state: &CardState) -> Self {
        Self::new(state.kind)
    }

    /// The kind this applet answers for.
    pub fn kind(&self) -> CardKind {
        match self {
            Self::Piv(_) => CardKind::Piv,
            Self::IdPrime(_) => CardKind::IdPrime,
        }
    }

    /// Power-off or reset.
    pub fn reset(&mut self) {
        match self {
            Self::Piv(a) => a.reset(),
            Self::IdPrime(a) => a.reset(),
        }
    }

    /// Processes one command APDU. If the card file now holds a card of another kind (it was
    /// replaced under a running server), that is a new card: a fresh applet of its kind
    /// answers.
    pub fn process(&mut self, state: &mut CardState, apdu: &[u8]) -> Outcome {
        if self.kind() != state.kind {
            *self = Self::for_state(state);
        }
        match self {
            Self::Piv(a) => a.process(state, apdu),
            Self::IdPrime(a) => match state.idprime.as_mut() {
                Some(card) => a.process(card, apdu),
                None => {
                    log::error!("virtual card: kind idprime without IDPrime state");
                    Outcome {
                        response: vec![0x6F, 0x00],
                        changed: false,
                    }
                }
            },
        }
    }
}
