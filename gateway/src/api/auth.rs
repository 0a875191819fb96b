//! Bearer-token authentication and who a caller is. Reads the token list from `[api]` (and the
//! optional tokens file); stores only SHA-256 hashes of tokens, so a leaked config does not
//! leak a token. A presented token is hashed and compared to every stored hash in constant
//! time. Local users (`users`) and console sessions (`session`) end in the same `Caller`.
use std::{fmt, path::PathBuf, str::FromStr};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a caller may do. Ordered: an operator may do everything a viewer may, an admin
/// everything an operator may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads status, devices, flows, policies and metrics.
    Viewer,
    /// Also quarantines, releases and blocks devices and works alerts.
    Operator,
    /// Also lists and revokes the console's sessions.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256 of a token, written as 64 hex digits in the config (`sha256sum` output).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash of a weak token can be brute-forced: keep it out of logs.
        f.write_str("TokenHash(..)")
    }
}

impl FromStr for TokenHash {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes)
            .map_err(|_| "token_sha256 must be 64 hex digits (the output of `sha256sum`)".to_owned())?;
        Ok(Self(bytes))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One accepted token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it; audit entries say `api:<name>`.
    pub name: String,
    pub role: Role,
    pub token_sha256: TokenHash,
}

/// The tokens file: `[[tokens]]` entries, the same shape as in `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// Why the token list was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The tokens file cannot be read or parsed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Entries that parse but cannot work together, all of them.
    #[error("api tokens: {}", .problems.join("; "))]
    Invalid { problems: Vec<String> },
}

/// Why a file of credentials (`tokens_file`, `users_file`) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Syntax or type error (a bad hash among them), with the place in the file.
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
}

/// Reads a file of credentials.
pub(super) fn read_file<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|error| {
        let (line, column) = crate::toml_error::position(&text, &error).unwrap_or((0, 0));
        FileError::Parse { path: path.to_owned(), line, column, message: error.message().to_owned() }
    })
}

/// What a caller proved who they are with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallerKind {
    /// An API token (`[api] tokens`), presented as a bearer token or exchanged for a session.
    Token,
    /// A local user (`[api] users`) who signed in with a password.
    User,
}

impl CallerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallerKind::Token => "token",
            CallerKind::User => "user",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub kind: CallerKind,
}

impl Caller {
    /// How the audit log names this caller: `api:<token name>` or `user:<user name>`.
    pub fn actor(&self) -> String {
        let prefix = match self.kind {
            CallerKind::Token => "api",
            CallerKind::User => "user",
        };
        // Names are checked when the config is read; escaped again as a second line.
        format!("{prefix}:{}", crate::untrusted::escape(&self.name))
    }
}

/// Every accepted token.
#[derive(Debug, Default)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl TokenSet {
    /// Checks names and hashes are unique and names are non-empty, reporting every problem.
    pub fn new(entries: Vec<TokenEntry>) -> Result<Self, TokensError> {
        let mut problems = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            if entry.name.trim().is_empty() {
                problems.push(format!("token #{} has an empty name", index + 1));
            }
            if entries[..index].iter().any(|earlier| earlier.name == entry.name) {
                problems.push(format!("token name {:?} is used twice", entry.name));
            }
            if entries[..index].iter().any(|earlier| earlier.token_sha256 == entry.token_sha256) {
                problems.push(format!("token {:?} has the same hash as an earlier token", entry.name));
            }
        }
        if problems.is_empty() { Ok(Self { entries }) } else { Err(TokensError::Invalid { problems }) }
    }

    /// The tokens of `[api]` plus those of the tokens file, if one is named.
    pub fn load(config: &super::Config) -> Result<Self, TokensError> {
        let mut entries = config.tokens.clone();
        if let Some(path) = &config.tokens_file {
            entries.extend(read_file::<TokensFile>(path)?.tokens);
        }
        Self::new(entries)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller holding `token`, if it is one of ours.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let presented = TokenHash::of(token);
        let mut found = None;
        // Compare against every entry, without stopping at the first match, so the time taken
        // says nothing about where (or whether) a hash prefix matched.
        for entry in &self.entries {
            let equal: bool = entry.token_sha256.0.ct_eq(&presented.0).into();
            if equal && found.is_none() {
                found = Some(Caller { name: entry.name.clone(), role: entry.role, kind: CallerKind::Token });
            }
        }
        found
    }
}

/// The token of an `Authorization: Bearer <token>` header value; `None` for other schemes.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role, token: &str) -> TokenEntry {
        TokenEntry { name: name.into(), role, token_sha256: TokenHash::of(token) }
    }

    #[test]
    fn known_token_authenticates_with_its_role() {
        let set = TokenSet::new(vec![entry("alice", Role::Viewer, "t1"), entry("bob", Role::Operator, "t2")]).unwrap();
        assert_eq!(
            set.authenticate("t2"),
            Some(Caller { name: "bob".into(), role: Role::Operator, kind: CallerKind::Token })
        );
        assert_eq!(set.authenticate("t2").unwrap().actor(), "api:bob");
        assert_eq!(set.authenticate("t1").unwrap().role, Role::Viewer);
        assert_eq!(set.authenticate("t3"), None);
        assert_eq!(set.authenticate(""), None);
    }

    #[test]
    fn hash_from_sha256sum_output_matches_token() {
        // printf %s secret | sha256sum
        let hash: TokenHash = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b".parse().unwrap();
        assert_eq!(hash, TokenHash::of("secret"));
        assert!("abc".parse::<TokenHash>().is_err());
        assert!("zz".repeat(32).parse::<TokenHash>().is_err());
    }

    #[test]
    fn duplicate_names_and_hashes_are_all_reported() {
        let err = TokenSet::new(vec![
            entry("a", Role::Viewer, "x"),
            entry("a", Role::Operator, "y"),
            entry("b", Role::Viewer, "x"),
            entry(" ", Role::Viewer, "z"),
        ])
        .unwrap_err();
        let TokensError::Invalid { problems } = err else { panic!("{err}") };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn tokens_file_errors_carry_line_and_column() {
        let dir = iotgw_test_support::services::scratch("tokens");
        let path = dir.join("tokens.toml");
        std::fs::write(&path, "[[tokens]]\nname = \"a\"\nrole = \"root\"\ntoken_sha256 = \"00\"\n").unwrap();
        let config = crate::api::Config { tokens_file: Some(path.clone()), ..Default::default() };
        let text = TokenSet::load(&config).unwrap_err().to_string();
        assert!(text.contains("tokens.toml:3:"), "{text}");
        std::fs::write(
            &path,
            format!("[[tokens]]\nname = \"a\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n", "ab".repeat(32)),
        )
        .unwrap();
        let set = TokenSet::load(&config).unwrap();
        assert!(!set.is_empty());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_others_refused() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
