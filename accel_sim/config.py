"""Hardware description: a validated, frozen dataclass loaded from YAML presets or files.

One :class:`HardwareConfig` describes a sparse tensor core: clock and process node, value dtype,
compute template (``tensor_core`` grid of dot-product units, or a ``systolic`` array), the N:M
pattern it runs and the set it supports, metadata encoding and decoder, operand-mux style, salient
side-car lanes, per-core buffers and the DRAM/HBM channel. Sizes are per core; ``num_cores``
cores run in lockstep waves (see :mod:`accel_sim.simulate`).

Two ways to change a config, on purpose distinct:

* :meth:`HardwareConfig.replace` changes the *design* (what a sweep does): any field, validated.
* :meth:`HardwareConfig.run_at` runs a workload at a pattern the design already supports
  (what ``nmsim simulate --pattern`` does); an unsupported pattern is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from accel_sim.yaml_io import load_yaml_file
from compression.formats import ENCODINGS, Pattern
from workloads.files import staged_file

from .decoders import DECODER_MODELS, decoder_model, decoders_for_encoding

PRESET_DIR = Path(__file__).parent / "presets"
DENSE = "dense"

# Bytes of one stored operand element and of one accumulator, per value dtype.
DTYPE_BYTES = {"int8": 1, "fp8": 1, "fp16": 2, "bf16": 2}
ACCUMULATOR_BYTES = {"int8": 4, "fp8": 4, "fp16": 4, "bf16": 4}  # int32 / fp32 accumulation
TEMPLATES = ("tensor_core", "systolic")
DATAFLOWS = ("ws", "os", "is")  # weight-, output-, input-stationary (systolic template)
MUX_STYLES = ("full", "sorted")  # M:1, or (M-N+1):1 on ascending indices
# Decoder choices, from the decoder registry (accel_sim.decoders.DECODER_MODELS): "auto" or a
# decoder's name; which decoders can read which encoding ("auto" picks the first).
DECODERS = ("auto", *DECODER_MODELS)
DECODERS_FOR_ENCODING = decoders_for_encoding()

SWEEPABLE_FIELDS = (
    "pattern", "supported_patterns", "encoding", "decoder", "num_decoders", "mux_style",
    "template", "dataflow", "num_cores", "array_rows", "array_cols", "dot_width", "dtype",
    "clock_ghz", "process_nm", "dram_bandwidth_gb_s", "dram_latency_ns", "weight_buffer_kib",
    "act_buffer_kib", "out_buffer_kib", "double_buffered", "buffer_stages", "salient_lanes",
    "tile_k", "sustained_clock_ghz", "dram_efficiency", "launch_overhead_us",
    "memory_compute_overlap", "operand_bytes_per_cycle", "mma_tile_m", "mma_tile_n", "max_split_k",
)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class HardwareConfig:
    """A sparse tensor-core design; every field is validated on construction."""

    name: str = "custom"
    template: str = "tensor_core"
    dataflow: str = "ws"
    clock_ghz: float = 1.0
    process_nm: float = 7.0
    dtype: str = "fp16"
    num_cores: int = 1
    array_rows: int = 16
    array_cols: int = 16
    dot_width: int = 8
    pattern: str = DENSE
    supported_patterns: tuple[str, ...] = ()
    encoding: str = "index"
    decoder: str = "auto"
    num_decoders: int = 16
    mux_style: str = "full"
    salient_lanes: int = 0
    weight_buffer_kib: float = 64.0
    act_buffer_kib: float = 64.0
    out_buffer_kib: float = 128.0
    double_buffered: bool = True
    buffer_stages: int = 2
    tile_k: int = 256
    dram_bandwidth_gb_s: float = 1000.0
    dram_latency_ns: float = 500.0
    # What silicon sustains, beside the datasheet peaks above (defaults: the ideal machine).
    sustained_clock_ghz: float | None = None  # tensor-core clock under the power limit
    dram_efficiency: float = 1.0  # achievable fraction of dram_bandwidth_gb_s
    launch_overhead_us: float = 0.0  # per kernel launch (GEMM or non-GEMM kernel)
    # Share of the shorter of a GEMM's compute and DRAM-transfer times hidden under the longer
    # (1: the roofline, dedicated DMA engines; below 1 where the same cores issue both)
    memory_compute_overlap: float = 1.0
    operand_bytes_per_cycle: float = 0.0  # shared-memory bytes/cycle/core; 0: unlimited
    mma_tile_m: int = 64  # output tile one warp (group) computes from its registers: each
    mma_tile_n: int = 64  # operand is read from shared memory once per warp that needs it
    library_tiles: tuple[str, ...] = ()  # "MxN" tile shapes a GEMM library offers; () = largest
    max_split_k: int = 1  # most k-slices a skinny GEMM may be split into (split-K)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        errors = _validate(self)
        if errors:
            raise ValueError(f"hardware '{self.name}': " + "; ".join(errors))
        supported = tuple(Pattern.parse(p) for p in self.supported_patterns)
        run = None if self.pattern == DENSE else Pattern.parse(self.pattern)
        object.__setattr__(self, "supported_patterns", tuple(map(str, supported)))
        object.__setattr__(self, "library_tiles",
                           _as_pattern_tuple(self.library_tiles, "library_tiles"))
        if run is not None:
            object.__setattr__(self, "pattern", str(run))
        # Parsed once, here at the edge: the simulator reads these Pattern objects (not fields).
        object.__setattr__(self, "_supported", supported or (() if run is None else (run,)))
        object.__setattr__(self, "_run_pattern", run)

    # ---------------------------------------------------------------- derived quantities

    @property
    def is_sparse(self) -> bool:
        """True when the design has sparse support (operand muxes, decoders, metadata)."""
        return bool(self.supported)

    @property
    def supported(self) -> tuple[Pattern, ...]:
        """Patterns the datapath supports: ``supported_patterns``, or just ``pattern`` (fixed)."""
        return self._supported

    @property
    def run_pattern(self) -> Pattern | None:
        """The pattern the design runs (None: dense)."""
        return self._run_pattern

    @property
    def decoder_kind(self) -> str:
        """The decoder in use (``auto`` resolved from the encoding)."""
        return DECODERS_FOR_ENCODING[self.encoding][0] if self.decoder == "auto" else self.decoder

    @property
    def value_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def accumulator_bytes(self) -> int:
        return ACCUMULATOR_BYTES[self.dtype]

    @property
    def macs_per_cycle_per_core(self) -> int:
        """Physical multipliers of one core (a systolic PE holds one)."""
        width = self.dot_width if self.template == "tensor_core" else 1
        return self.array_rows * self.array_cols * width

    @property
    def dense_peak_tflops(self) -> float:
        """Dense peak, 2 FLOPs per MAC per cycle on every multiplier."""
        return 2 * self.num_cores * self.macs_per_cycle_per_core * self.clock_ghz / 1e3

    def sparse_peak_tflops(self, pattern: str | Pattern | None = None) -> float:
        """Dense-equivalent peak at ``pattern`` (default: the run pattern): dense peak x M/N."""
        p = self.run_pattern if pattern is None else Pattern.parse(pattern)
        return self.dense_peak_tflops if p is None else self.dense_peak_tflops * p.m / p.n

    @property
    def input_stages(self) -> int:
        """Slots the weight/activation buffers are split into: 1 single-buffered, 2 double,
        more for a multistage prefetch pipeline (loads in flight hide DRAM latency)."""
        return self.buffer_stages if self.double_buffered else 1

    @property
    def output_stages(self) -> int:
        return 2 if self.double_buffered else 1

    @property
    def run_clock_ghz(self) -> float:
        """The clock the simulation counts cycles in: the sustained clock when one is given
        (peaks stay at ``clock_ghz``, the datasheet boost clock)."""
        return self.sustained_clock_ghz or self.clock_ghz

    @property
    def dram_bytes_per_cycle(self) -> float:
        """Achievable DRAM bytes per (run) cycle: peak x ``dram_efficiency``."""
        return self.dram_bandwidth_gb_s * self.dram_efficiency / self.run_clock_ghz

    @property
    def dram_latency_cycles(self) -> int:
        return math.ceil(self.dram_latency_ns * self.run_clock_ghz)

    @property
    def launch_cycles(self) -> float:
        return self.launch_overhead_us * 1e3 * self.run_clock_ghz

    @property
    def tile_shapes(self) -> tuple[tuple[int, int], ...]:
        """``library_tiles`` as (tile_m, tile_n) pairs."""
        return tuple(_parse_tile(t) for t in self.library_tiles)

    # ---------------------------------------------------------------- changes

    def replace(self, **overrides) -> HardwareConfig:
        """A new design with ``overrides`` applied and validated; unknown fields raise."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown hardware field(s): {', '.join(unknown)} "
                             f"(sweepable: {', '.join(SWEEPABLE_FIELDS)})")
        for name in ("supported_patterns", "library_tiles"):
            if name in overrides:
                overrides[name] = _as_pattern_tuple(overrides[name])
        return dataclasses.replace(self, **overrides)

    def run_at(self, pattern: str | Pattern) -> HardwareConfig:
        """The same design running ``pattern`` (or ``"dense"``), which it must support."""
        if str(pattern) == DENSE:
            return dataclasses.replace(self, pattern=DENSE, supported_patterns=tuple(
                str(p) for p in self.supported))
        p = Pattern.parse(pattern)
        if p not in self.supported:
            have = ", ".join(map(str, self.supported)) or "dense only"
            raise ValueError(f"pattern {p} is not supported by hardware '{self.name}' "
                             f"(supports: {have})")
        return dataclasses.replace(self, pattern=str(p), supported_patterns=tuple(
            str(q) for q in self.supported))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["supported_patterns"] = list(self.supported_patterns)
        data["library_tiles"] = list(self.library_tiles)
        return data


