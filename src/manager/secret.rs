//! PINs, PUKs and passwords from the user: prompted without echo on a terminal, else read
//! from a file or standard input (first line) — never from the command line, where every
//! other user of the machine could read them.

use super::{fail, Result};
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use zeroize::Zeroizing;

/// Reads one secret. `file` is a path or `-` for standard input; without it a terminal gets a
/// prompt (twice when `confirm`), and a pipe is read.
pub fn read(what: &str, file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    let value = match file {
        Some(p) if p == Path::new("-") => first_line(&mut std::io::stdin().lock())?,
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| super::ManagerError {
                class: crate::manager::ErrorClass::Refused,
                message: format!("cannot read {what} from {}: {e}", p.display()),
            })?;
            first_line(&mut std::io::BufReader::new(f))?
        }
        None if std::io::stdin().is_terminal() => {
            let v = Zeroizing::new(rpassword::prompt_password(format!("{what}: "))?);
            if confirm {
                let again = Zeroizing::new(rpassword::prompt_password(format!("{what} again: "))?);
                if *again != *v {
                    return fail(format!("the two {what}s differ"));
                }
            }
            v
        }
        None => first_line(&mut std::io::stdin().lock())?,
    };
    Ok(value)
}

fn first_line(r: &mut dyn BufRead) -> Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    r.read_line(&mut line)?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    Ok(trimmed)
}

/// Reads several secrets from one source in order: a file/stdin gives them one per line.
pub fn read_many(whats: &[&str], file: Option<&Path>) -> Result<Vec<Zeroizing<String>>> {
    match file {
        None if std::io::stdin().is_terminal() => whats
            .iter()
            .map(|w| read(w, None, w.starts_with("new")))
            .collect(),
        _ => {
            let mut lines: Box<dyn BufRead> = match file {
                Some(p) if p != Path::new("-") => {
                    Box::new(std::io::BufReader::new(std::fs::File::open(p)?))
                }
                _ => Box::new(std::io::BufReader::new(std::io::stdin())),
            };
            let mut out = Vec::new();
            for w in whats {
                let v = first_line(&mut lines)?;
                if v.is_empty() {
                    return fail(format!("missing {w} (one per line)"));
                }
                out.push(v);
            }
            Ok(out)
        }
    }
}
