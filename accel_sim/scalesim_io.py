"""SCALE-Sim's own inputs and outputs: its ``.cfg`` config, its GEMM topology CSV, and a per-layer
CSV shaped like its ``COMPUTE_REPORT.csv`` (``nmsim simulate --scalesim-config --topology``).

Formats, as SCALE-Sim 3.0.0 (PyPI ``scalesim==3.0.0``: ``scale_config.py``,
``topology_utils.py``, ``simulator.py``) reads and writes them:

* config (INI, ``:`` or ``=``, keys case-insensitive): ``[general] run_name``;
  ``[architecture_presets] ArrayHeight, ArrayWidth, IfmapSramSzkB, FilterSramSzkB,
  OfmapSramSzkB, Dataflow`` (``ws``, ``os``, ``is``) and ``Bandwidth`` (words per cycle, a
  comma list); ``[run_presets] InterfaceBandwidth`` (``CALC`` or ``USER``);
  ``[sparsity] SparsitySupport, SparseRep, OptimizedMapping`` (optional here). Other keys
  (offsets, request buffers, SRAM layout) are read by SCALE-Sim only for its traces; ignored.
* GEMM topology: a header line, then ``name, M, N, K,`` per layer (SCALE-Sim drops the field after
  the last comma), optionally a fifth ``N:M`` sparsity field. ``Y[M, N] = X[M, K] W[K, N]``.
* COMPUTE_REPORT: ``LayerID, Total Cycles (incl. prefetch), Total Cycles, Stall Cycles, Overall
  Util %, Mapping Efficiency %, Compute Util %``. ``Total Cycles`` includes the stalls.

How a config becomes a :class:`HardwareConfig`: a ``systolic`` array of 1-byte words (``int8``:
SCALE-Sim's word size is one byte) at 1 GHz, so bandwidth in GB/s = words per cycle.

* ``CALC`` (SCALE-Sim estimates the bandwidth the array needs, so it never stalls): unlimited
  DRAM bandwidth, no latency, and buffers of :data:`UNBOUNDED_KIB` so that a fold streams its
  whole T (SCALE-Sim never splits T for capacity). Cycles then equal SCALE-Sim's exactly.
* ``USER``: the SRAM sizes become the weight (filter), activation (ifmap) and output (ofmap)
  buffers, the first ``Bandwidth`` figure the one DRAM channel, with no latency. SCALE-Sim v3
  reads the ifmap and filter over separate ``[layout]`` bank bandwidths and writes the ofmap at
  ``Bandwidth``; ours is one shared channel, so stalls differ (reports/validation/scalesim.md).
* Sparsity: with ``SparsitySupport = true`` a layer's ``N:M`` runs on a design supporting the
  topology's patterns, ``index`` metadata (SCALE-Sim's ``ellpack_block`` keeps per-element
  offsets; ``csr``/``csc`` cost it no cycles either), sorted muxes. A tail of t < M columns keeps
  min(N, t) stored weights as SCALE-Sim's does: the ``dense`` tail when t <= N, ``pad`` above.
  Without sparsity support SCALE-Sim ignores the column; so do we. ``OptimizedMapping = true``
  (random N per column) is not modelled and is refused.
"""

from __future__ import annotations

import configparser
import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from compression.formats import FormatError, Pattern
from workloads.files import staged_file, written_by_us

from .config import DATAFLOWS, FIELD_BOUNDS, HardwareConfig
from .mapping import WeightInfo, mapper_for
from .simulate import GemmResult, simulate_gemm