def _parse_tile(text: str) -> tuple[int, int]:
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"library_tiles entry '{text}' is not MxN with positive integers")
    return int(parts[0]), int(parts[1])


def _as_pattern_tuple(value, name: str = "supported_patterns") -> tuple[str, ...]:
    """A list field (``2:4 4:8`` text, or a YAML list) as a tuple of strings."""
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list, got {value!r}")
    return tuple(str(v) for v in value)


# Accepted range [low, high] of each numeric field, and whether it must be an integer. Values
# outside are refused naming the field: they are typos or unit slips, not designs (a 1e-300 GB/s
# channel, a NaN clock), and they would only produce NaN or endless simulations.
FIELD_BOUNDS = {
    "num_cores": (1, 100_000, True),
    "array_rows": (1, 65_536, True),
    "array_cols": (1, 65_536, True),
    "dot_width": (1, 4_096, True),
    "tile_k": (1, 1 << 20, True),
    "buffer_stages": (2, 64, True),
    "num_decoders": (0, 1 << 20, True),
    "salient_lanes": (0, 1 << 16, True),
    "clock_ghz": (0.001, 100.0, False),
    "process_nm": (1.0, 1_000.0, False),
    # Up to 1e15: tests model an ideal memory (1e12 GB/s) to isolate compute.
    "dram_bandwidth_gb_s": (0.001, 1e15, False),
    "dram_latency_ns": (0.0, 1e9, False),
    "weight_buffer_kib": (0.001, 1 << 30, False),
    "act_buffer_kib": (0.001, 1 << 30, False),
    "out_buffer_kib": (0.001, 1 << 30, False),
    "mma_tile_m": (1, 65_536, True),
    "mma_tile_n": (1, 65_536, True),
    "max_split_k": (1, 4_096, True),
    "dram_efficiency": (0.001, 1.0, False),
    "launch_overhead_us": (0.0, 1e6, False),
    "memory_compute_overlap": (0.0, 1.0, False),
    "operand_bytes_per_cycle": (0.0, 1e9, False),  # 0: unlimited
}


