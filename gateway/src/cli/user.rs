//! `iotgw user`: local console users (`[api] users`). `hash-password` reads a password on
//! standard input and prints its argon2id PHC string for `password_argon2`; the password never
//! appears on a command line (where `ps` and shell history would keep it).
use std::{
    io::{Read as _, Write as _},
    process::ExitCode,
};

use anyhow::Context as _;

use crate::api::users::PasswordHash;

/// Longest password read, in bytes: beyond this a pasted file is more likely than a password.
const MAX_PASSWORD_BYTES: u64 = 4_096;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read a password on stdin (one line) and print its argon2id hash for `password_argon2`.
    HashPassword,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::HashPassword => {
            let mut input = String::new();
            std::io::stdin()
                .take(MAX_PASSWORD_BYTES + 1)
                .read_to_string(&mut input)
                .context("reading the password from stdin")?;
            let password = password_line(&input)?;
            let hash = PasswordHash::of(password).map_err(anyhow::Error::msg).context("hashing the password")?;
            writeln!(std::io::stdout(), "{}", hash.as_str()).context("writing the hash")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The password of `input`: its first line without the line ending, refused when empty or
/// too long.
fn password_line(input: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(input.len() as u64 <= MAX_PASSWORD_BYTES, "the password is longer than {MAX_PASSWORD_BYTES} bytes");
    let line = input.split('\n').next().unwrap_or_default();
    let password = line.strip_suffix('\r').unwrap_or(line);
    anyhow::ensure!(!password.is_empty(), "refusing an empty password (write it on stdin: `iotgw user hash-password`)");
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_password_and_an_empty_one_is_refused() {
        assert_eq!(password_line("s3cret\n").unwrap(), "s3cret");
        assert_eq!(password_line("s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(password_line(" spaced out ").unwrap(), " spaced out ");
        for empty in ["", "\n", "\r\n"] {
            assert!(password_line(empty).unwrap_err().to_string().contains("empty"), "{empty:?}");
        }
        assert!(password_line(&"x".repeat(5_000)).is_err());
    }
}
