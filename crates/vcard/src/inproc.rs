//! The virtual card reached in-process: a [`Transport`] whose APDUs run the applet directly
//! against the state file. A PC/SC transaction becomes holding the file lock, so another
//! process using the same card file waits, as it would behind pcscd. The card presents its
//! kind's ATR (PIV profile or IDPrime model), and extended length is used only when that ATR announces it, as the PC/SC
//! transport decides. Faults that tests need (a reset by "another process", a removed card) are
//! injected here.

use super::kind::{self, CardApplet};
use super::store::CardFile;
use crate::card::{CardError, Channel, TransactionOp, Transport};
use std::path::Path;

/// The card as seen inside a transaction.
struct Session {
    file: CardFile,
    applet: CardApplet,
    /// Whether the ATR announces extended Lc/Le.
    extended: bool,
}

impl Channel for Session {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        let applet = &mut self.applet;
        self.file.update(|state| {
            let out = applet.process(state, apdu);
            (out.response, out.changed)
        })
    }

    fn extended_length(&self) -> bool {
        self.extended
    }
}

/// A virtual card as a transport.
pub struct VirtualTransport {
    session: Session,
    atr: Vec<u8>,
    name: String,
    reset_pending: bool,
    removed: bool,
}

impl VirtualTransport {
    /// Opens the card file at `path`.
    pub fn open(path: &Path) -> Result<Self, CardError> {
        let mut file = CardFile::open(path)?;
        let (atr, applet) =
            file.read(|state| ((kind::atr(state), CardApplet::for_state(state)), false))?;
        Ok(Self {
            session: Session {
                file,
                applet,
                extended: crate::card::atr::supports_extended_length(&atr),
            },
            atr,
            name: format!("Tessera Virtual PIV {}", path.display()),
            reset_pending: false,
            removed: false,
        })
    }

    /// Simulates a card reset by another process: verifications are lost and the next
    /// transaction reports [`CardError::Reset`].
    pub fn inject_reset(&mut self) {
        self.session.applet.reset();
        self.reset_pending = true;
    }

    /// Simulates removing (`true`) or re-inserting (`false`) the card.
    pub fn set_removed(&mut self, removed: bool) {
        if removed != self.removed {
            self.session.applet.reset();
            self.reset_pending = !removed;
        }
        self.removed = removed;
    }

    /// Whether the card is in its (virtual) reader.
    pub fn is_present(&self) -> bool {
        !self.removed
    }
}

impl Transport for VirtualTransport {
    fn transaction(&mut self, op: &mut TransactionOp<'_>) -> Result<(), CardError> {
        if self.removed {
            return Err(CardError::NoCard);
        }
        if std::mem::take(&mut self.reset_pending) {
            return Err(CardError::Reset);
        }
        self.session.file.hold()?;
        let out = op(&mut self.session);
        self.session.file.release();
        out
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Virtual card files as a [`crate::card::Connector`]: one reader per file, a card present
/// while the file exists.
pub struct VirtualConnector {
    paths: Vec<std::path::PathBuf>,
}

impl VirtualConnector {
    /// A connector for the card files at `paths`.
    pub fn new(paths: Vec<std::path::PathBuf>) -> Self {
        Self { paths }
    }

    /// A connector for the files `TESSERA_VCARD` names.
    pub fn configured() -> Self {
        Self::new(super::configured_paths())
    }
}

impl crate::card::Connector for VirtualConnector {
    fn readers(&self) -> Option<Vec<crate::card::ReaderInfo>> {
        Some(
            self.paths
                .iter()
                .map(|p| crate::card::ReaderInfo {
                    location: crate::card::Location::File(p.clone()),
                    card_present: p.exists(),
                    atr: Vec::new(),
                })
                .collect(),
        )
    }

    fn connect(
        &self,
        location: &crate::card::Location,
    ) -> Result<Box<dyn crate::card::Transport>, CardError> {
        match location {
            crate::card::Location::File(path) => Ok(Box::new(VirtualTransport::open(path)?)),
            crate::card::Location::Reader(_) => Err(CardError::NoCard),
        }
    }

    fn describe(&self, location: &crate::card::Location) -> String {
        format!("Tessera Virtual PIV {location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::apdu::{exchange, Command};
    use crate::{CardState, Profile};

    /// Each profile's card presents its own ATR in-process, and long data reaches it the way
    /// that ATR allows: extended length or command chaining.
    #[test]
    fn the_transport_presents_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        for profile in Profile::ALL {
            let path = dir.path().join(format!("{profile}.json"));
            // A 9A certificate container: over 255 bytes each way.
            let object = crate::state::certificate_object(&[0x30; 1500]);
            let mut state = CardState::factory_for(profile, 7);
            state.objects.insert(0x5FC105, object.clone());
            CardFile::create(&path, &state).unwrap();
            let mut t = VirtualTransport::open(&path).unwrap();
            assert_eq!(t.atr(), &profile.atr()[..]);
            let mut seen = None;
            t.transaction(&mut |ch| {
                seen = Some(ch.extended_length());
                let mut put = vec![0x5C, 0x03, 0x5F, 0xC1, 0x05];
                put.extend_from_slice(&object);
                let r = exchange(ch, &Command::new(0xDB, 0x3F, 0xFF).with_data(&put))?;
                // Not authenticated: refused, but only once the whole command arrived.
                assert_eq!(u16::from(r.sw), 0x6982, "{profile}");
                let get = Command::new(0xCB, 0x3F, 0xFF).with_data(&put[..5]);
                let r = exchange(ch, &get)?;
                assert!(r.sw.is_success(), "{profile}: {:?}", r.sw);
                assert_eq!(&r.data[..], &object[..], "{profile}");
                Ok(())
            })
            .unwrap();
            assert_eq!(
                seen,
                Some(matches!(profile, Profile::YubiKey57 | Profile::PivBasic)),
                "{profile}"
            );
        }
    }
}
