"""The pruning experiment's grid as data: each row's label, group and configuration.

:mod:`compression.experiment` writes it as JSON beside its results CSV (``<stem>.grid.json``);
:mod:`compression.report` reads it back, so the report never re-derives the grid from the
command line, and finds rows by their configuration (the CSV records the same fields), never by
their label.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from workloads.files import staged_file

GRID_SUFFIX = ".grid.json"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class RowConfig:
    """What a row ran: the CSV columns of the same names identify it."""

    pattern: str  # "2:4", "50%", or "dense"
    method: str  # a pruning method, or "dense"
    salient: str | None = None  # e.g. "16:256", "unstructured(16:256)"
    variance_correction: bool = False
    equalize_alpha: float | None = None
    finetune_steps: int = 0

    @classmethod
    def from_record(cls, record: Mapping) -> RowConfig:
        """From a CSV row or a JSON record (a missing value may be NaN there)."""
        salient, alpha = record.get("salient"), record.get("equalize_alpha")
        return cls(pattern=str(record["pattern"]), method=str(record["method"]),
                   salient=None if _missing(salient) else str(salient),
                   variance_correction=bool(record.get("variance_correction", False)),
                   equalize_alpha=None if _missing(alpha) else float(alpha),
                   finetune_steps=int(record.get("finetune_steps", 0) or 0))

    def describe(self) -> str:
        """The configuration in words, for messages: 'pattern 2:4, method wanda, ...'."""
        alpha = "none" if self.equalize_alpha is None else f"{self.equalize_alpha:g}"
        return (f"pattern {self.pattern}, method {self.method}, salient {self.salient or 'none'}, "
                f"variance correction {'on' if self.variance_correction else 'off'}, "
                f"equalize alpha {alpha}, fine-tune steps {self.finetune_steps}")


CONFIG_FIELDS = tuple(field.name for field in fields(RowConfig))


@dataclass(frozen=True)
class GridRow:
    label: str
    group: str  # dense, methods, corrections, salient, combination
    config: RowConfig


@dataclass(frozen=True)
class Grid:
    """The rows of one experiment in run order, and the fine-tune steps it was run with."""

    finetune_steps: int
    rows: tuple[GridRow, ...]

    def __post_init__(self) -> None:
        configs = [row.config for row in self.rows]
        if len(set(configs)) != len(configs):
            raise ValueError("the grid names the same configuration twice")

    @property
    def labels(self) -> list[str]:
        return [row.label for row in self.rows]

    def __contains__(self, config: RowConfig) -> bool:
        return any(row.config == config for row in self.rows)

    def write(self, path: str | Path) -> Path:
        """Write the grid as JSON (replacing the file atomically)."""
        path = Path(path)
        record = {"finetune_steps": self.finetune_steps,
                  "rows": [{"label": r.label, "group": r.group, **asdict(r.config)}
                           for r in self.rows]}
        with staged_file(path) as staged:
            staged.write_text(json.dumps(record, indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> Grid:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: the experiment's grid is missing (run the experiment, "
                             "which writes it beside its CSV)")
        try:
            record = json.loads(path.read_text())
            rows = tuple(GridRow(r["label"], r["group"], RowConfig.from_record(r))
                         for r in record["rows"])
            return cls(int(record["finetune_steps"]), rows)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an experiment grid ({exc})") from None


def grid_path(csv_path: str | Path) -> Path:
    """Where the grid of the results in ``csv_path`` lives: ``<stem>.grid.json`` beside it."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + GRID_SUFFIX)
