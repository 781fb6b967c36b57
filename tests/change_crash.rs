//! The change protocol, cut at every APDU. Each change the PIV driver makes (an e-Cert loaded
//! into an occupied slot, a key-management key kept in history, a slot emptied, a certificate
//! replaced, a renewal key staged and installed, first-use set-up) runs once whole on a copy
//! of the card to learn its end state and its length in APDUs; then for every n it runs again
//! on a fresh copy with the card "pulled" after n APDUs (the virtual card commits APDU by APDU,
//! as a real one does). A new session then opens the card as any program would, finishes or
//! undoes the change from the record on the card, and the card must be exactly as before the
//! change or exactly as after it: every key (by public key), certificate, chain, Key History,
//! no staged leftovers, no copy areas, nothing pending.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use tessera::applet::piv::change::{self, Recovered};
use tessera::applet::piv::keys::{self, ImportKey, KeyAlgorithm, PinPolicy};
use tessera::applet::piv::plans::{self, Caps, Load, NewKey};
use tessera::applet::piv::{
    self, admin, KeySlot, ManagementAlgorithm, PinStatus, DEFAULT_MANAGEMENT_KEY,
};
use tessera::card::{with_transaction, CardError, Channel};
use tessera::vcard::{CardFile, CardState, VirtualTransport};

const CAPS: Caps = Caps {
    metadata: true,
    move_key: true,
};

/// A channel that loses the card after `left` more APDUs.
struct Cut<'a> {
    inner: &'a mut dyn Channel,
    left: usize,
    sent: usize,
}

impl Channel for Cut<'_> {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        if self.left == 0 {
            return Err(CardError::NoCard);
        }
        self.left -= 1;
        self.sent += 1;
        self.inner.transmit_raw(apdu)
    }
    fn extended_length(&self) -> bool {
        self.inner.extended_length()
    }
}

/// One key slot as a snapshot sees it: reference, key digest, certificate, chain.
type SlotView = (u8, Option<[u8; 32]>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Everything a change may touch, as a later reader sees it (the stamp aside).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// Per key slot: key digest, certificate, chain.
    slots: Vec<SlotView>,
    history: (u8, u8),
    copies: Vec<Vec<u8>>,
    pending: bool,
}

fn snapshot(ch: &mut dyn Channel) -> Result<Snapshot, CardError> {
    piv::select(ch)?;
    let mut slots = Vec::new();
    for s in KeySlot::all() {
        let key = change::key_digest(ch, s)?;
        let cert = admin::read_certificate(ch, s)?;
        let chain = piv::get_data(ch, s.chain_tag())?.filter(|v| !v.is_empty());
        if key.is_some() || cert.is_some() || chain.is_some() {
            slots.push((s.reference(), key, cert, chain));
        }
    }
    let h = admin::key_history(ch)?.unwrap_or_default();
    let mut copies = Vec::new();
    for n in 0..change::COPY_AREAS {
        if let Some(v) = piv::get_data(ch, change::COPY_AREA_FIRST + n)? {
            if !v.is_empty() {
                copies.push(v);
            }
        }
    }
    Ok(Snapshot {
        slots,
        history: (h.on_card_certs, h.off_card_certs),
        copies,
        pending: change::read_record(ch)?.pending.is_some(),
    })
}

fn on_card<R>(path: &Path, f: impl FnOnce(&mut dyn Channel) -> Result<R, CardError>) -> R {
    let mut card = VirtualTransport::open(path).unwrap();
    with_transaction(&mut card, f).unwrap()
}

fn admin_session(ch: &mut dyn Channel) -> Result<(), CardError> {
    piv::select(ch)?;
    piv::authenticate_management(ch, ManagementAlgorithm::TripleDes, &DEFAULT_MANAGEMENT_KEY)
}

fn ec_key() -> Vec<u8> {
    p256::SecretKey::random(&mut rand::rngs::OsRng)
        .to_bytes()
        .to_vec()
}

/// A change to run: it gets an administered channel (management key authenticated).
type Step = dyn Fn(&mut dyn Channel) -> Result<(), CardError>;

/// Opens the card as a new program would and finishes or undoes what is pending.
fn recover(path: &Path) -> Option<Recovered> {
    on_card(path, |ch| {
        admin_session(ch)?;
        match change::read_record(ch)?.pending {
            Some(p) => change::recover(ch, &p).map(Some),
            None => Ok(None),
        }
    })
}

