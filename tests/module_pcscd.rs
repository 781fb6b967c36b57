//! The PKCS#11 module through the `cryptoki` crate against the virtual card served through
//! pcscd and vpcd (`tessera vcard serve`), as every application on a desktop reaches a card:
//! reader slots, login, key generation, signatures checked on the host, PIN counters read back
//! over a second PC/SC connection, and a card reset by another process, which must leave the
//! module's session logged out (never a replayed PIN).
//!
//! Needs the lab from pkg/scripts/pcsc-lab.sh (PCSCLITE_CSOCK_NAME, TESSERA_VPCD_PORT). Without
//! it the tests say so and pass, unless TESSERA_REQUIRE_LAB=1 (the test command sets it).
//! TESSERA_VCARD is removed before the module is initialised: only PC/SC slots here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod module_common;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{AttributeType, ObjectClass};
use cryptoki::session::{SessionState, UserType};
use cryptoki::slot::Slot;
use module_common::matrix::*;
use module_common::*;
use sha2::Digest;
use std::ffi::CString;
use std::process::{Child, Command as Process};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tessera::applet::piv::PinStatus;
use tessera::card::pcsc::{self, PcscTransport, ReaderInfo};
use tessera::vcard::{CardFile, CardState};

const MESSAGE: &[u8] = b"signed through pcscd";

fn lab_port() -> Option<String> {
    match (
        std::env::var("TESSERA_VPCD_PORT"),
        std::env::var_os("PCSCLITE_CSOCK_NAME"),
    ) {
        (Ok(p), Some(_)) => Some(p),
        _ => {
            assert!(
                std::env::var("TESSERA_REQUIRE_LAB").is_err(),
                "TESSERA_REQUIRE_LAB is set but no pcsc lab is configured \
                 (TESSERA_VPCD_PORT and PCSCLITE_CSOCK_NAME)"
            );
            eprintln!("skipped: no pcsc lab (run pkg/scripts/test-all.sh)");
            None
        }
    }
}

/// `tessera vcard serve` for one card; stopped with SIGTERM when dropped.
struct Server(Option<Child>);

impl Server {
    fn start(path: &std::path::Path, port: &str) -> Self {
        let child = Process::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["vcard", "serve"])
            .arg(path)
            .args(["--vpcd", &format!("127.0.0.1:{port}")])
            .env_remove("TESSERA_VCARD")
            .spawn()
            .expect("start tessera vcard serve");
        Self(Some(child))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        // SIGTERM, as an init system stops it; the server must exit cleanly.
        // SAFETY: signals our own child process by its id.
        let _ = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                if !std::thread::panicking() {
                    assert!(status.success(), "tessera vcard serve exited with {status}");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        if !std::thread::panicking() {
            panic!("tessera vcard serve ignored SIGTERM");
        }
    }
}

/// Waits until the lab's first reader (the one vpcd serves on PORT) has a card.
fn wait_for_card(ctx: &pcsc::Context) -> ReaderInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let readers = pcsc::readers(ctx).expect("list readers");
        let first = readers
            .iter()
            .min_by(|a, b| a.name.cmp(&b.name))
            .cloned()
            .expect("the lab has a reader");
        if first.card_present {
            return first;
        }
        assert!(Instant::now() < deadline, "the card never appeared");
        let _ = pcsc::wait_for_change(ctx, &readers, Some(Duration::from_millis(500)));
    }
}

