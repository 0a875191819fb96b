//! Loads policy files: finds them (the files given, or the `*.toml` files of a folder),
//! reads them and parses their TOML, then hands each to `checks`. Every problem is collected
//! with its `file:line:column`; writes nothing.
//!
//! serde stops at a file's first TOML syntax or type error; the loader then comments out the
//! offending `key = value` line and parses again, so every such error is reported with its
//! place. It gives up on a file (after reporting) when the error is on a table header or the
//! file no longer parses as TOML. Every semantic error in every file that parses is reported.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    checks::{Checker, ParsedFile},
    error::{ErrorKind, Location, PolicyError},
    model::Policy,
    schema::PolicyFile,
};
use crate::toml_error;

/// Loads `paths`: files are read as given, folders contribute their `*.toml` files (not
/// recursive, sorted by name so messages come out in a stable order).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Policy, Vec<PolicyError>> {
    let (sources, mut errors) = read_paths(paths);
    match parse_sources(&sources) {
        Ok(policy) if errors.is_empty() => Ok(policy),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Reads `paths` as `load_paths` does: the `(path, text)` of every file, and why any could not
/// be read.
pub fn read_paths<P: AsRef<Path>>(paths: &[P]) -> (Vec<(PathBuf, String)>, Vec<PolicyError>) {
    let mut errors = Vec::new();
    let mut sources = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let files = if path.is_dir() {
            match toml_files(path) {
                Ok(files) => files,
                Err(error) => {
                    errors.push(unreadable(path.to_owned(), &error));
                    continue;
                }
            }
        } else {
            vec![path.to_owned()]
        };
        for file in files {
            // The same file named twice (`policy check dir/ dir/a.toml`) is read once, or it
            // would collide with itself.
            let identity = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if seen.contains(&identity) {
                continue;
            }
            seen.push(identity);
            match std::fs::read_to_string(&file) {
                Ok(text) => sources.push((file, text)),
                Err(error) => errors.push(unreadable(file, &error)),
            }
        }
    }
    (sources, errors)
}

fn unreadable(path: PathBuf, error: &std::io::Error) -> PolicyError {
    PolicyError::new(Location::file(&Arc::new(path)), ErrorKind::Read(error.to_string()))
}

/// The `*.toml` files of `dir`, sorted.
pub fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks policy texts (`(path, text)`; the path is only used in messages).
pub fn parse_sources(sources: &[(PathBuf, String)]) -> Result<Policy, Vec<PolicyError>> {
    if sources.is_empty() {
        let at = Location::file(&Arc::new(PathBuf::from(".")));
        return Err(vec![PolicyError::new(at, ErrorKind::NoFiles)]);
    }
    let mut checker = Checker::default();
    for (path, text) in sources {
        let file = Arc::new(path.clone());
        let (parsed, errors) = parse_file(&file, text);
        checker.add_file(&file, errors, parsed);
    }
    checker.finish()
}

/// The 1-based line of the table header above 1-based `line` (0 for the root table).
fn table_line(text: &str, line: usize) -> usize {
    text.lines()
        .take(line)
        .enumerate()
        .filter(|(_, content)| content.trim_start().starts_with('['))
        .map(|(index, _)| index + 1)
        .last()
        .unwrap_or(0)
}

/// Most TOML errors reported for one file before giving up on it.
const MAX_SYNTAX_ERRORS_PER_FILE: usize = 32;

/// Parses one file, reporting as many TOML errors as can be found: serde stops at the first
/// one, so the line it points at is commented out and the file parsed again, as long as the
/// result is still valid TOML and the line is a `key = value` (not a table header, whose
/// removal would move keys into another table). Returns the parsed file with the text it was
/// parsed from (same lines as the original, so locations hold) when parsing finally succeeds.
/// Errors found after a line was commented out may be consequences of that line's removal.
fn parse_file(file: &Arc<PathBuf>, text: &str) -> (Option<ParsedFile>, Vec<PolicyError>) {
    let mut errors = Vec::new();
    let mut current = text.to_owned();
    let mut removed_keys: Vec<String> = Vec::new();
    let mut removed_lines: Vec<usize> = Vec::new();
    for _ in 0..MAX_SYNTAX_ERRORS_PER_FILE {
        let error = match toml::from_str::<PolicyFile>(&current) {
            Ok(file) => {
                let tainted_tables = removed_lines
                    .iter()
                    .zip(&removed_keys)
                    .map(|(line, key)| (table_line(&current, *line), key.clone()))
                    .collect();
                return (Some(ParsedFile { file, text: current, tainted_tables }), errors);
            }
            Err(error) => error,
        };
        let message = toml_error::message(&error);
        // A required key we commented out ourselves: already reported, and nothing further
        // can be learnt from this table.
        if removed_keys.iter().any(|key| message.contains(&format!("missing field `{key}`"))) {
            break;
        }
        let offset = error.span().map_or(0, |span| span.start);
        errors.push(PolicyError::new(Location::at(file, &current, offset), ErrorKind::Syntax(message)));
        match comment_out_line(&current, offset) {
            Some((next, key)) if toml::from_str::<toml::Table>(&next).is_ok() => {
                removed_lines.push(Location::at(file, &current, offset).line);
                current = next;
                removed_keys.push(key);
            }
            _ => break,
        }
    }
    (None, errors)
}