# Buffers for CALC mode: large enough that no GEMM splits a fold's stream (1 TiB each).
UNBOUNDED_KIB = float(2 ** 30)
# CALC mode's ideal memory: the largest bandwidth a hardware description accepts (config
# FIELD_BOUNDS; infinity is refused there), with zero latency. SCALE-Sim's compute cycles do not
# depend on it; the parity tests check that the totals stay exact.
IDEAL_GB_S = FIELD_BOUNDS["dram_bandwidth_gb_s"][1]
WORD_BYTES = 1  # SCALE-Sim 3.0.0 single_layer_sim: word_size = 1 byte
BANDWIDTH_MODES = ("CALC", "USER")
PER_LAYER_HEADER = (
    "LayerID", "Layer name", "Total Cycles", "Stall Cycles", "Overall Util %",
    "Mapping Efficiency %", "Compute Cycles", "M", "N", "K", "Pattern", "Dataflow", "Array",
    "Memory Stall Cycles", "Decode Stall Cycles", "Fill Drain Cycles", "Encoding", "Decoder",
    "Metadata Bytes", "Weight Bytes", "Activation Bytes", "Output Bytes", "Wall s",
)


@dataclass(frozen=True)
class ScaleSimConfig:
    """The fields of a SCALE-Sim config that set cycles."""

    path: str
    run_name: str
    array_rows: int
    array_cols: int
    ifmap_kb: int
    filter_kb: int
    ofmap_kb: int
    dataflow: str
    bandwidth_mode: str
    bandwidth: float | None  # words per cycle (USER mode)
    sparsity_support: bool = False
    sparse_rep: str = ""


@dataclass(frozen=True)
class TopologyLayer:
    """One GEMM row of a SCALE-Sim topology: ``Y[m, n] = X[m, k] W[k, n]``."""

    name: str
    m: int
    n: int
    k: int
    pattern: Pattern | None  # from the sparsity column, None when dense or absent
    line: int


def _line_numbers(lines: list[str]) -> dict[tuple[str, str | None], int]:
    """1-based line of every ``[section]`` header (key None) and ``key`` in it, lower-cased."""
    where: dict[tuple[str, str | None], int] = {}
    section = ""
    for number, text in enumerate(lines, 1):
        stripped = text.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]").strip().lower()
            where.setdefault((section, None), number)
        elif stripped and not stripped.startswith(("#", ";")):
            key = re.split(r"[:=]", stripped, maxsplit=1)[0].strip().lower()
            where.setdefault((section, key), number)
    return where


def _line_of(where: dict, section: str, key: str | None = None) -> int:
    """Line of ``key`` in ``[section]``, else of the section header, else 1."""
    section = section.lower()
    return where.get((section, key and key.lower()), where.get((section, None), 1))


def read_scalesim_config(path: str | Path) -> ScaleSimConfig:
    """Parse a SCALE-Sim ``.cfg``; a missing key, a non-numeric or non-positive size or an
    unknown dataflow raises ``ValueError`` naming the file and line."""
    path = Path(path)
    text = path.read_text()
    where = _line_numbers(text.splitlines())
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise ValueError(f"{path}: not a SCALE-Sim config ({str(exc).splitlines()[0]})") from None

    def get(section: str, key: str) -> tuple[str, int]:
        line = _line_of(where, section, key)
        if not parser.has_option(section, key):
            raise ValueError(f"{path}:{line}: missing {key} in [{section}]")
        return parser.get(section, key).strip().strip('"'), line

    def positive_int(section: str, key: str) -> int:
        value, line = get(section, key)
        if not re.fullmatch(r"\+?\d+", value) or int(value) <= 0:
            raise ValueError(f"{path}:{line}: {key} must be a positive integer, got '{value}'")
        return int(value)

    arch = "architecture_presets"
    dataflow, line = get(arch, "Dataflow")
    if dataflow not in DATAFLOWS:
        raise ValueError(f"{path}:{line}: unknown Dataflow '{dataflow}' (one of "
                         f"{', '.join(DATAFLOWS)})")
    mode, line = get("run_presets", "InterfaceBandwidth")
    if mode not in BANDWIDTH_MODES:
        raise ValueError(f"{path}:{line}: InterfaceBandwidth must be CALC or USER, got '{mode}'")
    bandwidth = None
    if mode == "USER":
        value, line = get(arch, "Bandwidth")
        try:
            bandwidth = float(value.split(",")[0])
        except ValueError:
            bandwidth = -1.0
        if not math.isfinite(bandwidth) or bandwidth <= 0:
            raise ValueError(f"{path}:{line}: Bandwidth must be a positive number of words per "
                             f"cycle, got '{value}'")
    support, rep = _read_sparsity(parser, path, where)
    run_name = parser.get("general", "run_name", fallback=path.stem).strip().strip('"')
    return ScaleSimConfig(
        path=str(path), run_name=run_name or path.stem,
        array_rows=positive_int(arch, "ArrayHeight"), array_cols=positive_int(arch, "ArrayWidth"),
        ifmap_kb=positive_int(arch, "IfmapSramSzkB"),
        filter_kb=positive_int(arch, "FilterSramSzkB"),
        ofmap_kb=positive_int(arch, "OfmapSramSzkB"), dataflow=dataflow, bandwidth_mode=mode,
        bandwidth=bandwidth, sparsity_support=support, sparse_rep=rep)


