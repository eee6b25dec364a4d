"""The simulator against published A100/H100 measurements (``validation/published_gpu.csv``).

Each row of the table is one published figure: a GEMM or GEMV (m x n x k, dense or 2:4), or a
whole-model decode (a model of :mod:`workloads.models`, a batch, prompt and generated lengths),
measured with a named library on a named GPU, with its source. ``validate_table`` simulates every
row on the preset of its GPU (``a100-like``, ``h100-like``) and returns the predicted figure in
the row's own metric next to the measured one.

Rows are split in two halves by the number in their id: even ids are the *fit* half (the
calibrated preset fields were chosen on them, :func:`fit_fields`), odd ids the *held-out* half.
Rows whose ``scope`` starts with ``excluded`` (a dtype the presets do not model, a variant
without a preset, an immature kernel or a host overhead named by the source) are simulated and
reported but left out of the medians.
"""

from __future__ import annotations

import csv
import math
import statistics
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from compression.markdown import markdown_table
from workloads.files import staged_file, written_by_us
from workloads.models import ARCHITECTURES, GEMM, elementwise_ops, gemms

from .config import HardwareConfig, load_hardware
from .simulate import simulate_gemm, simulate_workload

DEFAULT_TABLE = Path(__file__).resolve().parent.parent / "validation" / "published_gpu.csv"
GPU_PRESETS = {"A100": "a100-like", "H100": "h100-like"}
KINDS = ("gemm", "gemv", "decode")
METRICS = ("tflops", "time_us", "tokens_per_s", "speedup_vs_dense")
PATTERNS = ("dense", "2:4")
# Value dtypes the presets run (fp16 and bf16 move the same bytes at the same tensor-core rate;
# int8 weight-only decode moves one byte per weight); the others may only appear excluded.
SIMULATED_DTYPES = {"fp16": "fp16", "bf16": "bf16", "int8": "int8"}
OTHER_DTYPES = ("fp8", "int4")
COLUMNS = ("id", "gpu", "variant", "kind", "library", "dtype", "m", "n", "k", "batch", "model",
           "pattern", "metric", "value", "unit", "baseline_value", "input_len", "output_len",
           "clock_mhz", "scope", "source", "locator", "note")
# Preset fields set by calibration; "datasheet only" resets them to the ideal machine.
CALIBRATED_FIELDS = {"sustained_clock_ghz": None, "dram_efficiency": 1.0,
                     "launch_overhead_us": 0.0, "operand_bytes_per_cycle": 0.0,
                     "library_tiles": (), "max_split_k": 1}


@dataclass(frozen=True)
class Measurement:
    """One validated row of the published table (``line``: its line in the file)."""

    id: str
    line: int
    gpu: str
    preset: str
    kind: str
    dtype: str
    m: int
    n: int
    k: int
    batch: int
    model: str
    pattern: str
    metric: str
    value: float
    input_len: int
    output_len: int
    clock_mhz: int  # the tensor-core clock when the source locked it (0: the preset's sustained)
    scope: str
    library: str
    source: str

    @property
    def scored(self) -> bool:
        return self.scope == "scored"

    @property
    def held_out(self) -> bool:
        """Odd ids are held out; even ids are the half the calibration was fitted on."""
        return int("".join(ch for ch in self.id if ch.isdigit())) % 2 == 1


def _int(text: str, name: str, where: str, required: bool) -> int:
    if not text.strip():
        if required:
            raise ValueError(f"{where}: {name} is empty")
        return 0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {name} '{text}' is not a number") from None
    if value <= 0 or value != int(value):
        raise ValueError(f"{where}: {name} must be a positive integer, got '{text}'")
    return int(value)


