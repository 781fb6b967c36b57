//! PINs, PUKs and passwords from the user: prompted without echo on a terminal, else read
//! from a file or standard input (first line) — never from the command line, where every
//! other user of the machine could read them. Every read is bounded ([`MAX_SECRET_BYTES`]:
//! `--pin-file /dev/zero` is refused, not allocated) and an empty secret is refused as empty,
//! never passed on to be reported later as a wrong one. Secrets stay in zeroizing buffers that
//! never reallocate.

use super::{ManagerError, Result};
use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;
use zeroize::Zeroizing;

/// Most bytes read from a PIN, PUK or password file (or one line of standard input): a secret
/// is one short line, so anything longer is the wrong file.
pub const MAX_SECRET_BYTES: usize = 4096;

/// Reads all of `r` if it holds at most `limit` bytes; `None` if it holds more (only
/// `limit + 1` bytes are ever read, so an endless source such as `/dev/zero` costs nothing).
/// For files that hold no secret (a secret's buffer must not reallocate: see [`read`]).
pub fn read_bounded(r: impl Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut buf)?;
    Ok((buf.len() <= limit).then_some(buf))
}

/// Where a secret comes from, as the messages name it.
enum Source<'a> {
    File(&'a Path),
    Stdin,
}

impl Source<'_> {
    fn of(file: Option<&Path>) -> Source<'_> {
        match file {
            Some(p) if p != Path::new("-") => Source::File(p),
            _ => Source::Stdin,
        }
    }

    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "standard input".to_owned(),
        }
    }
}

/// Reads one secret. `file` is a path or `-` for standard input; without it a terminal gets a
/// prompt (twice when `confirm`), and a pipe is read.
pub fn read(what: &str, file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    if file.is_none() && std::io::stdin().is_terminal() {
        let v = Zeroizing::new(rpassword::prompt_password(format!("{what}: "))?);
        if v.is_empty() {
            return super::fail_usage(format!("the {what} is empty; nothing was changed"));
        }
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password(format!("{what} again: "))?);
            if *again != *v {
                return super::fail_usage(format!("the two {what}s differ"));
            }
        }
        return Ok(v);
    }
    let source = Source::of(file);
    let value = match source {
        Source::File(p) => {
            let all = file_bytes(what, p)?;
            first_line(what, &source, &all)?
        }
        Source::Stdin => stdin_line(what)?,
    };
    if value.is_empty() {
        return super::fail_usage(format!(
            "the {what} from {} is empty; nothing was changed",
            source.name()
        ));
    }
    Ok(value)
}

/// Reads several secrets from one source in order: a file/stdin gives them one per line.
pub fn read_many(whats: &[&str], file: Option<&Path>) -> Result<Vec<Zeroizing<String>>> {
    if file.is_none() && std::io::stdin().is_terminal() {
        return whats
            .iter()
            .map(|w| read(w, None, w.starts_with("new")))
            .collect();
    }
    let source = Source::of(file);
    let mut out = Vec::new();
    match source {
        Source::File(p) => {
            let all = file_bytes(whats.first().copied().unwrap_or("secret"), p)?;
            let mut lines = all.split(|b| *b == b'\n');
            for w in whats {
                let line = lines.next().unwrap_or_default();
                out.push(text(w, &source, line)?);
            }
        }
        Source::Stdin => {
            for w in whats {
                out.push(stdin_line(w)?);
            }
        }
    }
    for (w, v) in whats.iter().zip(&out) {
        if v.is_empty() {
            return super::fail_usage(format!(
                "missing {w} in {} (one per line); nothing was changed",
                source.name()
            ));
        }
    }
    Ok(out)
}

/// A whole secret file, at most [`MAX_SECRET_BYTES`].
fn file_bytes(what: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let f = std::fs::File::open(path).map_err(|e| ManagerError {
        class: super::ErrorClass::Usage,
        message: format!("cannot read the {what} from {}: {e}", path.display()),
    })?;
    // Room for the refusal byte too, so the buffer never reallocates (and leaves no copy).
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES + 1));
    f.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ManagerError {
            class: super::ErrorClass::Usage,
            message: format!("cannot read the {what} from {}: {e}", path.display()),
        })?;
    if buf.len() > MAX_SECRET_BYTES {
        return super::fail_usage(format!(
            "{} holds more than {MAX_SECRET_BYTES} bytes: too much for a PIN, PUK or password file (one short line), refused as the {what}; nothing was changed",
            path.display()
        ));
    }
    Ok(buf)
}