def _read_sparsity(parser, path: Path, where: dict) -> tuple[bool, str]:
    """(SparsitySupport, SparseRep) of the optional ``[sparsity]`` section."""
    section = "sparsity"
    if not parser.has_section(section):
        return False, ""
    flags = {}
    for key in ("SparsitySupport", "OptimizedMapping"):
        value = parser.get(section, key, fallback="false").strip().lower()
        if value not in ("true", "false"):
            raise ValueError(f"{path}:{_line_of(where, section, key)}: {key} must be true or "
                             f"false, got '{value}'")
        flags[key] = value == "true"
    if not flags["SparsitySupport"]:
        return False, ""
    if flags["OptimizedMapping"]:
        raise ValueError(f"{path}:{_line_of(where, section, 'OptimizedMapping')}: "
                         "OptimizedMapping = true (a random N per filter column) is not modelled; "
                         "set it to false")
    rep = parser.get(section, "SparseRep", fallback="ellpack_block").strip()
    if rep not in ("ellpack_block", "csr", "csc"):
        raise ValueError(f"{path}:{_line_of(where, section, 'SparseRep')}: unknown SparseRep "
                         f"'{rep}' (ellpack_block, csr or csc)")
    return True, rep


def read_topology(path: str | Path) -> list[TopologyLayer]:
    """Parse a SCALE-Sim GEMM topology CSV (``name, M, N, K[, N:M],``); a short row, a
    non-numeric or zero size or a bad pattern raises ``ValueError`` naming the file and line."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}:1: empty topology (expected a header, then name, M, N, K rows)")
    header = [f.strip() for f in next(csv.reader([lines[0]]))]
    if any("ifmap" in f.lower() or "filter" in f.lower() for f in header):
        raise ValueError(f"{path}:1: a convolution topology; nmsim reads SCALE-Sim's GEMM "
                         "topologies (name, M, N, K)")
    layers = []
    for number, text in enumerate(lines[1:], 2):
        if not text.strip():
            continue
        fields = [f.strip() for f in next(csv.reader(io.StringIO(text)))]
        if fields and fields[-1] == "":
            fields = fields[:-1]  # SCALE-Sim rows end with a comma
        if len(fields) < 4:
            raise ValueError(f"{path}:{number}: expected name, M, N, K (and optionally N:M), got "
                             f"{len(fields)} field(s)")
        sizes = []
        for label, value in zip("MNK", fields[1:4]):
            if not re.fullmatch(r"\+?\d+", value) or int(value) <= 0:
                raise ValueError(f"{path}:{number}: {label} must be a positive integer, got "
                                 f"'{value}'")
            sizes.append(int(value))
        layers.append(TopologyLayer(fields[0] or f"layer{len(layers)}", *sizes,
                                    _sparsity(fields[4] if len(fields) > 4 else "", path, number),
                                    number))
    if not layers:
        raise ValueError(f"{path}:{len(lines)}: no layers after the header")
    return layers


def _sparsity(text: str, path: Path, line: int) -> Pattern | None:
    """The ``N:M`` field: None when empty or N = M (SCALE-Sim's dense ``1:1``)."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+)\s*:\s*(\d+)", text)
    if match and match.group(1) == match.group(2) != "0":
        return None
    try:
        return Pattern.parse(text.replace(" ", ""))
    except FormatError as exc:
        raise ValueError(f"{path}:{line}: sparsity {exc}") from None


def hardware_from_config(cfg: ScaleSimConfig, patterns: tuple[Pattern, ...] = ()
                         ) -> HardwareConfig:
    """The systolic design a SCALE-Sim config describes (module docstring); ``patterns``: the
    N:M patterns its layers run (sparsity support only)."""
    patterns = sorted(set(patterns), key=str) if cfg.sparsity_support else []
    calc = cfg.bandwidth_mode == "CALC"
    granule = math.lcm(1, *(p.m for p in patterns))
    tile_k = math.lcm(256, granule)
    if not calc:  # OS streams k in chunks that fit half of each input SRAM (double-buffered)
        fits = min(cfg.ifmap_kb * 1024 // (2 * cfg.array_rows),
                   cfg.filter_kb * 1024 // (2 * cfg.array_cols)) // WORD_BYTES
        tile_k = max(granule, min(tile_k, fits // granule * granule))
    return HardwareConfig(
        name=cfg.run_name, template="systolic", dataflow=cfg.dataflow, clock_ghz=1.0,
        dtype="int8", num_cores=1, array_rows=cfg.array_rows, array_cols=cfg.array_cols,
        dot_width=1, pattern="dense", supported_patterns=tuple(map(str, patterns)), encoding="index",
        mux_style="sorted", num_decoders=cfg.array_cols if patterns else 0,
        weight_buffer_kib=UNBOUNDED_KIB if calc else float(cfg.filter_kb),
        act_buffer_kib=UNBOUNDED_KIB if calc else float(cfg.ifmap_kb),
        out_buffer_kib=UNBOUNDED_KIB if calc else float(cfg.ofmap_kb), tile_k=tile_k,
        dram_bandwidth_gb_s=IDEAL_GB_S if calc else cfg.bandwidth * WORD_BYTES,
        dram_latency_ns=0.0, source=f"SCALE-Sim config {cfg.path}")


def layer_weight(layer: TopologyLayer, hw: HardwareConfig) -> WeightInfo:
    """Pattern and tail of a layer's weight on ``hw`` (dense without sparsity support)."""
    if layer.pattern is None or not hw.supported:
        return WeightInfo(None)
    p = layer.pattern
    tail_width = layer.k % p.m
    return WeightInfo(p, "dense" if tail_width <= p.n else "pad", name=layer.name)


def simulate_topology(cfg: ScaleSimConfig, layers: list[TopologyLayer]
                      ) -> list[tuple[TopologyLayer, HardwareConfig, GemmResult]]:
    """Every layer of a topology on the design of ``cfg``."""
    from workloads.models import GEMM

    hw = hardware_from_config(cfg, tuple(x.pattern for x in layers if x.pattern))
    out = []
    for layer in layers:
        info = layer_weight(layer, hw)
        run_hw = hw.run_at("dense" if info.pattern is None else info.pattern)
        gemm = GEMM(layer.name, layer.m, layer.n, layer.k, 1, layer.name)
        out.append((layer, run_hw, simulate_gemm(run_hw, gemm, info)))
    return out


def compute_report_row(layer_id: int, layer: TopologyLayer, hw: HardwareConfig,
                       result: GemmResult) -> dict:
    """One per-layer row: SCALE-Sim's COMPUTE_REPORT figures (its definitions: overall util =
    dense MACs / (cycles x PEs), mapping efficiency = mean PE occupancy of the folds), then ours."""
    stalls = result.stall_per_run
    # SCALE-Sim counts whole cycles; ours run in continuous time, and CALC's ideal memory (the
    # largest finite bandwidth a description accepts) leaves a stall of ~1e-4 cycles: round.
    memory = round(stalls["memory_bandwidth"] + stalls["memory_latency"])
    stall = round(sum(cycles for cause, cycles in stalls.items() if cause != "compute"))
    total = round(result.cycles_per_run)
    pes = hw.array_rows * hw.array_cols
    info = layer_weight(layer, hw)
    s_r, s_c, folds = mapper_for(hw).folds(hw, layer.m, layer.n, layer.k, info)
    dram = result.dram_bytes_per_run
    return {
        "LayerID": layer_id, "Layer name": layer.name, "Total Cycles": total,
        "Stall Cycles": stall,
        "Overall Util %": 100.0 * layer.m * layer.n * layer.k / (total * pes),
        "Mapping Efficiency %": 100.0 * s_r * s_c / (folds * pes),
        "Compute Cycles": total - stall, "M": layer.m, "N": layer.n,
        "K": layer.k, "Pattern": result.pattern, "Dataflow": hw.dataflow,
        "Array": f"{hw.array_rows}x{hw.array_cols}", "Memory Stall Cycles": memory,
        "Decode Stall Cycles": round(stalls["decode"]), "Fill Drain Cycles": round(stalls["compute"]),
        "Encoding": hw.encoding if info.pattern else "",
        "Decoder": hw.decoder_kind if info.pattern else "",
        "Metadata Bytes": dram["metadata"], "Weight Bytes": dram["values"],
        "Activation Bytes": dram["activations"], "Output Bytes": dram["outputs"],
        "Wall s": result.wall_s,
    }


def write_per_layer_csv(path: str | Path, rows: list[dict]) -> None:
    """Write the per-layer CSV atomically; an existing file is replaced only when it is one of
    ours (same header), never a file nmsim did not write."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not written_by_us(
            path, first_line=",".join(PER_LAYER_HEADER) + "\n"):
        raise ValueError(f"--per-layer-csv: {path} exists and was not written by nmsim; "
                         "choose another name")
    with staged_file(path) as staged, staged.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_LAYER_HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def scalesim_config_text(run_name: str, rows: int, cols: int, dataflow: str, *,
                         sram_kb: tuple[int, int, int] = (1024, 1024, 1024),
                         bandwidth: float | None = None, sparsity: bool = False) -> str:
    """A complete SCALE-Sim 3.0.0 config (every key its parser requires): ``sram_kb`` is
    (ifmap, filter, ofmap); ``bandwidth`` words per cycle selects USER mode (CALC when None).
    In USER mode the ifmap and filter bank bandwidths are set to the same figure."""
    ifmap, filt, ofmap = sram_kb
    words = bandwidth if bandwidth is not None else 10
    bank = max(1, int(words))
    return f"""[general]
run_name = {run_name}

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {ifmap}
FilterSramSzkB : {filt}
OfmapSramSzkB : {ofmap}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : {words:g}
Dataflow : {dataflow}
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : {bank}
IfmapSRAMBankNum : 1
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : {bank}
FilterSRAMBankNum : 1
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : {str(sparsity).lower()}
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 4
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : {"CALC" if bandwidth is None else "USER"}
UseRamulatorTrace : False
"""


def topology_text(layers) -> str:
    """A SCALE-Sim GEMM topology of ``(name, m, n, k[, "N:M"])`` tuples (trailing commas as
    SCALE-Sim expects)."""
    out = ["Layer, M, N, K, Sparsity,"]
    for layer in layers:
        out.append(", ".join(str(x) for x in layer) + ",")
    return "\n".join(out) + "\n"
