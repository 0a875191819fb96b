//! Local users of the console: `[api] users` and the optional `users_file`, each a name, a role
//! and an argon2id password hash in PHC form (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`, what
//! `iotgw user hash-password` prints). Only hashes are stored, so a leaked config leaks no
//! password, and checking one costs a memory-hard hash.
//!
//! `UserSet::verify` blocks for the length of one argon2 hash (tens of milliseconds): callers
//! run it on the blocking pool. An unknown name is checked against `DUMMY_HASH`, of the same
//! default cost `iotgw user hash-password` uses, so the time taken does not tell a known name
//! from an unknown one (as long as users' hashes keep that cost).
use std::{fmt, str::FromStr};

use argon2::{
    Argon2, PasswordHasher as _, PasswordVerifier as _,
    password_hash::{self, SaltString},
};
use serde::Deserialize;

use super::auth::{Caller, CallerKind, FileError, Role};

/// Longest user name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// An argon2id hash with the crate's default (OWASP) cost, of a random password no one kept:
/// what an unknown user name is checked against. Made with `iotgw user hash-password`.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$yAwFmhksBQ3ewjPX3yfvcw$MmYLQN8A9XOSScZkLI/elTJEEclRYy+GH7Vyrsd2+E8";

/// An argon2id password hash in PHC string form, checked when the config is read.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes `password` with a random salt and the default argon2id cost (`iotgw user
    /// hash-password`).
    pub fn of(password: &str) -> Result<Self, String> {
        Self::with_params(password, argon2::Params::default())
    }

    /// Hashes `password` with other costs (tests use the cheapest).
    pub fn with_params(password: &str, params: argon2::Params) -> Result<Self, String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let hash = argon2.hash_password(password.as_bytes(), &salt).map_err(|error| error.to_string())?;
        Ok(Self(hash.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `password` is the one hashed (in constant time over the hash output).
    fn verifies(&self, password: &str) -> bool {
        // Parsed when the config was read (`from_str`), so this cannot fail but for a bug.
        password_hash::PasswordHash::new(&self.0)
            .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash of a weak password can be brute-forced offline: keep it out of logs.
        f.write_str("PasswordHash(..)")
    }
}

impl FromStr for PasswordHash {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "password_argon2 must be an argon2id PHC string ($argon2id$v=19$m=..,t=..,p=..$salt$hash, \
             from `iotgw user hash-password`)";
        let text = text.trim();
        let hash = password_hash::PasswordHash::new(text).map_err(|error| format!("{EXPECTED}: {error}"))?;
        if hash.algorithm != argon2::Algorithm::Argon2id.ident() {
            return Err(format!("{EXPECTED}: the algorithm is {}", hash.algorithm));
        }
        argon2::Params::try_from(&hash).map_err(|error| format!("{EXPECTED}: {error}"))?;
        if hash.hash.is_none() {
            return Err(format!("{EXPECTED}: the hash is missing"));
        }
        Ok(Self(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One local user.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Sign-in name; audit entries say `user:<name>`.
    pub name: String,
    pub role: Role,
    pub password_argon2: PasswordHash,
}

/// The users file: `[[users]]` entries, the same shape as in `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// Why the user list was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The users file cannot be read or parsed (a bad PHC string among the reasons).
    #[error(transparent)]
    File(#[from] FileError),
    /// Entries that parse but cannot work together, all of them.
    #[error("api users: {}", .problems.join("; "))]
    Invalid { problems: Vec<String> },
}

/// Every problem of a list of users: empty, unsafe or too long names, names used twice.
pub fn problems(entries: &[UserEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry.name.trim().is_empty() {
            problems.push(format!("user #{} has an empty name", index + 1));
        } else if !crate::untrusted::is_safe(&entry.name) || entry.name.len() > MAX_NAME_BYTES {
            problems.push(format!(
                "user name {} must be at most {MAX_NAME_BYTES} bytes without control, line-separator or bidi characters",
                crate::untrusted::escape(&entry.name)
            ));
        }
        if entries[..index].iter().any(|earlier| earlier.name == entry.name) {
            problems.push(format!("user name {:?} is used twice", crate::untrusted::escape(&entry.name)));
        }
    }
    problems
}

/// Every local user.
#[derive(Debug, Default)]
pub struct UserSet {
    entries: Vec<UserEntry>,
}

impl UserSet {
    pub fn new(entries: Vec<UserEntry>) -> Result<Self, UsersError> {
        let problems = problems(&entries);
        if problems.is_empty() { Ok(Self { entries }) } else { Err(UsersError::Invalid { problems }) }
    }

    /// The users of `[api]` plus those of the users file, if one is named.
    pub fn load(config: &super::Config) -> Result<Self, UsersError> {
        let mut entries = config.users.clone();
        if let Some(path) = &config.users_file {
            entries.extend(super::auth::read_file::<UsersFile>(path)?.users);
        }
        Self::new(entries)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The user `name` if `password` is theirs. Blocks for one argon2 hash, whether or not the
    /// name is known.
    pub fn verify(&self, name: &str, password: &str) -> Option<Caller> {
        let entry = self.entries.iter().find(|entry| entry.name == name);
        let dummy;
        let hash = match entry {
            Some(entry) => &entry.password_argon2,
            None => {
                dummy = PasswordHash(DUMMY_HASH.to_owned());
                &dummy
            }
        };
        let verified = hash.verifies(password);
        let entry = entry?;
        verified.then(|| Caller { name: entry.name.clone(), role: entry.role, kind: CallerKind::User })
    }
}

#[cfg(test)]
pub(crate) fn cheap_hash(password: &str) -> PasswordHash {
    // The least argon2 allows: 8 KiB, one pass, so tests do not spend seconds hashing.
    PasswordHash::with_params(password, argon2::Params::new(8, 1, 1, None).unwrap()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role, password: &str) -> UserEntry {
        UserEntry { name: name.into(), role, password_argon2: cheap_hash(password) }
    }

    #[test]
    fn a_user_signs_in_with_their_password_only() {
        let set =
            UserSet::new(vec![user("ada", Role::Admin, "correct horse"), user("vic", Role::Viewer, "pw")]).unwrap();
        assert_eq!(
            set.verify("ada", "correct horse"),
            Some(Caller { name: "ada".into(), role: Role::Admin, kind: CallerKind::User })
        );
        assert_eq!(set.verify("ada", "pw"), None);
        assert_eq!(set.verify("vic", "pw").map(|c| c.role), Some(Role::Viewer));
        assert_eq!(set.verify("nobody", "pw"), None);
        assert_eq!(set.verify("", ""), None);
    }

    #[test]
    fn the_dummy_hash_is_a_valid_argon2id_hash_of_default_cost() {
        let hash: PasswordHash = DUMMY_HASH.parse().unwrap();
        let parsed = password_hash::PasswordHash::new(hash.as_str()).unwrap();
        let (params, default) = (argon2::Params::try_from(&parsed).unwrap(), argon2::Params::default());
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert!(!hash.verifies(""));
    }

    #[test]
    fn phc_strings_of_other_algorithms_or_malformed_are_refused() {
        assert!(PasswordHash::of("x").unwrap().as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let argon2i = DUMMY_HASH.replace("argon2id", "argon2i");
        for bad in ["plain-password", "", "$argon2id$v=19$m=19456", argon2i.as_str(), "$2b$12$abcdefghijklmnopqrstuv"] {
            let error = bad.parse::<PasswordHash>().unwrap_err();
            assert!(error.contains("argon2id PHC string"), "{bad}: {error}");
        }
        assert_eq!(format!("{:?}", cheap_hash("x")), "PasswordHash(..)");
    }

    #[test]
    fn every_bad_name_is_reported() {
        let err = UserSet::new(vec![
            user("a", Role::Viewer, "x"),
            user("a", Role::Operator, "y"),
            user(" ", Role::Viewer, "z"),
            user("evil\nname", Role::Viewer, "z"),
            user(&"n".repeat(MAX_NAME_BYTES + 1), Role::Viewer, "z"),
        ])
        .unwrap_err();
        let UsersError::Invalid { problems } = err else { panic!("{err}") };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("evil\\nname")), "{problems:?}");
    }
}
