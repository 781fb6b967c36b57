//! The PC/SC transport against real pcscd with the vpcd reader and `tessera vcard serve`:
//! verification survives our own transactions, a reset by another process is reported once
//! and loses the PIN, removal and re-insertion are seen by status-change waiting, and a 2 KB
//! object crosses in one extended-length APDU.
//!
//! Needs the lab from pkg/scripts/pcsc-lab.sh (PCSCLITE_CSOCK_NAME, TESSERA_VPCD_PORT). Without
//! it the test says so and passes, unless TESSERA_REQUIRE_LAB=1 (the test command sets it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::ffi::CString;
use std::process::{Child, Command as Process};
use std::time::{Duration, Instant};
use tessera::applet::piv::{self, PinStatus};
use tessera::card::pcsc::{self, PcscTransport, ReaderInfo};
use tessera::card::{apdu, with_transaction, CardError, Transport};
use tessera::vcard::{CardFile, CardState};

fn lab_port() -> Option<String> {
    match std::env::var("TESSERA_VPCD_PORT") {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                std::env::var("TESSERA_REQUIRE_LAB").is_err(),
                "TESSERA_REQUIRE_LAB is set but no pcsc lab is configured"
            );
            eprintln!("skipped: no pcsc lab (run pkg/scripts/test-all.sh)");
            None
        }
    }
}

fn serve(path: &std::path::Path, port: &str) -> Child {
    Process::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["vcard", "serve"])
        .arg(path)
        .args(["--vpcd", &format!("127.0.0.1:{port}")])
        .spawn()
        .expect("start tessera vcard serve")
}

fn stop(mut child: Child) {
    // SIGTERM, so the server exits cleanly the way an init system would stop it.
    let _ = Process::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                status.success(),
                "tessera vcard serve exited with {status} on SIGTERM"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("tessera vcard serve ignored SIGTERM");
}

fn wait_for(ctx: &pcsc::Context, present: bool) -> ReaderInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let readers = pcsc::readers(ctx).expect("list readers");
        let reader = readers.into_iter().next().expect("the lab has a reader");
        if reader.card_present == present {
            return reader;
        }
        assert!(
            Instant::now() < deadline,
            "card presence never became {present}"
        );
        let _ = pcsc::wait_for_change(ctx, &[reader], Some(Duration::from_millis(500)));
    }
}

#[test]
fn pcsc_transport_against_pcscd_and_vpcd() {
    let Some(port) = lab_port() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    CardFile::create(&path, &CardState::factory(31337)).unwrap();
    let ctx = pcsc::establish().expect("pcscd reachable");
    let server = serve(&path, &port);
    let reader = wait_for(&ctx, true);
    assert_eq!(reader.atr, tessera::vcard::atr());
    let name = CString::new(reader.name.clone()).unwrap();
    let mut card = PcscTransport::connect(&ctx, &name).unwrap();
    let t: &mut dyn Transport = &mut card;

    // PIN verified in one transaction is still verified in the next one.
    with_transaction(t, |ch| {
        piv::select(ch)?;
        assert_eq!(piv::verify_pin(ch, Some(b"123456"))?, PinStatus::Verified);
        Ok(())
    })
    .unwrap();
    let status = with_transaction(t, |ch| piv::verify_pin(ch, None)).unwrap();
    assert_eq!(status, PinStatus::Verified);

    // Extended length through pcscd: 2 KB in and out, one APDU each way.
    let payload = vec![0x5Au8; 2048];
    with_transaction(t, |ch| {
        piv::authenticate_management(
            ch,
            piv::ManagementAlgorithm::TripleDes,
            &piv::DEFAULT_MANAGEMENT_KEY,
        )?;
        piv::put_data(ch, 0x5FC105, &payload)
    })
    .unwrap();
    let before = apdu::apdus_sent();
    let got = with_transaction(t, |ch| piv::get_data(ch, 0x5FC105)).unwrap();
    assert_eq!(got.as_deref(), Some(payload.as_slice()));
    assert_eq!(
        apdu::apdus_sent() - before,
        1,
        "2 KB GET DATA should be one extended APDU"
    );

    // Another process resets the card: we hear about it once, and the PIN is gone.
    {
        let other = pcsc::establish().unwrap();
        let c = other
            .connect(&name, ::pcsc::ShareMode::Shared, ::pcsc::Protocols::ANY)
            .unwrap();
        c.disconnect(::pcsc::Disposition::ResetCard)
            .map_err(|(_, e)| e)
            .unwrap();
    }
    let err = with_transaction(t, |ch| piv::verify_pin(ch, None)).unwrap_err();
    assert!(
        matches!(err, CardError::Reset),
        "expected Reset, got {err:?}"
    );
    let status = with_transaction(t, |ch| {
        piv::select(ch)?;
        piv::verify_pin(ch, None)
    })
    .unwrap();
    assert_eq!(
        status,
        PinStatus::TriesLeft(3),
        "a reset must drop the PIN verification"
    );

    // Removal and re-insertion.
    stop(server);
    let gone = wait_for(&ctx, false);
    assert!(!gone.card_present);
    let err = with_transaction(t, |ch| piv::verify_pin(ch, None)).unwrap_err();
    assert!(
        matches!(err, CardError::NoCard | CardError::Reader(_)),
        "got {err:?}"
    );
    let server = serve(&path, &port);
    wait_for(&ctx, true);
    drop(card);
    let mut card = PcscTransport::connect(&ctx, &name).unwrap();
    let serial = with_transaction(&mut card, |ch| {
        piv::select(ch)?;
        piv::serial(ch)
    })
    .unwrap();
    assert_eq!(serial, Some(31337));
    card.disconnect();
    stop(server);
}