/// A card served through the lab, seen by pcscd. One at a time: the lab has one vpcd port.
struct Lab {
    ctx: pcsc::Context,
    reader: ReaderInfo,
    serial: u32,
    port: String,
    path: std::path::PathBuf,
    server: Option<Server>,
    _dir: tempfile::TempDir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Lab {
    fn up(port: &str, serial: u32) -> Self {
        static LAB: Mutex<()> = Mutex::new(());
        let guard = LAB.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        CardFile::create(&path, &CardState::factory(serial)).unwrap();
        let ctx = pcsc::establish().expect("pcscd reachable");
        let server = Server::start(&path, port);
        let reader = wait_for_card(&ctx);
        Self {
            ctx,
            reader,
            serial,
            server: Some(server),
            port: port.to_owned(),
            path,
            _dir: dir,
            _one_at_a_time: guard,
        }
    }

    /// Runs `f` over a second PC/SC connection of our own (like another process), leaving the
    /// card as it is.
    fn on_card<R>(
        &self,
        f: impl FnOnce(&mut dyn tessera::card::Channel) -> Result<R, tessera::card::CardError>,
    ) -> R {
        let name = CString::new(self.reader.name.clone()).unwrap();
        let mut t = PcscTransport::connect(&self.ctx, &name).expect("second connection");
        let r = on_transport(&mut t, f);
        t.disconnect();
        r
    }

    /// Resets the card from another PC/SC context (another process would do the same).
    fn reset_card(&self) {
        let other = pcsc::establish().unwrap();
        let name = CString::new(self.reader.name.clone()).unwrap();
        let card = other
            .connect(&name, ::pcsc::ShareMode::Shared, ::pcsc::Protocols::ANY)
            .unwrap();
        card.disconnect(::pcsc::Disposition::ResetCard)
            .map_err(|(_, e)| e)
            .unwrap();
    }

    /// The module's slot for the lab's reader (its description is the reader name).
    fn slot(&self, init: &Initialized) -> Slot {
        let slots = init.pkcs11.get_all_slots().unwrap();
        let wanted: String = self.reader.name.chars().take(64).collect();
        slots
            .into_iter()
            .find(|s| {
                init.pkcs11
                    .get_slot_info(*s)
                    .is_ok_and(|i| i.slot_description() == wanted.trim_end())
            })
            .unwrap_or_else(|| panic!("no slot for reader {:?}", self.reader.name))
    }
}

impl Lab {
    /// Stops the card server and waits until pcscd sees the card gone.
    fn remove_card(&mut self) {
        drop(self.server.take());
        self.wait_until_gone();
    }

    /// Serves the same card file again and waits for pcscd to see it.
    fn insert_card(&mut self) {
        self.server = Some(Server::start(&self.path, &self.port));
        self.reader = wait_for_card(&self.ctx);
    }

    fn wait_until_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Ok(readers) = pcsc::readers(&self.ctx) else {
                return;
            };
            match readers.iter().find(|r| r.name == self.reader.name) {
                Some(r) if r.card_present => {
                    let _ = pcsc::wait_for_change(
                        &self.ctx,
                        &readers,
                        Some(Duration::from_millis(200)),
                    );
                }
                _ => return,
            }
        }
        if !std::thread::panicking() {
            panic!("pcscd still reports the card after the server stopped");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The next test's card must not be mistaken for this one: wait until pcscd has seen
        // this card go.
        if self.server.is_some() {
            self.remove_card();
        }
    }
}