def _row(raw: dict, where: str, presets: dict) -> Measurement:
    """A :class:`Measurement` from one CSV row, or a ValueError naming file, line and field."""
    gpu = raw["gpu"].strip()
    preset = presets.get(gpu)
    if preset is None:
        raise ValueError(f"{where}: unknown gpu '{gpu}' (no preset; known: "
                         f"{', '.join(sorted(presets))})")
    checks = (("kind", KINDS), ("metric", METRICS), ("pattern", PATTERNS),
              ("dtype", tuple(SIMULATED_DTYPES) + OTHER_DTYPES))
    for name, allowed in checks:
        if raw[name].strip() not in allowed:
            raise ValueError(f"{where}: {name} '{raw[name]}' is not one of {', '.join(allowed)}")
    scope = raw["scope"].strip()
    if scope != "scored" and not scope.startswith("excluded:"):
        raise ValueError(f"{where}: scope must be 'scored' or 'excluded: <reason>', got "
                         f"'{scope}'")
    if not raw["source"].strip():
        raise ValueError(f"{where}: source is empty (every measurement needs its source)")
    if scope == "scored" and raw["dtype"].strip() in OTHER_DTYPES:
        raise ValueError(f"{where}: dtype {raw['dtype']} is not simulated; the row must be "
                         "excluded")
    decode = raw["kind"].strip() == "decode"
    if decode and raw["model"].strip() not in ARCHITECTURES:
        raise ValueError(f"{where}: model '{raw['model']}' is not one of "
                         f"{', '.join(ARCHITECTURES)}")
    try:
        value = float(raw["value"])
    except ValueError:
        raise ValueError(f"{where}: value '{raw['value']}' is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{where}: value must be positive, got '{raw['value']}'")
    sizes = {name: _int(raw[name], name, where, required=not decode) for name in "mnk"}
    lengths = {name: _int(raw[name], name, where, required=decode and scope == "scored")
               for name in ("batch", "input_len", "output_len")}
    lengths["clock_mhz"] = _int(raw["clock_mhz"], "clock_mhz", where, required=False)
    return Measurement(
        id=raw["id"].strip(), line=0, gpu=gpu, preset=preset, kind=raw["kind"].strip(),
        dtype=raw["dtype"].strip(), **sizes, **lengths, model=raw["model"].strip(),
        pattern=raw["pattern"].strip(), metric=raw["metric"].strip(), value=value, scope=scope,
        library=raw["library"].strip(), source=raw["source"].strip())


def load_table(path: str | Path = DEFAULT_TABLE, presets: dict | None = None
               ) -> list[Measurement]:
    """Every row of a published-measurement CSV, validated; the first problem is a ValueError
    ``FILE:LINE: ...`` (an unknown gpu, a missing column, a non-numeric size...)."""
    path = Path(path)
    presets = GPU_PRESETS if presets is None else presets
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}:1: missing column(s): {', '.join(missing)}")
        rows, seen = [], set()
        for raw in reader:
            where = f"{path}:{reader.line_num}"
            row = replace(_row(raw, where, presets), line=reader.line_num)
            if row.id in seen:
                raise ValueError(f"{where}: duplicate id '{row.id}'")
            seen.add(row.id)
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no measurements")
    return rows


def datasheet_only(hw: HardwareConfig) -> HardwareConfig:
    """``hw`` with every calibrated field reset: the ideal machine at its datasheet peaks."""
    return hw.replace(**CALIBRATED_FIELDS)