def _check_number(name: str, value, low, high, integer: bool) -> str | None:
    """The problem with one numeric field, or None (finite, of the right type, in range)."""
    if integer:
        ok = _is_int(value)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    if ok and low <= value <= high:
        return None
    kind = "an integer" if integer else "a finite number"
    return f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}"


def _validate(hw: HardwareConfig) -> list[str]:
    """Every problem with ``hw``, each naming its field."""
    errors = [problem for name, bounds in FIELD_BOUNDS.items()
              if (problem := _check_number(name, getattr(hw, name), *bounds))]
    sustained = hw.sustained_clock_ghz
    if sustained is not None and (_check_number("sustained_clock_ghz", sustained,
                                                *FIELD_BOUNDS["clock_ghz"])
                                  or (isinstance(hw.clock_ghz, (int, float))
                                      and sustained > hw.clock_ghz)):
        errors.append(f"sustained_clock_ghz must be in (0, clock_ghz={hw.clock_ghz}], got "
                      f"{hw.sustained_clock_ghz!r}")
    try:
        for tile in _as_pattern_tuple(hw.library_tiles, "library_tiles"):
            _parse_tile(tile)
    except ValueError as exc:
        errors.append(str(exc))
    choices = {"template": TEMPLATES, "dataflow": DATAFLOWS, "dtype": tuple(DTYPE_BYTES),
               "mux_style": MUX_STYLES, "decoder": DECODERS, "encoding": ENCODINGS}
    for name, allowed in choices.items():
        if getattr(hw, name) not in allowed:
            errors.append(f"{name} '{getattr(hw, name)}' is not one of {', '.join(allowed)}")
    if not isinstance(hw.double_buffered, bool):
        errors.append(f"double_buffered must be true or false, got {hw.double_buffered!r}")
    if hw.template == "systolic" and hw.dot_width != 1:
        errors.append("dot_width must be 1 for the systolic template (one MAC per PE)")
    patterns = []
    try:
        for text in _as_pattern_tuple(hw.supported_patterns):
            patterns.append(Pattern.parse(text))
        if hw.pattern != DENSE:
            run = Pattern.parse(hw.pattern)
            if patterns and run not in patterns:
                errors.append(f"pattern {run} is not in supported_patterns "
                              f"({', '.join(map(str, patterns))})")
            patterns = patterns or [run]
    except ValueError as exc:
        errors.append(f"pattern: {exc}")
    if errors:
        return errors
    if patterns:
        decoder = DECODERS_FOR_ENCODING[hw.encoding][0] if hw.decoder == "auto" else hw.decoder
        if decoder not in DECODERS_FOR_ENCODING[hw.encoding]:
            errors.append(f"decoder '{decoder}' cannot read '{hw.encoding}' metadata (use "
                          f"{' or '.join(DECODERS_FOR_ENCODING[hw.encoding])})")
        if hw.num_decoders < 1:
            errors.append("num_decoders must be >= 1 on a sparse design")
        model = decoder_model(decoder)
        for p in patterns:
            errors += model.pattern_errors(p, hw.encoding)
            if hw.tile_k % p.m:
                errors.append(f"tile_k {hw.tile_k} must be a multiple of M={p.m} of pattern {p}")
    return errors