#[test]
fn module_through_pcscd() {
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_001);
    let init = Initialized::new(&[]);
    let p11 = &init.pkcs11;
    let slot = lab.slot(&init);

    // Reader slots: ours has the card; the lab's second reader is an empty slot.
    let info = p11.get_slot_info(slot).unwrap();
    assert!(info.removable_device());
    assert!(info.token_present());
    assert!(info.hardware_slot(), "a reader is a hardware slot");
    let all = p11.get_all_slots().unwrap();
    let with_token = p11.get_slots_with_token().unwrap();
    assert!(with_token.contains(&slot));
    assert!(
        all.len() > with_token.len(),
        "the lab's empty second reader is a slot without a token"
    );
    let token = p11.get_token_info(slot).unwrap();
    assert_eq!(token.label(), format!("Tessera PIV #{}", lab.serial));
    assert_eq!(token.serial_number(), lab.serial.to_string());
    assert!(token.user_pin_to_be_changed());

    let s = p11.open_rw_session(slot).unwrap();

    // A malformed PIN spends nothing; a wrong one exactly one try (read back over a second
    // connection).
    assert_rv(
        s.login(UserType::User, Some(&pin("12345"))),
        RvError::PinLenRange,
    );
    assert_eq!(lab.on_card(pin_status), PinStatus::TriesLeft(3));
    assert_rv(
        s.login(UserType::User, Some(&pin("000000"))),
        RvError::PinIncorrect,
    );
    assert_eq!(lab.on_card(pin_status), PinStatus::TriesLeft(2));
    assert!(p11.get_token_info(slot).unwrap().user_pin_count_low());

    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    // The PIN is verified on the card itself (one card, shared by every connection).
    assert_eq!(lab.on_card(pin_status), PinStatus::Verified);
    assert!(!p11.get_token_info(slot).unwrap().user_pin_count_low());

    // Generate, sign, verify on the host and with C_Verify.
    let (public, private) = generate_ec(&s, 0x01, Curve::P256);
    let point = ec_point(&s, public);
    let hashed = sha2::Sha256::digest(MESSAGE).to_vec();
    let sig = s.sign(&Mechanism::EcdsaSha256, private, MESSAGE).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    s.verify(&Mechanism::EcdsaSha256, public, MESSAGE, &sig)
        .unwrap();

    // Sessions on several threads share the reader.
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u8)
            .map(|t| {
                let (p11, point) = (p11.clone(), &point);
                scope.spawn(move || {
                    let session = p11.open_ro_session(slot).unwrap();
                    for i in 0..5u8 {
                        let msg = [t, i, 0x55];
                        let sig = session
                            .sign(&Mechanism::EcdsaSha256, private, &msg)
                            .expect("ECDSA through pcscd in a thread");
                        verify_ecdsa(Curve::P256, point, &sha2::Sha256::digest(msg), &sig);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker thread");
        }
    });

    // A certificate goes onto the card and is read back over the second connection.
    let der = certificate_for(&ec_spki(Curve::P256, &point), "Lab Holder", false, false);
    create_certificate(&s, 0x01, &der);
    assert_eq!(
        lab.on_card(|ch| certificate(ch, 0x9A)).as_deref(),
        Some(der.as_slice())
    );
    let cert = object(&s, ObjectClass::CERTIFICATE, 0x01);
    assert_eq!(attr_bytes(&s, cert, AttributeType::Value), der);

    // ECDH with a key-management key.
    let (km_public, km_private) = generate_ec(&s, 0x03, Curve::P384);
    let (host_secret, host_point) = host_ec_key(Curve::P384);
    assert_eq!(
        derive_ecdh(&s, km_private, &host_point),
        host_ecdh(Curve::P384, &host_secret, &ec_point(&s, km_public))
    );

    // The signature key wants the PIN right before each signature, even through pcscd.
    let (sig_public, sig_private) = generate_ec(&s, 0x02, Curve::P256);
    s.sign_init(&Mechanism::EcdsaSha256, sig_private).unwrap();
    s.login(UserType::ContextSpecific, Some(&pin(PIN))).unwrap();
    let (rv, sig) = raw_sign(s.handle(), MESSAGE);
    assert_eq!(rv, cryptoki_sys::CKR_OK);
    verify_ecdsa(Curve::P256, &ec_point(&s, sig_public), &hashed, &sig);
    assert_rv(
        s.sign(&Mechanism::EcdsaSha256, sig_private, MESSAGE),
        RvError::UserNotLoggedIn,
    );

    drop(s);
    drop(init);
}

#[test]
fn every_mechanism_through_pcscd() {
    // The whole signature and decryption matrix of the in-process tests, on a card in a reader.
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_005);
    let init = Initialized::new(&[]);
    let slot = lab.slot(&init);
    let s = init.pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let (public, private) = generate_rsa(&s, 0x01, 2048);
    rsa_signatures(&s, public, private);
    rsa_decryptions(&s, public, private);
    for curve in [Curve::P256, Curve::P384] {
        let (public, private) = generate_ec(&s, 0x01, curve);
        ec_signatures(&s, curve, public, private);
    }
    drop(s);
    drop(init);
}

