//! Text from outside the gateway: what may reach a log line, and how the rest is escaped.
//!
//! Devices (DHCP host names, DNS and TLS names, CSR SANs, OTA reports) and callers (API and
//! SOAR reasons, idempotency keys) hand the gateway strings that end up in audit rows,
//! RFC 5424 syslog, CEF, JSON documents and tickets. One such string holding a line break
//! would start a forged record in every line-oriented receiver; a bidi override would make an
//! analyst read a line other than the one stored. The rule is the same everywhere:
//!
//! - **unsafe** characters are the C0 and C1 controls and DEL (`char::is_control`, which
//!   includes U+0085 NEXT LINE), the Unicode line and paragraph separators (U+2028, U+2029) and
//!   the bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A..=U+202E,
//!   U+2066..=U+2069, the "Trojan Source" set, CVE-2021-42574);
//! - free text (reasons, details, host names) is **escaped** where it enters: `\n`, `\r`,
//!   `\t`, and `\uXXXX` (four lower-case hex digits) for the others, so the text stays
//!   readable and whole;
//! - identifiers (SAN URIs, idempotency keys, classes) are **refused** with `check`.
//!
//! Renderers (`integrations::syslog`, `integrations::cef`, every sink through
//! `integrations::delivery`) escape again, as a second line: `escape` is idempotent (its
//! output holds no unsafe character), so text escaped at the edge passes through unchanged.
//! A backslash is left alone, which keeps that property: a literal `\n` typed by a caller reads
//! the same as an escaped line feed, but neither breaks a line.
//!
//! Reads and writes nothing.
use std::{borrow::Cow, fmt::Write as _};

/// Whether `c` may not appear as such in stored or rendered text.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` holds no unsafe character.
pub fn is_safe(text: &str) -> bool {
    !text.chars().any(is_unsafe)
}

/// Appends the escaped form of one unsafe character.
fn push_escaped(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Every unsafe character is in the Basic Multilingual Plane: four digits suffice.
        c => {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
    }
}

/// `text` with every unsafe character escaped; borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if is_safe(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            push_escaped(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `escape(text)` cut to at most `max_bytes`, never inside a character or an escape.
pub fn escape_bounded(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    let mut one = String::new();
    for c in text.chars() {
        one.clear();
        if is_unsafe(c) {
            push_escaped(c, &mut one);
        } else {
            one.push(c);
        }
        if out.len() + one.len() > max_bytes {
            break;
        }
        out.push_str(&one);
    }
    out
}

/// An identifier holding an unsafe character.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} holds a control, line-separator or bidi character (U+{code:04X} at byte {at}): \"{escaped}\"")]
pub struct UnsafeText {
    pub field: &'static str,
    /// The first unsafe character.
    pub code: u32,
    /// Its byte offset.
    pub at: usize,
    /// The whole value, escaped, so the refusal itself can be logged.
    pub escaped: String,
}

/// Refuses `text` when it holds an unsafe character (for identifiers, which must not change).
pub fn check(field: &'static str, text: &str) -> Result<(), UnsafeText> {
    match text.char_indices().find(|(_, c)| is_unsafe(*c)) {
        None => Ok(()),
        Some((at, c)) => Err(UnsafeText { field, code: u32::from(c), at, escaped: escape(text).into_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line breaks of every kind a receiver may split on, and the bidi overrides.
    const FORGED: &str =
        "ok\n<13>1 - forged\r\u{85}x\u{2028}y\u{2029}z\u{202e}gnp.exe\u{2066}i\u{2069}\u{0}\u{7f}\u{1b}[31m\tend";

    #[test]
    fn every_line_break_and_bidi_control_is_escaped_and_readable() {
        let escaped = escape(FORGED);
        assert!(is_safe(&escaped), "{escaped:?}");
        assert!(!escaped.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}']), "{escaped:?}");
        assert_eq!(
            escaped,
            "ok\\n<13>1 - forged\\r\\u0085x\\u2028y\\u2029z\\u202egnp.exe\\u2066i\\u2069\\u0000\\u007f\\u001b[31m\\tend"
        );
    }

    #[test]
    fn escaping_is_idempotent_and_leaves_clean_text_borrowed() {
        let once = escape(FORGED).into_owned();
        assert_eq!(escape(&once), once);
        assert!(matches!(escape("café | \"x\" = [y] \\ z"), Cow::Borrowed(_)));
        // Letters of right-to-left scripts are text, not controls.
        assert!(is_safe("שלום مرحبا"));
    }

    #[test]
    fn bounded_escape_never_cuts_an_escape_or_a_character() {
        assert_eq!(escape_bounded("ab\ncd", 3), "ab");
        assert_eq!(escape_bounded("ab\ncd", 4), "ab\\n");
        assert_eq!(escape_bounded("aé", 2), "a");
        assert_eq!(escape_bounded(FORGED, 10_000), escape(FORGED));
    }

    #[test]
    fn identifiers_with_unsafe_characters_are_refused_with_the_escaped_value() {
        assert_eq!(check("key", "run-1"), Ok(()));
        let refused = check("key", "a\u{2028}b").unwrap_err();
        assert_eq!((refused.code, refused.at), (0x2028, 1));
        assert!(!refused.to_string().contains('\u{2028}'), "{refused}");
        assert!(refused.to_string().contains("a\\u2028b"), "{refused}");
    }
}