/// The first line of `all`, as text.
fn first_line(what: &str, source: &Source<'_>, all: &[u8]) -> Result<Zeroizing<String>> {
    text(
        what,
        source,
        all.split(|b| *b == b'\n').next().unwrap_or_default(),
    )
}

/// One line of standard input, at most [`MAX_SECRET_BYTES`] long. Reads only up to the end of
/// the line, so later secrets on the following lines stay for the next read.
fn stdin_line(what: &str) -> Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES + 1));
    (&mut lock)
        .take(MAX_SECRET_BYTES as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(|e| ManagerError {
            class: super::ErrorClass::Usage,
            message: format!("cannot read the {what} from standard input: {e}"),
        })?;
    let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
    if line.len() > MAX_SECRET_BYTES {
        return super::fail_usage(format!(
            "the {what} on standard input is longer than {MAX_SECRET_BYTES} bytes: not a {what}; nothing was changed"
        ));
    }
    text(what, &Source::Stdin, line)
}

/// A line as text without its line ending.
fn text(what: &str, source: &Source<'_>, line: &[u8]) -> Result<Zeroizing<String>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match std::str::from_utf8(line) {
        Ok(s) => Ok(Zeroizing::new(s.to_owned())),
        Err(_) => super::fail_usage(format!(
            "the {what} in {} is not text (UTF-8); nothing was changed",
            source.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, content).unwrap();
        f
    }

    #[test]
    fn first_line_of_a_file() {
        let f = file(b"123456\r\nignored\n");
        assert_eq!(&*read("PIN", Some(f.path()), false).unwrap(), "123456");
    }

    #[test]
    fn endless_file_is_refused_by_name() {
        let e = read("PIN", Some(Path::new("/dev/zero")), false).unwrap_err();
        assert!(e.message.contains("/dev/zero"), "{e}");
        assert!(e.message.contains("4096"), "{e}");
    }

    #[test]
    fn too_long_file_is_refused() {
        let f = file(&vec![b'1'; MAX_SECRET_BYTES + 1]);
        assert!(read("PIN", Some(f.path()), false).is_err());
        let f = file(&vec![b'1'; MAX_SECRET_BYTES]);
        assert_eq!(read("PIN", Some(f.path()), false).unwrap().len(), 4096);
    }

    #[test]
    fn empty_secret_is_refused_as_empty() {
        for content in [&b""[..], b"\n", b"\r\n"] {
            let f = file(content);
            let e = read("password", Some(f.path()), false).unwrap_err();
            assert!(e.message.contains("is empty"), "{e}");
        }
    }

    #[test]
    fn not_text_is_refused() {
        let f = file(b"\xff\xfe\n");
        let e = read("PIN", Some(f.path()), false).unwrap_err();
        assert!(e.message.contains("not text"), "{e}");
    }

    #[test]
    fn several_lines() {
        let f = file(b"123456\n654321\n");
        let v = read_many(&["PIN", "new PIN"], Some(f.path())).unwrap();
        assert_eq!((v[0].as_str(), v[1].as_str()), ("123456", "654321"));
        let f = file(b"123456\n");
        let e = read_many(&["PIN", "new PIN"], Some(f.path())).unwrap_err();
        assert!(e.message.contains("missing new PIN"), "{e}");
        let e = read_many(&["PIN"], Some(Path::new("/dev/zero"))).unwrap_err();
        assert!(e.message.contains("/dev/zero"), "{e}");
    }

    #[test]
    fn bounded_reader() {
        assert_eq!(read_bounded(&b"abc"[..], 3).unwrap().unwrap(), b"abc");
        assert!(read_bounded(&b"abcd"[..], 3).unwrap().is_none());
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert!(read_bounded(zero, 1 << 20).unwrap().is_none());
    }
}
