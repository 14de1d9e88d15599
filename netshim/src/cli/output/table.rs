//! The CLI's text tables: comfy-table lays out the columns, one space apart, each as wide
//! as its widest cell and at least as wide as it always was. A 15-byte interface name
//! widens its column instead of pushing the rest of its row out of line.

use comfy_table::{
    CellAlignment, ColumnConstraint, ContentArrangement, ContentLineStyle, Row, Table, TableStyle,
    Width,
};

/// One column: its header, its least width and which side its cells keep to.
#[derive(Clone, Copy)]
pub(super) struct Column {
    header: &'static str,
    min: u16,
    right: bool,
}

/// A column whose cells keep to the left.
pub(super) const fn left(header: &'static str, min: u16) -> Column {
    Column {
        header,
        min,
        right: false,
    }
}

/// A column whose cells keep to the right (numbers).
pub(super) const fn right(header: &'static str, min: u16) -> Column {
    Column {
        header,
        min,
        right: true,
    }
}

/// A laid-out table: its lines (the header's first, when it has one, then one per row) and
/// the width of each column.
#[derive(Debug)]
pub(super) struct Laid {
    pub lines: Vec<String>,
    pub widths: Vec<usize>,
}

/// Lays out `rows` under `columns` (with the header line when `header`). Cells hold no line
/// breaks; each row gives one line.
pub(super) fn lay_out(columns: &[Column], header: bool, rows: Vec<Vec<String>>) -> Laid {
    let mut table = Table::new();
    let spaced = ContentLineStyle::none().junction(' ');
    table
        .load_style(TableStyle::new().header_lines(spaced).content_lines(spaced))
        .set_content_arrangement(ContentArrangement::Disabled);
    if header {
        table.set_header(Row::from(columns.iter().map(|c| c.header)));
    }
    for row in rows {
        table.add_row(row);
    }
    for (column, spec) in table.column_iter_mut().zip(columns) {
        column.set_padding((0, 0));
        column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(spec.min)));
        column.set_cell_alignment(match spec.right {
            true => CellAlignment::Right,
            false => CellAlignment::Left,
        });
    }
    let widths = table
        .column_max_content_widths()
        .iter()
        .zip(columns)
        .map(|(&w, spec)| usize::from(w.max(spec.min)))
        .collect();
    Laid {
        lines: table.lines().collect(),
        widths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_their_width_and_widen_for_a_long_cell() {
        let columns = [left("name", 6), right("n", 3)];
        let short = lay_out(&columns, true, vec![vec!["eth0".into(), "7".into()]]);
        assert_eq!(short.lines, ["name     n", "eth0     7"]);
        let long = lay_out(
            &columns,
            true,
            vec![
                vec!["eth0".into(), "7".into()],
                vec!["a-15-byte-name1".into(), "1500".into()],
            ],
        );
        assert_eq!(
            long.lines,
            [
                "name               n",
                "eth0               7",
                "a-15-byte-name1 1500"
            ]
        );
        assert_eq!(long.widths, [15, 4]);
    }
}