/// A key generated on the card differs from run to run: every key not on the card before is
/// "the new key".
fn generated_as_new(mut snap: Snapshot, before: &Snapshot) -> Snapshot {
    let known: Vec<[u8; 32]> = before.slots.iter().filter_map(|s| s.1).collect();
    for s in &mut snap.slots {
        if s.1.is_some_and(|d| !known.contains(&d)) {
            s.1 = Some([0xEE; 32]);
        }
    }
    snap
}

/// Runs `step` cut at every APDU on copies of `initial`; every recovered card must equal the
/// snapshot before or after (or one of `also` when given). Returns how many APDUs the whole
/// change took and how many cuts were finished and undone.
fn cut_everywhere(
    name: &str,
    initial: &Path,
    step: &Step,
    also: &[Snapshot],
) -> (usize, usize, usize) {
    let dir = initial.parent().unwrap();
    let before = on_card(initial, snapshot);
    let snapshot = |ch: &mut dyn Channel| snapshot(ch).map(|s| generated_as_new(s, &before));
    let whole = dir.join(format!("{name}-whole.json"));
    std::fs::copy(initial, &whole).unwrap();
    let total = on_card(&whole, |ch| {
        admin_session(ch)?;
        let mut cut = Cut {
            inner: ch,
            left: usize::MAX,
            sent: 0,
        };
        step(&mut cut)?;
        Ok(cut.sent)
    });
    let after = on_card(&whole, snapshot);
    assert_ne!(before, after, "{name}: the change changes something");
    assert!(
        !after.pending && after.copies.is_empty(),
        "{name}: a whole change leaves nothing behind"
    );
    let (mut finished, mut undone) = (0, 0);
    for n in 0..total {
        let copy = dir.join(format!("{name}-cut-{n}.json"));
        std::fs::copy(initial, &copy).unwrap();
        let mut card = VirtualTransport::open(&copy).unwrap();
        let out = with_transaction(&mut card, |ch| {
            admin_session(ch)?;
            let mut cut = Cut {
                inner: ch,
                left: n,
                sent: 0,
            };
            step(&mut cut)
        });
        assert!(
            matches!(out, Err(CardError::NoCard)),
            "{name}: cut after {n} of {total} APDUs"
        );
        drop(card);
        match recover(&copy) {
            Some(Recovered::Finished(_)) => finished += 1,
            Some(Recovered::Undone(_)) | Some(Recovered::Closed { .. }) => undone += 1,
            None => {}
        }
        let seen = on_card(&copy, snapshot);
        assert!(
            seen == before || seen == after || also.contains(&seen),
            "{name}: cut after {n} of {total} APDUs left a card that is neither before nor after:\n{seen:#?}\nbefore:\n{before:#?}\nafter:\n{after:#?}"
        );
        std::fs::remove_file(&copy).unwrap();
    }
    println!("{name}: {total} APDUs, {total} cuts: {finished} finished, {undone} undone, {} had nothing to do", total - finished - undone);
    (total, finished, undone)
}

struct Lab {
    _dir: tempfile::TempDir,
    card: PathBuf,
}

fn lab(serial: u32) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.json");
    CardFile::create(&card, &CardState::factory(serial)).unwrap();
    Lab { _dir: dir, card }
}

/// Loads an e-Cert (P-256 key, certificate and chain bytes) into `slot` whole.
fn load_ecert(
    ch: &mut dyn Channel,
    slot: KeySlot,
    scalar: &[u8],
    cert: &[u8],
    chain: &[u8],
) -> Result<(), CardError> {
    let key = ImportKey::Ec {
        algorithm: KeyAlgorithm::EccP256,
        scalar,
    };
    let key = NewKey::Import {
        key: &key,
        policy: PinPolicy::Default,
    };
    plans::load(
        ch,
        CAPS,
        &Load {
            slot,
            key: &key,
            certificate: Some(cert),
            chain: Some(chain),
            keep_old: slot == KeySlot::KEY_MANAGEMENT,
        },
        &|_| true,
    )
    .map(|_| ())
}

#[test]
fn an_ecert_replaced_is_old_or_new_after_a_cut_anywhere() {
    let l = lab(6_100_001);
    let (a, b) = (ec_key(), ec_key());
    on_card(&l.card, |ch| {
        admin_session(ch)?;
        load_ecert(
            ch,
            KeySlot::AUTHENTICATION,
            &a,
            b"certificate A",
            b"chain A",
        )?;
        load_ecert(ch, KeySlot::SIGNATURE, &ec_key(), b"certificate S", b"")
    });
    let step = move |ch: &mut dyn Channel| {
        load_ecert(
            ch,
            KeySlot::AUTHENTICATION,
            &b,
            b"certificate B",
            b"chain B",
        )
    };
    let (total, finished, undone) = cut_everywhere("import-9a", &l.card, &step, &[]);
    assert!(
        finished > 0 && undone > 0,
        "cuts fall on both sides of the commit"
    );
    assert!(total >= 10);
}

