"""Markdown tables of the committed reports, through pandas (``DataFrame.to_markdown``).

One layout for every report: GitHub pipe tables whose cells are not padded to the column width
(``| a | b |``, then ``|---|---:|``), so a changed number changes one line of a committed report
rather than every line of its table. tabulate (which pandas calls) builds the table; only its
layout is given here, as a :class:`tabulate.TableFormat`.
"""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd
from tabulate import DataRow, TableFormat

_ROW = DataRow("|", "|", "|")


def markdown_table(frame: pd.DataFrame, right_aligned: Collection[str] = ()) -> str:
    """``frame``'s cells (formatted as text by the caller; None or NaN is an empty cell) as a
    pipe table, the columns named in ``right_aligned`` right-aligned. No trailing newline."""
    rule = "|" + "".join("---:|" if column in right_aligned else "---|"
                         for column in frame.columns)
    layout = TableFormat(lineabove=None, linebelowheader=lambda widths, aligns: rule,
                         linebetweenrows=None, linebelow=None, headerrow=_ROW, datarow=_ROW,
                         padding=1, with_header_hide=None)
    return frame.fillna("").to_markdown(index=False, tablefmt=layout, stralign=None, numalign=None,
                             disable_numparse=True)