#[test]
fn reset_by_another_process_logs_the_session_out() {
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_002);
    let init = Initialized::new(&[]);
    let slot = lab.slot(&init);
    let s = init.pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let (public, private) = generate_ec(&s, 0x01, Curve::P256);
    let point = ec_point(&s, public);
    let hashed = sha2::Sha256::digest(MESSAGE).to_vec();
    let sig = s.sign(&Mechanism::EcdsaSha256, private, MESSAGE).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);

    lab.reset_card();
    assert_eq!(
        lab.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "the reset dropped the card's PIN verification"
    );

    // The module must not replay the PIN: the signature fails, the session is public.
    assert_rv(
        s.sign(&Mechanism::EcdsaSha256, private, MESSAGE),
        RvError::UserNotLoggedIn,
    );
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    assert_eq!(
        lab.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "no PIN was sent after the reset"
    );
    // Public objects are still there without login.
    object(&s, ObjectClass::PUBLIC_KEY, 0x01);

    // The application asks again: login works, and so does the key.
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x01);
    let sig = s.sign(&Mechanism::EcdsaSha256, private, MESSAGE).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );

    // A reset while nothing needs the login: the next public call still works and the
    // session is logged out.
    lab.reset_card();
    let token = init.pkcs11.get_token_info(slot).unwrap();
    assert_eq!(token.serial_number(), lab.serial.to_string());
    object(&s, ObjectClass::PUBLIC_KEY, 0x01);
    let rv = rv_of(s.sign(&Mechanism::EcdsaSha256, private, MESSAGE));
    assert!(
        matches!(rv, RvError::UserNotLoggedIn | RvError::KeyHandleInvalid),
        "after the second reset: {rv:?}"
    );
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    drop(s);
    drop(init);
}

#[test]
fn logout_drops_the_cards_pin_verification() {
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_003);
    let init = Initialized::new(&[]);
    let slot = lab.slot(&init);
    let s = init.pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(lab.on_card(pin_status), PinStatus::Verified);
    s.logout().unwrap();
    assert_eq!(
        lab.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "C_Logout leaves no verified PIN on the card for other processes"
    );
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(lab.on_card(pin_status), PinStatus::Verified);
    drop(s);
    assert_eq!(
        lab.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "closing the last session logs out on the card too"
    );
    drop(init);
}

#[test]
fn card_authentication_key_signs_after_a_reset_without_login() {
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_004);
    let init = Initialized::new(&[]);
    // 9E lives on the card's card-authentication token (no CKF_LOGIN_REQUIRED).
    let slot = lab.slot(&init);
    let auth = init
        .pkcs11
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|s| s.id() == slot.id() + CARD_AUTH_SLOT_BASE)
        .expect("the card-authentication slot of the lab's reader");
    assert!(!init.pkcs11.get_token_info(auth).unwrap().login_required());
    let point = {
        let s = init.pkcs11.open_rw_session(auth).unwrap();
        s.login(UserType::User, Some(&pin(PIN))).unwrap();
        let (public, _) = generate_ec(&s, 0x04, Curve::P256);
        ec_point(&s, public)
    };
    let s = init.pkcs11.open_ro_session(auth).unwrap();
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x04);
    let hashed = sha2::Sha256::digest(MESSAGE).to_vec();
    let sig = s.sign(&Mechanism::Ecdsa, private, &hashed).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);

    // 9E needs no PIN, so a reset by another process is no reason to refuse a signature.
    lab.reset_card();
    let sig = s
        .sign(&Mechanism::Ecdsa, private, &hashed)
        .expect("9E signature after a reset by another process");
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    drop(s);
    drop(init);
}