#[test]
fn a_key_management_key_replaced_keeps_the_old_one_in_history_after_a_cut_anywhere() {
    let l = lab(6_100_002);
    let b = ec_key();
    on_card(&l.card, |ch| {
        admin_session(ch)?;
        load_ecert(
            ch,
            KeySlot::KEY_MANAGEMENT,
            &ec_key(),
            b"certificate A",
            b"chain A",
        )
    });
    let step = move |ch: &mut dyn Channel| {
        load_ecert(ch, KeySlot::KEY_MANAGEMENT, &b, b"certificate B", b"")
    };
    cut_everywhere("import-9d", &l.card, &step, &[]);
}

#[test]
fn a_key_management_key_replaced_with_history_one_short_of_full() {
    let l = lab(6_100_003);
    // 19 retired keys: no room to stage beside the slot that takes the old key.
    on_card(&l.card, |ch| {
        admin_session(ch)?;
        for _ in 0..20 {
            load_ecert(ch, KeySlot::KEY_MANAGEMENT, &ec_key(), b"certificate", b"")?;
        }
        Ok(())
    });
    let h = on_card(&l.card, |ch| admin::key_history(ch)).unwrap();
    assert_eq!(h.on_card_certs, 19);
    let b = ec_key();
    let step = move |ch: &mut dyn Channel| {
        load_ecert(ch, KeySlot::KEY_MANAGEMENT, &b, b"certificate B", b"")
    };
    // Documented intermediate: the old key already in history, the slot empty.
    let before = on_card(&l.card, snapshot);
    let mut retired_only = before.clone();
    let old = retired_only.slots.iter().position(|s| s.0 == 0x9D).unwrap();
    let (_, key, cert, chain) = retired_only.slots.remove(old);
    retired_only.slots.push((0x95, key, cert, chain));
    retired_only
        .slots
        .sort_by_key(|s| KeySlot::all().position(|k| k.reference() == s.0));
    retired_only.history = (20, 0);
    cut_everywhere("import-9d-full", &l.card, &step, &[retired_only]);
}

#[test]
fn a_slot_emptied_or_a_certificate_replaced_after_a_cut_anywhere() {
    let l = lab(6_100_004);
    let a = ec_key();
    on_card(&l.card, |ch| {
        admin_session(ch)?;
        load_ecert(
            ch,
            KeySlot::AUTHENTICATION,
            &a,
            b"certificate A",
            b"chain A",
        )
    });
    let clear = |ch: &mut dyn Channel| plans::clear(ch, CAPS, KeySlot::AUTHENTICATION, true);
    cut_everywhere("delete-9a", &l.card, &clear, &[]);
    let rewrite = |ch: &mut dyn Channel| {
        plans::write_certificate(
            ch,
            KeySlot::AUTHENTICATION,
            b"certificate A, renewed",
            Some(b"chain A2"),
        )
    };
    cut_everywhere("certificate-9a", &l.card, &rewrite, &[]);
}

#[test]
fn a_renewal_staged_and_installed_after_a_cut_anywhere() {
    let l = lab(6_100_005);
    on_card(&l.card, |ch| {
        admin_session(ch)?;
        load_ecert(
            ch,
            KeySlot::SIGNATURE,
            &ec_key(),
            b"certificate A",
            b"chain A",
        )
    });
    let stage = |ch: &mut dyn Channel| {
        plans::stage_renewal(ch, KeyAlgorithm::EccP256, PinPolicy::Always, None).map(|_| ())
    };
    cut_everywhere("renew-request", &l.card, &stage, &[]);
    let staged = on_card(&l.card, |ch| {
        admin_session(ch)?;
        plans::stage_renewal(ch, KeyAlgorithm::EccP256, PinPolicy::Always, None)
    })
    .0;
    let install = move |ch: &mut dyn Channel| {
        plans::install_renewal(
            ch,
            KeySlot::SIGNATURE,
            staged,
            b"certificate A, renewed",
            None,
        )
    };
    let (_, finished, undone) = cut_everywhere("renew-install", &l.card, &install, &[]);
    assert!(finished > 0 && undone > 0);
    // After a finished install the old key is in the staged slot with the old certificate.
    let whole = l.card.parent().unwrap().join("renew-install-whole.json");
    on_card(&whole, |ch| {
        piv::select(ch)?;
        assert_eq!(
            admin::read_certificate(ch, staged)?.as_deref(),
            Some(&b"certificate A"[..])
        );
        assert_eq!(
            admin::read_certificate(ch, KeySlot::SIGNATURE)?.as_deref(),
            Some(&b"certificate A, renewed"[..])
        );
        // The 9C policy survived the staging: the new key still wants the PIN every time.
        let meta = keys::metadata(ch, KeySlot::SIGNATURE)?.unwrap();
        assert_eq!(meta.pin_policy, PinPolicy::Always);
        Ok(())
    });
}