class _Simulator:
    """Simulated figures of table rows on a set of presets, with equal work simulated once."""

    def __init__(self, presets: dict[str, HardwareConfig]):
        self.presets = presets
        self.cache: dict = {}

    def hardware(self, row: Measurement, pattern: str) -> HardwareConfig:
        hw = self.presets[row.preset].run_at(pattern).replace(dtype=SIMULATED_DTYPES[row.dtype])
        if row.clock_mhz:  # a locked clock runs at that clock, capped at the boost clock
            hw = hw.replace(sustained_clock_ghz=min(row.clock_mhz / 1e3, hw.clock_ghz))
        return hw

    def gemm_seconds(self, row: Measurement, pattern: str) -> float:
        key = ("gemm", row.preset, row.dtype, row.clock_mhz, pattern, row.m, row.n, row.k)
        if key not in self.cache:
            hw = self.hardware(row, pattern)
            result = simulate_gemm(hw, GEMM(row.id, row.m, row.n, row.k, 1, "w"))
            self.cache[key] = result.total_cycles / (hw.run_clock_ghz * 1e9)
        return self.cache[key]

    def decode_seconds(self, row: Measurement, pattern: str) -> float:
        """One request: the prompt's prefill, then ``output_len`` decode steps, each simulated
        at the mean context length (attention work is linear in it), non-GEMM kernels
        included."""
        key = ("decode", row.preset, row.dtype, row.clock_mhz, pattern, row.model, row.batch,
               row.input_len, row.output_len)
        if key not in self.cache:
            hw = self.hardware(row, pattern)
            kv = row.input_len + (row.output_len + 1) // 2
            total = 0.0
            for phase, seq, repeat in (("prefill", row.input_len, 1),
                                       ("decode", kv, row.output_len)):
                args = {"seq": seq, "batch": row.batch}
                result = simulate_workload(hw, gemms(row.model, phase, **args),
                                           elementwise=elementwise_ops(row.model, phase, **args))
                total += repeat * result.total_cycles / (hw.run_clock_ghz * 1e9)
            self.cache[key] = total
        return self.cache[key]

    def predict(self, row: Measurement) -> float:
        """The simulated figure in the row's metric."""
        seconds = self.decode_seconds if row.kind == "decode" else self.gemm_seconds
        if row.metric == "speedup_vs_dense":
            return seconds(row, "dense") / seconds(row, row.pattern)
        t = seconds(row, row.pattern)
        if row.metric == "time_us":
            return t * 1e6
        if row.metric == "tflops":
            return 2.0 * row.m * row.n * row.k / t / 1e12
        return row.batch * row.output_len / t  # tokens_per_s


def validate_table(rows: list[Measurement], presets: dict[str, HardwareConfig] | None = None
                   ) -> list[dict]:
    """One record per row: measured, predicted and the relative error (predicted / measured
    - 1) in the row's metric. ``presets``: preset name -> design (default: the shipped ones)."""
    presets = presets or {name: load_hardware(name) for name in GPU_PRESETS.values()}
    sim = _Simulator(presets)
    out = []
    for row in rows:
        # listed, not simulated: a dtype the presets do not run, a decode without its lengths
        skip = row.dtype not in SIMULATED_DTYPES or (row.kind == "decode" and not row.output_len)
        predicted = None if skip else sim.predict(row)
        out.append({"id": row.id, "line": row.line, "gpu": row.gpu, "preset": row.preset,
                    "kind": row.kind, "pattern": row.pattern, "dtype": row.dtype,
                    "shape": (f"{row.model} b{row.batch} {row.input_len}+{row.output_len}"
                              if row.kind == "decode" else f"{row.m}x{row.n}x{row.k}"),
                    "library": row.library, "metric": row.metric, "measured": row.value,
                    "predicted": predicted,
                    "error": None if predicted is None else predicted / row.value - 1,
                    "half": "held-out" if row.held_out else "fit", "scope": row.scope,
                    "source": row.source})
    return out


def summarize(records: list[dict]) -> list[dict]:
    """Median |error| of the scored rows per pattern (dense, 2:4) over the whole table, the fit
    half and the held-out half."""
    out = []
    for pattern in PATTERNS:
        for half in ("all", "fit", "held-out"):
            errors = [abs(r["error"]) for r in records if r["scope"] == "scored"
                      and r["pattern"] == pattern and half in ("all", r["half"])]
            out.append({"pattern": pattern, "half": half, "rows": len(errors),
                        "median_abs_error": statistics.median(errors) if errors else None})
    return out