#[test]
fn removal_and_reinsertion_in_a_reader() {
    let Some(port) = lab_port() else { return };
    let mut lab = Lab::up(&port, 5_200_005);
    let init = Initialized::new(&[]);
    let p11 = &init.pkcs11;
    let slot = lab.slot(&init);
    let count = p11.get_all_slots().unwrap().len();
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let (public, _) = generate_ec(&s, 0x01, Curve::P256);
    let point = ec_point(&s, public);

    lab.remove_card();
    let info = p11.get_slot_info(slot).unwrap();
    assert!(
        !info.token_present(),
        "CKF_TOKEN_PRESENT false without a card"
    );
    assert!(info.removable_device());
    assert_eq!(p11.get_all_slots().unwrap().len(), count, "the slot stays");
    assert!(!p11.get_slots_with_token().unwrap().contains(&slot));
    assert_rv(p11.get_token_info(slot), RvError::TokenNotPresent);
    let rv = rv_of(s.get_session_info());
    assert!(
        matches!(rv, RvError::SessionHandleInvalid | RvError::DeviceRemoved),
        "a session of a removed card: {rv:?}"
    );

    lab.insert_card();
    assert_eq!(lab.slot(&init), slot, "same reader, same slot ID");
    assert!(p11.get_slot_info(slot).unwrap().token_present());
    let s2 = p11.open_rw_session(slot).unwrap();
    assert_eq!(
        s2.get_session_info().unwrap().session_state(),
        SessionState::RwPublic,
        "a re-inserted card starts logged out"
    );
    assert_eq!(lab.on_card(pin_status), PinStatus::TriesLeft(3));
    s2.login(UserType::User, Some(&pin(PIN))).unwrap();
    let private = object(&s2, ObjectClass::PRIVATE_KEY, 0x01);
    let hashed = sha2::Sha256::digest(MESSAGE).to_vec();
    let sig = s2.sign(&Mechanism::Ecdsa, private, &hashed).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    drop(s2);
    drop(s);
    drop(init);
}

#[test]
fn a_running_program_sees_an_import_through_pcscd() {
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_009);
    let init = Initialized::new(&[]);
    let slot = lab.slot(&init);
    let s = init.pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    running::running_client_sees_an_import(&s, dir.path(), |p12, pw| {
        running::tessera_import(&["--reader".as_ref(), lab.reader.name.as_ref()], p12, pw);
    });
}

#[test]
fn finalize_with_a_logged_in_session_leaves_the_card_not_verified() {
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_010);
    let init = Initialized::new(&[]);
    let slot = lab.slot(&init);
    let s = init.pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(lab.on_card(pin_status), PinStatus::Verified);
    // The application never closes its session: it calls C_Finalize (as at process exit).
    std::mem::forget(s);
    drop(init);
    assert_eq!(
        lab.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "after C_Finalize a fresh program's VERIFY-status query finds the card not verified"
    );
}

/// A pipe between a forked child and its parent: one byte says "go on".
struct Signal {
    read: libc::c_int,
    write: libc::c_int,
}

impl Signal {
    fn new() -> Self {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        Self {
            read: fds[0],
            write: fds[1],
        }
    }

    /// Keeps only the sending end (the other process reads).
    fn sender(&self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.read) };
    }

    /// Keeps only the receiving end: the other side's exit then reads as end of file.
    fn receiver(&self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.write) };
    }

    fn send(&self) {
        // SAFETY: one byte from a local into our own pipe.
        let n = unsafe { libc::write(self.write, [1u8].as_ptr().cast(), 1) };
        assert_eq!(n, 1, "write to the pipe");
    }

    /// Whether the other side said "go on" (false: it closed the pipe, e.g. by exiting).
    fn wait(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: one byte into a local from our own pipe.
        let n = unsafe { libc::read(self.read, b.as_mut_ptr().cast(), 1) };
        n == 1
    }
}

