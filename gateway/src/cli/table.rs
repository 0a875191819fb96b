//! Plain-text tables, times and JSON for the commands that print what the API answered.
use std::io::Write;

/// Writes `rows` under `header`, each column as wide as its widest cell.
pub fn write_table<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `value` as indented JSON and a line break (the commands' `--json`).
pub fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// `time` in RFC 3339, to the second.
pub fn rfc3339(time: time::OffsetDateTime) -> String {
    time.replace_nanosecond(0)
        .unwrap_or(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align_to_the_widest_cell() {
        let mut out = Vec::new();
        write_table(&mut out, ["A", "B"], &[["long cell".into(), "x".into()], ["s".into(), "y".into()]]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "A          B\nlong cell  x\ns          y\n");
    }
}
