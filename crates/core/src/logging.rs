//! The module's debug log, switched on by environment variables read once, at the first
//! C_Initialize: `TESSERA_LOG` (a level: `error`, `warn`, `info`, `debug`, `trace`; `1`/`on`
//! mean `debug`) and `TESSERA_LOG_FILE` (append to this file instead of stderr; alone it
//! implies `debug`). Callers log call names, return values, attribute types and lengths —
//! never PINs, PUKs, keys or attribute values; this file only carries the lines.

use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use std::io::Write;

/// Environment variable naming the log level.
pub const ENV_LOG: &str = "TESSERA_LOG";
/// Environment variable naming a log file (default: stderr).
pub const ENV_LOG_FILE: &str = "TESSERA_LOG_FILE";

static INSTALLED: OnceCell<()> = OnceCell::new();

enum Sink {
    Stderr,
    File(std::fs::File),
}

struct Logger {
    level: log::LevelFilter,
    sink: Mutex<Sink>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "[tessera {}.{:03} pid {} {:?} {} {}] {}\n",
            now.as_secs(),
            now.subsec_millis(),
            std::process::id(),
            std::thread::current().id(),
            record.level(),
            record.target(),
            record.args()
        );
        // A log line that cannot be written is dropped: logging must never fail a call.
        match &mut *self.sink.lock() {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {
        if let Sink::File(f) = &mut *self.sink.lock() {
            let _ = f.flush();
        }
    }
}

/// The level a `TESSERA_LOG` value asks for (`None`: logging off).
fn parse_level(value: &str) -> Option<log::LevelFilter> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "off" | "no" | "false" => None,
        "1" | "on" | "yes" | "true" | "debug" => Some(log::LevelFilter::Debug),
        "error" => Some(log::LevelFilter::Error),
        "warn" | "warning" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "trace" => Some(log::LevelFilter::Trace),
        _ => Some(log::LevelFilter::Debug),
    }
}

/// Installs the logger if the environment asks for one. Runs once per process; later calls
/// (a second C_Initialize after C_Finalize) change nothing.
pub fn init() {
    INSTALLED.get_or_init(|| {
        let file = std::env::var_os(ENV_LOG_FILE).filter(|p| !p.is_empty());
        let level = match std::env::var(ENV_LOG) {
            Ok(v) => parse_level(&v),
            Err(_) if file.is_some() => Some(log::LevelFilter::Debug),
            Err(_) => None,
        };
        let Some(level) = level else { return };
        let sink = file
            .and_then(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        let _ = writeln!(
                            std::io::stderr(),
                            "tessera: cannot open log file {}: {e}; logging to stderr",
                            std::path::Path::new(&path).display()
                        );
                    })
                    .ok()
            })
            .map_or(Sink::Stderr, Sink::File);
        let logger = Logger {
            level,
            sink: Mutex::new(sink),
        };
        // Fails only when this copy of `log` already has a logger (the module linked into a
        // program that installed its own): then that logger gets our lines.
        // The logger lives as long as the process (the `log` crate needs a 'static one).
        if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
            log::set_max_level(level);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Some(log::LevelFilter::Debug));
        assert_eq!(parse_level("1"), Some(log::LevelFilter::Debug));
        assert_eq!(parse_level("TRACE"), Some(log::LevelFilter::Trace));
        assert_eq!(parse_level("off"), None);
        assert_eq!(parse_level(""), None);
    }
}