/// Issue 11, point 8 (pkcs11test's fork case, as OpenSC passes it): a child that initialises
/// the module after fork() gets its own PC/SC context and card connection and never releases
/// the parent's. Parent and child sign through pcscd with the same card, each in its own
/// session; both signatures verify on the host, and the parent's session keeps working after
/// the child's C_Finalize and exit.
#[cfg(unix)]
#[test]
fn forked_child_and_parent_both_sign_through_pcscd() {
    const CHILD_MESSAGE: &[u8] = b"signed by the forked child";
    let Some(port) = lab_port() else { return };
    let lab = Lab::up(&port, 5_200_011);
    let init = Initialized::new(&[]);
    let p11 = init.pkcs11.clone();
    let slot = lab.slot(&init);
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let (public, private) = generate_ec(&s, 0x01, Curve::P256);
    let point = ec_point(&s, public);
    let hashed = sha2::Sha256::digest(MESSAGE).to_vec();
    let sig = s.sign(&Mechanism::EcdsaSha256, private, MESSAGE).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);

    let signed = Signal::new();
    let finish = Signal::new();
    // SAFETY: the child only calls the module through cryptoki and its own pipes, and leaves
    // with _exit, never returning into the test harness; every other test waits on the lab
    // and module locks, so no other thread is inside PC/SC or the module at the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        signed.sender();
        finish.receiver();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if p11
                .initialize(cryptoki::context::CInitializeArgs::new(
                    cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
                ))
                .is_err()
            {
                return 1;
            }
            let Ok(own) = p11.open_rw_session(slot) else {
                return 2;
            };
            if own.login(UserType::User, Some(&pin(PIN))).is_err() {
                return 3;
            }
            let key = object(&own, ObjectClass::PRIVATE_KEY, 0x01);
            let Ok(sig) = own.sign(&Mechanism::EcdsaSha256, key, CHILD_MESSAGE) else {
                return 4;
            };
            verify_ecdsa(
                Curve::P256,
                &point,
                &sha2::Sha256::digest(CHILD_MESSAGE),
                &sig,
            );
            // Still initialised while the parent signs.
            signed.send();
            if !finish.wait() {
                return 5;
            }
            drop(own);
            if p11.clone().finalize().is_err() {
                return 6;
            }
            0
        }));
        // SAFETY: leaves the child at once, without running the parent's atexit handlers or
        // destructors (cryptoki's Session would close the parent's session handle).
        unsafe { libc::_exit(outcome.unwrap_or(99)) };
    }
    signed.receiver();
    finish.sender();
    let child_signed = signed.wait();
    let parent_sign = rv_of_sign(&s, private);
    finish.send();
    let mut status = 0;
    // SAFETY: waits for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child did not exit normally");
    let code = libc::WEXITSTATUS(status);
    assert!(child_signed, "the child did not sign (exit {code})");
    assert_eq!(code, 0, "child: initialise, log in, sign, finalise");
    let sig = parent_sign.unwrap_or_else(|rv| {
        panic!("the parent's C_Sign while the child has the module initialised: {rv:?}")
    });
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);

    // The child's last C_CloseSession logged the card out (a process logs out what it logged
    // in, and the card keeps one PIN verification for everyone): the parent's session notices
    // that, and its PC/SC connection, untouched by the child, carries the next login and
    // signature.
    assert_eq!(
        rv_of_sign(&s, private).err(),
        Some(RvError::UserNotLoggedIn)
    );
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let sig = s.sign(&Mechanism::EcdsaSha256, private, MESSAGE).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    drop(s);
    drop(init);
}

/// The parent's signature of MESSAGE, or the CK_RV it got.
fn rv_of_sign(
    s: &cryptoki::session::Session,
    key: cryptoki::object::ObjectHandle,
) -> Result<Vec<u8>, RvError> {
    match s.sign(&Mechanism::EcdsaSha256, key, MESSAGE) {
        Ok(sig) => Ok(sig),
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => Err(rv),
        Err(e) => panic!("C_Sign: {e}"),
    }
}