/// `text` with the line holding byte `offset` turned into a comment, and the key that line
/// set; `None` for table headers, comments and blank lines.
fn comment_out_line(text: &str, offset: usize) -> Option<(String, String)> {
    let offset = offset.min(text.len());
    let start = text.get(..offset)?.rfind('\n').map_or(0, |index| index + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('[') || trimmed.starts_with('#') {
        return None;
    }
    let mut next = String::with_capacity(text.len() + 1);
    next.push_str(&text[..start]);
    next.push('#');
    next.push_str(&text[start..]);
    let key = trimmed.split('=').next().unwrap_or("").trim().trim_matches('"').to_owned();
    Some((next, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::located_errors;

    #[test]
    fn syntax_and_unknown_keys_are_located_and_other_files_still_checked() {
        let found = located_errors(&[
            ("a.toml", "[[class]]\nname = \"a\"\nid = 1\n[bogus]\nx = 1\n"),
            ("b.toml", "[[class]]\nname = \"b\"\nid = 2\ncolour = \"red\"\n"),
            ("c.toml", "[[class]\n"),
            ("d.toml", "[[class]]\nname = \"d\"\nid = \"ten\"\n"),
            ("e.toml", "[[class]]\nname = \"e\"\nid = 0\n"),
            (
                "f.toml",
                "[[class]]\nname = \"f\"\nid = 7\nupdate_lane = \"yes\"\n[[class.allow]]\n\
                 nets = \"10.0.0.0/8\"\ncolour = 1\nports = [\"99999\"]\n",
            ),
        ]);
        assert_eq!(found.len(), 10, "{found:#?}");
        assert!(matches!(&found[0].2, ErrorKind::Syntax(message) if message.contains("bogus")));
        assert_eq!((found[0].0, found[0].1), (4, 2));
        assert!(matches!(&found[1].2, ErrorKind::Syntax(message) if message.contains("colour")));
        assert_eq!(found[1].0, 4);
        assert!(matches!(&found[2].2, ErrorKind::Syntax(_)));
        assert_eq!(found[2].0, 1);
        assert!(matches!(&found[3].2, ErrorKind::Syntax(_)));
        assert_eq!((found[3].0, found[3].1), (3, 6));
        assert_eq!(found[4].2, ErrorKind::ClassIdOutOfRange(0));
        // One file, three independent errors: two type errors and an unknown key, each at its
        // place (serde alone stops at the first), then the semantic error after them.
        // The rule that lost `nets` is not also reported empty; its bad port and its ports
        // without a port protocol are real and reported.
        let f: Vec<(usize, usize)> = found[5..].iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(f, vec![(4, 15), (6, 8), (7, 1), (8, 10), (8, 10)], "{:#?}", &found[5..]);
        assert!(matches!(&found[7].2, ErrorKind::Syntax(message) if message.contains("colour")));
        assert_eq!(found[8].2, ErrorKind::PortOutOfRange(99_999));
        assert_eq!(found[9].2, ErrorKind::PortsWithoutPortProtocol("any".into()));
        // A rule that lost its protocol to a type error is not also told its ports need one.
        let lost = located_errors(&[(
            "t.toml",
            "[[class]]\nname = \"g\"\nid = 8\n[[class.allow]]\nnets = [\"10.0.0.1\"]\nprotocol = 6\nports = [22]\n",
        )]);
        assert_eq!(lost.len(), 1, "{lost:#?}");
        assert_eq!((lost[0].0, lost[0].1), (6, 12));
    }

    #[test]
    fn no_files_is_an_error() {
        assert_eq!(parse_sources(&[]).unwrap_err()[0].kind, ErrorKind::NoFiles);
    }
}