/// First-use set-up cut at every APDU: whatever happens, the card's management key stays
/// usable — the factory key or the one stored PIN-protected — once the change is recovered
/// with whichever PIN the card has.
#[test]
fn setup_never_loses_the_management_key() {
    use tessera::applet::piv::change::{step, Change, Kind};
    let l = lab(6_100_006);
    let new_key = [7u8; 24];
    let setup = move |ch: &mut dyn Channel| -> Result<(), CardError> {
        piv::verify_pin(ch, Some(b"123456"))?;
        let mut c = Change::begin(ch, Kind::Setup, &[], 0)?;
        admin::change_reference(ch, piv::key_ref::PUK, b"12345678", b"87654321")?;
        c.mark_steps(ch, step::PUK_CHANGED)?;
        admin::change_reference(ch, piv::key_ref::PIN, b"123456", b"24681357")?;
        c.mark_steps(ch, step::PIN_CHANGED)?;
        piv::verify_pin(ch, Some(b"24681357"))?;
        admin::store_pending_management_key(ch, None, ManagementAlgorithm::Aes192, &new_key)?;
        c.mark_steps(ch, step::KEY_STORED)?;
        admin::set_management_key(ch, ManagementAlgorithm::Aes192, &new_key)?;
        piv::authenticate_management(ch, ManagementAlgorithm::Aes192, &new_key)?;
        c.mark_steps(ch, step::KEY_SET)?;
        admin::store_management_key(ch, &new_key)?;
        c.finish(ch)
    };
    let dir = l.card.parent().unwrap();
    let whole = dir.join("setup-whole.json");
    std::fs::copy(&l.card, &whole).unwrap();
    let total = on_card(&whole, |ch| {
        admin_session(ch)?;
        let mut cut = Cut {
            inner: ch,
            left: usize::MAX,
            sent: 0,
        };
        setup(&mut cut)?;
        Ok(cut.sent)
    });
    for n in 0..total {
        let copy = dir.join(format!("setup-cut-{n}.json"));
        std::fs::copy(&l.card, &copy).unwrap();
        let mut card = VirtualTransport::open(&copy).unwrap();
        let out = with_transaction(&mut card, |ch| {
            admin_session(ch)?;
            let mut cut = Cut {
                inner: ch,
                left: n,
                sent: 0,
            };
            setup(&mut cut)
        });
        assert!(matches!(out, Err(CardError::NoCard)));
        drop(card);
        // A new program: the PIN the card has now (new or old), then recovery, then the
        // management key a writer would use must authenticate.
        on_card(&copy, |ch| {
            piv::select(ch)?;
            let pin: &[u8] = if piv::verify_pin(ch, Some(b"24681357"))? == PinStatus::Verified {
                b"24681357"
            } else {
                assert_eq!(
                    piv::verify_pin(ch, Some(b"123456"))?,
                    PinStatus::Verified,
                    "cut {n}"
                );
                b"123456"
            };
            let _ = pin;
            if let Some(p) = change::read_record(ch)?.pending {
                if !change::authenticates_itself(&p) {
                    admin_session(ch)?;
                }
                change::recover(ch, &p)?;
            }
            assert!(
                change::read_record(ch)?.pending.is_none(),
                "cut {n}: recovered"
            );
            let stored = admin::stored_management_key(ch)?;
            match stored {
                Some(k) => piv::authenticate_management(ch, ManagementAlgorithm::Aes192, &k)?,
                None => piv::authenticate_management(
                    ch,
                    ManagementAlgorithm::TripleDes,
                    &DEFAULT_MANAGEMENT_KEY,
                )?,
            }
            Ok(())
        });
        std::fs::remove_file(&copy).unwrap();
    }
    println!("setup: {total} APDUs, every cut recovered with a usable management key");
}
