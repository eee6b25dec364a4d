"""The reports' one Markdown table layout (compression.markdown), through pandas."""

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from compression.markdown import markdown_table

# Cells as the reports write them: text without pipes or newlines, no outer spaces.
CELL = st.text(st.sampled_from("ab:%.+-e0123456789 x()"), max_size=12).map(str.strip)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5).flatmap(lambda cols: st.tuples(
    st.lists(st.text("abcdefgh", min_size=1, max_size=6), min_size=cols, max_size=cols,
             unique=True),
    st.lists(st.lists(CELL, min_size=cols, max_size=cols), max_size=6))))
def test_table_reads_back_cell_for_cell(case):
    columns, rows = case
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    right = columns[::2]
    lines = markdown_table(frame, right_aligned=right).split("\n")
    assert lines[0] == "| " + " | ".join(columns) + " |"
    assert lines[1] == "|" + "".join("---:|" if c in right else "---|" for c in columns)
    # No padding to the column width, no number reformatting: each row is its cells verbatim.
    assert lines[2:] == ["| " + " | ".join(row) + " |" for row in rows]


def test_missing_cells_are_empty_and_numbers_stay_as_written():
    frame = pd.DataFrame({"row": ["dense", "2:4"], "ppl": ["28.40", None], "x": ["1e3", "007"]})
    assert markdown_table(frame, right_aligned=["ppl"]) == (
        "| row | ppl | x |\n|---|---:|---|\n| dense | 28.40 | 1e3 |\n| 2:4 |  | 007 |")
