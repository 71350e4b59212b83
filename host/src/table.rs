//! The one table printer behind every listing the command line prints (`runs`,
//! `models`, `reviews`, `approvals`, `checkpoints`).
//!
//! Plain columns, built with `comfy-table` and no borders: a header line, then one line
//! per row, each column as wide as its widest cell and followed by two spaces, no
//! trailing whitespace. The output stays easy to read with `grep` and `awk`, and a row
//! is always one line (a line break in a cell becomes a space), so a caller may put
//! lines of its own after a row (see `attempts::review::render`). Callers still
//! escape guest text (see [`crate::guest_text`]) and clip long text.

use comfy_table::CellAlignment;
use comfy_table::presets::NOTHING;

/// A table being built: columns first, then rows.
pub struct Table {
    inner: comfy_table::Table,
    header: Vec<String>,
    right: Vec<usize>,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table without columns.
    pub fn new() -> Table {
        let mut inner = comfy_table::Table::new();
        inner.load_style(NOTHING);
        Table {
            inner,
            header: Vec::new(),
            right: Vec::new(),
        }
    }

    /// Add a column whose header and cells are aligned to the left (text).
    pub fn left(mut self, header: &str) -> Table {
        self.header.push(header.to_string());
        self
    }

    /// Add a column whose header and cells are aligned to the right (numbers).
    pub fn right(mut self, header: &str) -> Table {
        self.right.push(self.header.len());
        self.header.push(header.to_string());
        self
    }

    /// Add a row: one cell per column, in the order they were added.
    pub fn row<I>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        let cells: Vec<String> = cells
            .into_iter()
            .map(|c| c.to_string().replace(['\n', '\r'], " "))
            .collect();
        self.inner.add_row(cells);
        self
    }

    /// The table's lines: the header, then one per row, without line ends.
    pub fn lines(&mut self) -> Vec<String> {
        self.inner.set_header(self.header.clone());
        let last = self.header.len().saturating_sub(1);
        for (i, column) in self.inner.column_iter_mut().enumerate() {
            column.set_padding((0, if i == last { 0 } else { 2 }));
            if self.right.contains(&i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        self.inner
            .lines()
            .map(|line| line.trim_end().to_string())
            .collect()
    }

    /// The table as text: [`Table::lines`], each ended by a newline.
    pub fn render(mut self) -> String {
        self.lines().into_iter().map(|l| l + "\n").collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_columns_two_spaces_apart_numbers_right_no_trailing_space() {
        let mut t = Table::new().left("name").right("cost").left("note");
        t.row(["alpha", "$1.0000", "first"]);
        t.row(["b", "$12.5000", ""]);
        assert_eq!(
            t.render(),
            "name       cost  note\n\
             alpha   $1.0000  first\n\
             b      $12.5000\n"
        );
    }

    #[test]
    fn a_row_is_one_line_whatever_its_cells_hold() {
        let mut t = Table::new().left("id").left("note");
        t.row(["1", "two\nlines\r"]);
        assert_eq!(t.lines(), ["id  note", "1   two lines"]);
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new().left("id").right("bytes");
        assert_eq!(t.render(), "id  bytes\n");
    }
}
