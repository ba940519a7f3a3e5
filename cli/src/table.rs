//! A small table printer in the ASCII-box style of HStreamDB's `hstream` command:
//!
//! ```text
//! +-------------+---------+----------------+-------------+------------+
//! | Stream Name | Replica | Retention Time | Shard Count | Durability |
//! +-------------+---------+----------------+-------------+------------+
//! | orders      | 1       | 7d             | 4           | fsync      |
//! +-------------+---------+----------------+-------------+------------+
//! ```
//!
//! Widths count characters (not terminal cells: wide characters may misalign, which a name
//! of `[A-Za-z0-9_.-]` never has). Control characters in cells are escaped so one row is
//! always one line.

use std::fmt::Write as _;

/// A table: a header row and data rows of the same number of cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and no rows.
    pub fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.headers.len(),
            "a row needs one cell per column"
        );
        self.rows
            .push(cells.into_iter().map(|cell| escape_cell(&cell)).collect());
    }

    /// The table as text, each line ending with a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut border = String::from("+");
        for width in &widths {
            border.push_str(&"-".repeat(width + 2));
            border.push('+');
        }
        border.push('\n');
        let mut text = border.clone();
        push_row(&mut text, &self.headers, &widths);
        text.push_str(&border);
        for row in &self.rows {
            push_row(&mut text, row, &widths);
        }
        if !self.rows.is_empty() {
            text.push_str(&border);
        }
        text
    }
}

fn push_row(text: &mut String, cells: &[String], widths: &[usize]) {
    text.push('|');
    for (cell, width) in cells.iter().zip(widths) {
        // Writing to a String cannot fail.
        let _ = write!(text, " {cell:<width$} |");
    }
    text.push('\n');
}

/// The cell with control characters escaped (`\n`, `\t`, `\r`, `\u{…}`).
fn escape_cell(cell: &str) -> String {
    if !cell.chars().any(char::is_control) {
        return cell.to_owned();
    }
    cell.chars()
        .map(|c| match c {
            '\n' => "\\n".to_owned(),
            '\t' => "\\t".to_owned(),
            '\r' => "\\r".to_owned(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns are as wide as their widest cell; borders frame the header and the rows.
    #[test]
    fn renders_hstream_style_boxes() {
        let mut table = Table::new(["Stream Name", "Replica", "Retention Time", "Shard Count"]);
        table.row(vec!["orders".into(), "1".into(), "7d".into(), "4".into()]);
        table.row(vec![
            "a-much-longer-stream-name".into(),
            "3".into(),
            "1h30m".into(),
            "65536".into(),
        ]);
        let expected = "\
+---------------------------+---------+----------------+-------------+
| Stream Name               | Replica | Retention Time | Shard Count |
+---------------------------+---------+----------------+-------------+
| orders                    | 1       | 7d             | 4           |
| a-much-longer-stream-name | 3       | 1h30m          | 65536       |
+---------------------------+---------+----------------+-------------+
";
        assert_eq!(table.render(), expected);
    }

    /// An empty table is its header alone.
    #[test]
    fn an_empty_table_shows_its_header() {
        let table = Table::new(["Shard ID", "Status"]);
        assert_eq!(
            table.render(),
            "+----------+--------+\n| Shard ID | Status |\n+----------+--------+\n"
        );
    }

    /// Control characters cannot break a row across lines; widths count characters.
    #[test]
    fn cells_stay_on_one_line() {
        let mut table = Table::new(["K"]);
        table.row(vec!["a\nb\tc\u{7}".into()]);
        table.row(vec!["héllo".into()]);
        let text = table.render();
        assert_eq!(text.lines().count(), 6);
        assert!(text.contains("| a\\nb\\tc\\u{7} |"), "{text}");
        assert!(text.contains("| héllo        |"), "{text}");
    }

    /// A row of the wrong length is a bug in the caller.
    #[test]
    #[should_panic(expected = "one cell per column")]
    fn rows_must_match_the_header() {
        Table::new(["A", "B"]).row(vec!["1".into()]);
    }
}