def fit_fields(rows: list[Measurement], hw: HardwareConfig, grids: dict[str, list],
               rounds: int = 2) -> tuple[HardwareConfig, float]:
    """Coordinate descent over ``grids`` (field -> candidate values) minimising the mean
    |log(predicted / measured)| of the scored fit-half rows of ``hw``'s preset; returns the
    fitted design and its loss. Used to calibrate the presets (see docs/validation.md)."""
    fit_rows = [r for r in rows if r.scored and not r.held_out and r.preset == hw.name]

    def loss(design: HardwareConfig) -> float:
        records = validate_table(fit_rows, {hw.name: design})
        return statistics.fmean(abs(math.log1p(r["error"])) for r in records)

    best, best_loss = hw, loss(hw)
    for _ in range(rounds):
        for name, values in grids.items():
            for value in values:
                trial = best.replace(**{name: value})
                trial_loss = loss(trial)
                if trial_loss < best_loss - 1e-12:
                    best, best_loss = trial, trial_loss
    return best, best_loss


REPORT_FIELDS = ("id", "gpu", "preset", "kind", "pattern", "dtype", "shape", "library", "metric",
                 "measured", "predicted", "error", "half", "scope", "source")
REPORT_TITLE = "# Simulator vs published A100/H100 measurements"
PLOT_SOFTWARE = "nmsim validate --published"  # PNG tEXt tag: marks a parity plot we wrote
REPORT_FILES = ("published_gpu.csv", "published_gpu.md", "published_gpu.png")