# ------------------------------------------------------------------------ presets and files


def _preset_files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PRESET_DIR.glob("*.yaml"))}


PRESETS: tuple[str, ...] = tuple(_preset_files())


def from_dict(data: dict, default_name: str = "custom") -> HardwareConfig:
    """A config from a mapping (YAML contents); unknown keys raise naming them."""
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 - user input (a YAML file), reported as exit code 2
            "hardware description must be a mapping of field: value")
    known = {f.name for f in dataclasses.fields(HardwareConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown hardware field(s): {', '.join(unknown)}")
    data = dict(data)
    data.setdefault("name", default_name)
    if "supported_patterns" in data:
        data["supported_patterns"] = _as_pattern_tuple(data["supported_patterns"] or ())
    if "pattern" in data:
        data["pattern"] = str(data["pattern"])
    if "library_tiles" in data:
        data["library_tiles"] = _as_pattern_tuple(data["library_tiles"] or ())
    return HardwareConfig(**data)


def load_hardware(preset_or_path: str | Path | HardwareConfig) -> HardwareConfig:
    """A preset by name (see :data:`PRESETS`) or a YAML file path."""
    if isinstance(preset_or_path, HardwareConfig):
        return preset_or_path
    files = _preset_files()
    key = str(preset_or_path)
    if key in files:
        path = files[key]
    else:
        path = Path(key)
        if not path.is_file():
            raise ValueError(f"unknown hardware '{key}': not a preset "
                             f"({', '.join(files)}) nor a YAML file")
    data = load_yaml_file(path)
    return from_dict(data or {}, default_name=path.stem)


def save_hardware(hw: HardwareConfig, path: str | Path) -> None:
    """Write ``hw`` as YAML (atomically)."""
    with staged_file(path) as staged:
        staged.write_text(yaml.safe_dump(hw.to_dict(), sort_keys=False))


# Share of the shorter of a host GEMV's transfer and multiply-add times that its cores hide
# under the longer (HardwareConfig.memory_compute_overlap). Fitted by scripts/fit_host_overlap.py
# on the first two sets of ten cold `nmsim validate` runs on a 2-core Zen 4 guest (160
# predictions, reports/kernels/cpu_validate_speed_cold.json; median |error| 4.7% at full
# overlap, 4.5% here) and checked on its other two sets (6.2 -> 5.4%, 6.6 -> 4.7%) and on 56
# predictions on a Zen 1 guest it never saw (reports/kernels/zen1/validate_table.json,
# validate_overlap.json: 15.9 -> 9.7%, 16.7 -> 10.8%).
HOST_MEMORY_COMPUTE_OVERLAP = 0.85


def host_cpu_preset(bandwidth_gb_s: float, peak_gflops: float, clock_ghz: float = 3.0,
                    cores: int = 1, simd_lanes: int | None = None, dtype: str = "fp16",
                    cache_kib: float = 32768.0, tile_k: int = 128, call_overhead_us: float = 0.0,
                    memory_compute_overlap: float = HOST_MEMORY_COMPUTE_OVERLAP,
                    name: str = "host-cpu") -> HardwareConfig:
    """A dense design that describes a measured CPU, for comparing kernels with the simulator.

    The CPU is modelled as ``cores`` tensor-core cores of one dot-product unit whose width is the
    multiplier count needed to reach ``peak_gflops`` at ``clock_ghz`` (rounded up, the lanes then
    run at the sustained clock that gives ``peak_gflops`` exactly; ``simd_lanes`` overrides
    the count); its last-level cache (default 32 MiB: the 2-core Zen 4 host's L3, ``lscpu``) is
    split evenly across the three buffers, with ``tile_k`` 128 so that a k-chunk of every row of
    a 7B-layer GEMV fits one tile and the simulator splits its rows evenly over the cores, as
    the Numba kernels' ``prange`` does (1 MiB cut 11008 rows into 341-row tiles, and one core
    ran a tile more than the other); ``bandwidth_gb_s`` is the measured DRAM stream bandwidth. Latency is set to 100 ns, a typical DRAM load-to-use figure.

    ``peak_gflops`` is the multiply-add rate of the code being modelled when DRAM does not bind
    (2 FLOPs per value). For a CPU's N:M kernel that is its rate per *kept* value with the
    decode, gather and address instructions each one costs (``nm_kernels.bench``'s cache-resident
    timing), which is how the preset carries the CPU's decode cost. A rate below one lane at
    ``clock_ghz`` per core is one lane at a lower sustained clock (cycles then count value
    slots; times in seconds are what compare).

    ``call_overhead_us`` is the code's measured fixed cost per call (dispatch, waking the
    thread pool), charged as the simulator's per-kernel launch overhead.
    ``memory_compute_overlap`` is the share of the shorter of the streamed bytes' time and the
    multiply-adds' time that the cores hide under the longer
    (:func:`accel_sim.simulate.exposed_transfer_cycles`).
    """
    if bandwidth_gb_s <= 0 or peak_gflops <= 0 or clock_ghz <= 0 or cores <= 0:
        raise ValueError("host_cpu_preset: bandwidth_gb_s, peak_gflops, clock_ghz and cores "
                         "must be positive")
    if call_overhead_us < 0:
        raise ValueError(f"host_cpu_preset: call_overhead_us must be >= 0, got "
                         f"{call_overhead_us}")
    lanes = simd_lanes or max(1, math.ceil(peak_gflops / (2 * clock_ghz * cores)))
    lane_clock = peak_gflops / (2 * lanes * cores)
    share = cache_kib / 3
    return HardwareConfig(
        name=name, template="tensor_core", clock_ghz=clock_ghz, process_nm=7.0, dtype=dtype,
        num_cores=cores, array_rows=1, array_cols=1, dot_width=lanes, pattern=DENSE, tile_k=tile_k,
        weight_buffer_kib=share, act_buffer_kib=share, out_buffer_kib=share,
        dram_bandwidth_gb_s=bandwidth_gb_s, dram_latency_ns=100.0,
        launch_overhead_us=call_overhead_us, memory_compute_overlap=memory_compute_overlap,
        sustained_clock_ghz=lane_clock if lane_clock < clock_ghz else None,
        source=f"measured host: {bandwidth_gb_s:g} GB/s, {peak_gflops:g} GFLOP/s peak, "
               f"{call_overhead_us:g} us per call, overlap {memory_compute_overlap:g}",
    )
