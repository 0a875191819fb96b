//! Where a TOML error points, for the `file:line:column: message` reports of every file the
//! gateway reads (its configuration, the API token file, the policy files and their
//! `[[response]]` rules). Reads text and `toml` errors; depends on nothing else in the crate.

/// The 1-based line and column of byte `offset` in `text` (clamped to the text's end), as
/// editors show them: columns count characters, not bytes, so non-ASCII text earlier on the
/// line does not shift them.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Where each line of a text starts, so many offsets are located without rescanning the text
/// before each (a policy of 10,000 rules locates every rule: scanning is quadratic).
pub struct LineStarts {
    starts: Vec<usize>,
}

impl LineStarts {
    pub fn new(text: &str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(index, _)| index + 1)).collect();
        Self { starts }
    }

    /// `line_column(text, offset)` for the `text` this was made from.
    pub fn line_column(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        let column = text.get(line_start..offset).map_or(0, |part| part.chars().count()) + 1;
        (line, column)
    }
}

/// The line and column `error` points at in `text`, `None` when it carries no place.
pub fn position(text: &str, error: &toml::de::Error) -> Option<(usize, usize)> {
    error.span().map(|span| line_column(text, span.start))
}

/// toml's message on one line, without its own rendering of the place (the caller prints
/// `file:line:column`).
pub fn message(error: &toml::de::Error) -> String {
    error.message().trim().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_starts_locate_like_a_scan() {
        let text = "a = 1\n\nb = \"\u{e9}t\u{e9}\"\nc";
        let lines = super::LineStarts::new(text);
        for offset in 0..=text.len() + 2 {
            if text.is_char_boundary(offset.min(text.len())) {
                assert_eq!(lines.line_column(text, offset), super::line_column(text, offset), "offset {offset}");
            }
        }
    }

    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let text = "a = 1\n# \u{e9}t\u{e9}\nb = [\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        let after_accents = text.find("t\u{e9}\n").expect("fixture") + "t\u{e9}".len();
        assert_eq!(line_column(text, after_accents), (2, 6));
        assert_eq!(line_column(text, text.len() + 10), (4, 1));
    }

    #[test]
    fn a_toml_error_is_placed_and_its_message_kept_on_one_line() {
        let text = "[t]\nkey = \n";
        let error = toml::from_str::<toml::Table>(text).expect_err("no value");
        assert_eq!(position(text, &error).map(|(line, _)| line), Some(2));
        assert!(!message(&error).contains('\n'), "{}", message(&error));
    }
}