def check_report_folder(out_dir: str | Path) -> None:
    """Refuse ``out_dir`` (``ValueError``, nothing touched) unless it is a folder or does not
    exist, and each report file in it is either absent or written by an earlier run of this
    command (the CSV's header, the Markdown title, the PNG's ``Software`` tag), so that a
    re-run never replaces a user's file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; left untouched")
    for name in REPORT_FILES:
        path = out / name
        ours = (written_by_us(path, png_software=PLOT_SOFTWARE) if path.suffix == ".png" else
                written_by_us(path, first_line=(",".join(REPORT_FIELDS) if path.suffix == ".csv"
                                                else REPORT_TITLE) + "\n"))
        if (path.exists() or path.is_symlink()) and not ours:
            raise ValueError(f"{path} exists and was not written by nmsim validate --published; "
                             "left untouched - choose another --out")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(value) -> str:
    return "-" if value is None else f"{value:+.1%}"


def report_markdown(records: list[dict], summary: list[dict], table: str, seconds: float
                    ) -> str:
    """The Markdown report: medians per pattern and half, then every row."""
    lines = [REPORT_TITLE, "",
             f"Table: `{table}` ({len(records)} rows, "
             f"{sum(r['scope'] == 'scored' for r in records)} scored). Each row simulated on the "
             "preset of its GPU; error = predicted / measured - 1 in the row's metric. Fit half: "
             "even ids (the calibrated preset fields were fitted on them); held-out: odd ids. "
             f"Generated by `nmsim validate --published` in {seconds:.1f} s.", "",
             markdown_table(_summary_cells(summary)), "", "![parity](published_gpu.png)", "",
             markdown_table(pd.DataFrame({
                 **{key: [str(r[key]) for r in records]
                    for key in ("id", "gpu", "kind", "pattern", "shape", "metric")},
                 "measured": [_fmt(r["measured"]) for r in records],
                 "predicted": [_fmt(r["predicted"]) for r in records],
                 "error": [_pct(r["error"]) for r in records],
                 "half": [str(r["half"]) for r in records],
                 "scope": [str(r["scope"]) for r in records]}))]
    return "\n".join(lines) + "\n"


def _summary_cells(summary: list[dict]) -> pd.DataFrame:
    """Median absolute error per pattern: over all scored rows, the fit half, the held-out half
    (each with its row count)."""
    by_key = {(s["pattern"], s["half"]): s for s in summary}
    halves = {"median abs error (all scored)": "all", "fit half": "fit",
              "held-out half": "held-out"}
    return pd.DataFrame({
        "pattern": list(PATTERNS),
        "rows": [str(by_key[(p, "all")]["rows"]) for p in PATTERNS],
        **{title: [f"{_pct(by_key[(p, h)]['median_abs_error']).lstrip('+')} "
                   f"({by_key[(p, h)]['rows']})" for p in PATTERNS]
           for title, h in halves.items()}})


def parity_plot(records: list[dict], path: Path) -> None:
    """Predicted vs measured, log-log, one marker per pattern, held-out filled, fit hollow,
    excluded rows as grey crosses; the diagonal with +-15% lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6.5))
    colors = {"A100": "tab:blue", "H100": "tab:orange"}
    shown = [r for r in records if r["predicted"] is not None]
    for r in shown:
        if r["scope"] != "scored":
            ax.scatter(r["measured"], r["predicted"], marker="x", color="0.6", s=20, zorder=1)
            continue
        marker = "o" if r["pattern"] == "dense" else "^"
        held = r["half"] == "held-out"
        ax.scatter(r["measured"], r["predicted"], marker=marker, s=46, zorder=3,
                   facecolors=colors[r["gpu"]] if held else "none",
                   edgecolors=colors[r["gpu"]], linewidths=1.4)
    values = [v for r in shown for v in (r["measured"], r["predicted"])]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.plot([lo, hi], [lo, hi], color="k", lw=1)
    for f in (0.85, 1.15):
        ax.plot([lo, hi], [lo * f, hi * f], color="k", lw=0.6, ls="--")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel="measured (row's metric: TFLOP/s, us, tokens/s or speedup x)",
           ylabel="predicted by the simulator (same metric)",
           title="accel_sim presets vs published A100/H100 measurements")
    handles = [
        plt.Line2D([], [], marker="o", ls="", color="k", mfc="k", label="dense, held-out"),
        plt.Line2D([], [], marker="o", ls="", color="k", mfc="none", label="dense, fit half"),
        plt.Line2D([], [], marker="^", ls="", color="k", mfc="k", label="2:4, held-out"),
        plt.Line2D([], [], marker="^", ls="", color="k", mfc="none", label="2:4, fit half"),
        plt.Line2D([], [], marker="x", ls="", color="0.6", label="excluded (not scored)"),
        plt.Line2D([], [], marker="s", ls="", color="tab:blue", label="A100"),
        plt.Line2D([], [], marker="s", ls="", color="tab:orange", label="H100"),
        plt.Line2D([], [], color="k", ls="--", lw=0.6, label="+-15%"),
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.grid(True, which="major", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=160, format="png", metadata={"Software": PLOT_SOFTWARE})
    plt.close(fig)


def write_report(records: list[dict], summary: list[dict], out_dir: str | Path, table: str,
                 seconds: float) -> list[Path]:
    """``published_gpu.csv``, ``.md`` and ``.png`` in ``out_dir`` (see
    :func:`check_report_folder`), each staged under a new hidden name and moved into place only
    when all three are written (:func:`workloads.files.staged_file`), so a failure leaves no
    half-written file and no other file is touched."""
    check_report_folder(out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in REPORT_FILES]
    with ExitStack() as stack:
        csv_path, md_path, png_path = (stack.enter_context(staged_file(p)) for p in paths)
        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=REPORT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
        md_path.write_text(report_markdown(records, summary, table, seconds))
        parity_plot(records, png_path)
    return paths


def fit_grids(hw: HardwareConfig) -> dict[str, list]:
    """The search grids the shipped presets were fitted with: the sustained clock from 0.45 GHz
    below the boost clock up to it, the HBM fraction 0.60-1.00, 0-8 us per launch, 48-176
    shared-memory bytes per cycle."""
    top = hw.clock_ghz
    return {
        "sustained_clock_ghz": [round(top - 0.03 * i, 3) for i in range(15, -1, -1)],
        "dram_efficiency": [round(0.6 + 0.05 * i, 3) for i in range(9)],
        "launch_overhead_us": [float(i) for i in range(9)],
        "operand_bytes_per_cycle": [float(b) for b in range(48, 177, 16)],
    }


if __name__ == "__main__":  # python -m accel_sim.published PRESET: refit one preset
    import sys

    for name in sys.argv[1:] or list(GPU_PRESETS.values()):
        design = load_hardware(name)
        fitted, fit_loss = fit_fields(load_table(), design, fit_grids(design))
        print(name, {f: getattr(fitted, f) for f in fit_grids(design)},
              f"mean |log error| on the fit half {fit_loss:.4f}")
