//! The virtual card attached to pcscd through the vsmartcard `vpcd` reader driver. The driver
//! listens; we connect and answer frames (2-byte big-endian length, then payload). A one-byte
//! payload is a control code (0 power off, 1 power on, 2 reset, 4 send ATR); anything else is a
//! command APDU answered by exactly one response. The ATR and the applet are those of the card's
//! kind (PIV profile or IDPrime model). Debian's vpcd writes header and payload in two segments
//! without TCP_NODELAY, so TCP_QUICKACK is re-armed before every read (else each APDU stalls
//! ~44 ms on delayed ACKs).

use super::kind::{self, CardApplet};
use super::store::CardFile;
use crate::card::CardError;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CTRL_POWER_OFF: u8 = 0;
const CTRL_POWER_ON: u8 = 1;
const CTRL_RESET: u8 = 2;
const CTRL_ATR: u8 = 4;

/// Re-arms TCP_QUICKACK (Linux clears it after a while) so our ACK is never delayed.
fn rearm_quickack(stream: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: the descriptor belongs to `stream`, which outlives the call; the option value
    // points to a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::debug!("TCP_QUICKACK: {}", io::Error::last_os_error());
    }
}

fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    rearm_quickack(stream);
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    buf.clear();
    buf.resize(usize::from(u16::from_be_bytes(len)), 0);
    rearm_quickack(stream);
    stream.read_exact(buf)?;
    Ok(true)
}

fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let len = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "response over 65535 bytes"))?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame)
}

/// Serves one card file to a vpcd reader at `addr` until `stop` is set (SIGTERM) or, when
/// `once` is true, until the reader closes the connection. Reconnects when pcscd restarts.
pub fn serve(path: &Path, addr: &str, stop: Arc<AtomicBool>, once: bool) -> Result<(), CardError> {
    let mut file = CardFile::open(path)?;
    let (atr, mut applet) =
        file.read(|state| ((kind::atr(state), CardApplet::for_state(state)), false))?;
    let mut announced = false;
    while !stop.load(Ordering::SeqCst) {
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                if !announced {
                    eprintln!("tessera: waiting for the vpcd reader at {addr} ({e})");
                    announced = true;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        eprintln!(
            "tessera: card {} inserted in the vpcd reader at {addr}",
            path.display()
        );
        announced = false;
        let watcher = stream
            .try_clone()
            .map_err(|e| CardError::Reader(e.to_string()))?;
        let stop_watch = Arc::clone(&stop);
        let done = Arc::new(AtomicBool::new(false));
        let done_watch = Arc::clone(&done);
        let guard = std::thread::spawn(move || {
            while !stop_watch.load(Ordering::SeqCst) && !done_watch.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = watcher.shutdown(Shutdown::Both);
        });
        let result = session(&mut stream, &mut file, &mut applet, &atr);
        done.store(true, Ordering::SeqCst);
        let _ = guard.join();
        applet.reset();
        match result {
            Ok(()) => {}
            Err(e) if stop.load(Ordering::SeqCst) => log::debug!("vpcd session ended: {e}"),
            Err(e) => eprintln!("tessera: vpcd connection lost: {e}"),
        }
        if once {
            break;
        }
    }
    Ok(())
}

fn session(
    stream: &mut TcpStream,
    file: &mut CardFile,
    applet: &mut CardApplet,
    atr: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        if !read_frame(stream, &mut buf)? {
            return Ok(());
        }
        match buf.as_slice() {
            [CTRL_ATR] => write_frame(stream, atr)?,
            [CTRL_POWER_OFF] | [CTRL_POWER_ON] | [CTRL_RESET] => applet.reset(),
            [_] => log::debug!("vpcd: unknown control code {:02X?}", buf),
            apdu => {
                let response = file
                    .update(|state| {
                        let out = applet.process(state, apdu);
                        (out.response, out.changed)
                    })
                    .unwrap_or_else(|e| {
                        eprintln!("tessera: {e}");
                        vec![0x6F, 0x00]
                    });
                write_frame(stream, &response)?;
            }
        }
        zeroize::Zeroize::zeroize(&mut buf);
    }
}
