"""Energy per action: the simulation's action counts x an energy reference table.

Energy = sum over actions of (count x energy per action), as Accelergy/Timeloop compute it. The
counts come from a simulated :class:`~accel_sim.simulate.GemmResult` (per run, times its
``count``); the energies from a YAML table shaped like an Accelergy energy reference table (ERT:
``tables`` of ``name`` (component) with ``actions`` of ``name``, ``arguments``, ``energy``), each
entry with its ``unit``, ``node_nm`` and ``source`` (:func:`load_table`; the default is
``accel_sim/energy_tables/default.yaml``, docs/energy.md lists its sources).

Actions charged per GEMM run (``count x`` for the GEMM's total):

* ``mac_array.multiply`` / ``accumulate``: the MACs the array performs (kept weights x m, the
  simulator's ``array_macs``, plus the salient side-car's MACs), at the design's dtype
  (accumulating in fp32, or int32 for int8). Idle multiplier slots (partial tiles, pipeline
  fill/drain, idle cores of a last wave: the ``compute`` stall cycles x the chip's multipliers)
  are ``mac_array.idle_slot`` - 0 pJ in the default table (operand-gated; clock and leakage are
  not modelled).
* ``operand_mux.mux2_bit``: on a sparse run, every MAC selects its activation through an
  (inputs-1)-MUX2-deep mux (:func:`accel_sim.mapping.mux_inputs`) of the value width.
* ``decoder.*``: blocks decoded (metadata is decoded once per step per tile: n x blocks per row
  x m-tiles) x :meth:`accel_sim.decoders.DecoderModel.energy_actions` of the decoder kind.
* SRAM bits read and written per buffer (``weight_buffer``, ``metadata_buffer``, ``act_buffer``,
  ``out_buffer``), each charged at the ``sram`` energy per bit of a memory of that buffer's size
  (log-log interpolation in capacity between the table's entries, linear in width). Each tile
  writes its operands once; a tensor core reads them once per warp (mma) tile that uses them
  (weights ceil(tile_m / mma_tile_m) times, activations ceil(tile_n / mma_tile_n) times), a
  systolic array once; accumulators are read and written once per output per k-step.
* ``dram.read_<class>`` / ``dram.write_outputs``: the simulator's DRAM bytes by class
  (``dram_bytes_per_run``), at the table's ``dram_technology`` energy per bit.

Logic and SRAM entries are scaled from their ``node_nm`` to the design's ``process_nm`` by the
Stillmaker & Baas (2017) energy equations; DRAM entries (``node_nm: n/a``) are not scaled.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from compression.formats import Pattern

from .area import metadata_buffer_kib
from .decoders import decoder_model
from .mapping import mux_inputs
from .yaml_io import MAX_BYTES, load_yaml

DEFAULT_TABLE = Path(__file__).resolve().parent / "energy_tables" / "default.yaml"

# What the model charges: component -> its actions (a table may not name others).
DECODER_ACTIONS = ("adder_bit", "comparator_bit", "register_bit", "rom_read_bit")
COMPONENT_ACTIONS = {
    "mac_array": ("multiply", "accumulate", "idle_slot"),
    "operand_mux": ("mux2_bit",),
    "decoder": DECODER_ACTIONS,
    "sram": ("read", "write"),
    "dram": ("read", "write"),
}
BUFFERS = ("weight_buffer", "metadata_buffer", "act_buffer", "out_buffer")
# A rank ROM read is charged at the sram read energy of a memory of the ROM's size.
ROM_ACTION = "rom_read_bit"

UNIT_PJ = {"fJ": 1e-3, "pJ": 1.0, "nJ": 1e3, "uJ": 1e6, "mJ": 1e9, "J": 1e12}
PJ_PER_J = 1e12

# Published HBM energy per bit, pJ/bit: low end O'Connor et al., MICRO 2017 (HBM2 3.9) and
# Samsung's HBM3E figure (3.9); high end 7 pJ/bit, the HBM access energy of HyGCN (Yan et al.,
# HPCA 2020) and of the HBM-vs-DDRx comparison of Larimi et al. (DATE 2021, ~7 vs 25 pJ/bit).
HBM_PUBLISHED_PJ_PER_BIT = (3.9, 7.0)

# ---- Node scaling. Stillmaker & Baas, "Scaling equations for the accurate prediction of CMOS
# device performance from 180 nm to 7 nm", Integration 58 (2017): energy per operation at node X
# relative to others is a quadratic in Vdd, a*Vdd^2 + b*Vdd + c, per node (the coefficients as
# tabulated in the hwcomponents scaling module of the Accelergy project, which cites the paper).
# Evaluated at one Vdd (0.8 V, that module's default) at both nodes; between tabulated nodes the
# factor is interpolated linearly in node order; outside 7-130 nm the nearest node's factor is
# scaled by sqrt(node ratio) (that module's rule, after the IRDS fJ/switch trend).
STILLMAKER_ENERGY = {
    130: (7.171, -6.709, 2.904), 90: (4.762, -4.781, 2.092), 65: (3.755, -4.398, 1.975),
    45: (1.103, -0.362, 0.2767), 32: (0.9559, -0.7823, 0.471), 20: (0.373, -0.1582, 0.04104),
    16: (0.2958, -0.1241, 0.03024), 14: (0.2363, -0.09675, 0.02239),
    10: (0.2068, -0.09311, 0.02375), 7: (0.1776, -0.09097, 0.02447),
}
SCALING_VDD = 0.8


def _node_energy(node_nm: float) -> float:
    """Relative energy per operation at ``node_nm`` (Stillmaker & Baas polynomial)."""
    nodes = sorted(STILLMAKER_ENERGY, reverse=True)  # 130 ... 7

    def at(node):
        a, b, c = STILLMAKER_ENERGY[node]
        return a * SCALING_VDD ** 2 + b * SCALING_VDD + c
    if node_nm >= nodes[0]:
        return at(nodes[0]) * math.sqrt(node_nm / nodes[0])
    if node_nm <= nodes[-1]:
        return at(nodes[-1]) * math.sqrt(node_nm / nodes[-1])
    for big, small in itertools.pairwise(nodes):
        if small <= node_nm <= big:
            t = (big - node_nm) / (big - small)
            return at(big) * (1 - t) + at(small) * t
    raise AssertionError("unreachable")


def node_scale(from_nm: float, to_nm: float) -> float:
    """Energy factor from ``from_nm`` to ``to_nm`` (Stillmaker & Baas 2017)."""
    return _node_energy(to_nm) / _node_energy(from_nm)


# ------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Entry:
    """One table entry: energy in pJ per unit action (per bit for a width or a /bit unit)."""

    component: str
    action: str
    arguments: tuple  # sorted (key, value) pairs
    pj: float
    node_nm: float | None  # None: not scaled (a memory device's own figure)
    source: str

    def args(self) -> dict:
        return dict(self.arguments)


@dataclass(frozen=True)
class EnergyTable:
    path: str
    entries: tuple[Entry, ...]
    dram_technology: str

    def find(self, component: str, action: str, **arguments) -> Entry:
        """The entry of ``component.action`` whose arguments include ``arguments``."""
        for e in self.entries:
            if e.component == component and e.action == action and all(
                    str(e.args().get(k)) == str(v) for k, v in arguments.items()):
                return e
        args = ", ".join(f"{k}={v}" for k, v in arguments.items())
        raise ValueError(f"energy table {self.path}: missing action {component}.{action}"
                         + (f" ({args})" if args else ""))

    def pj(self, component: str, action: str, node_nm: float, **arguments) -> float:
        """Energy (pJ) of one action at ``node_nm``."""
        e = self.find(component, action, **arguments)
        return e.pj if e.node_nm is None else e.pj * node_scale(e.node_nm, node_nm)

    def sram_pj_per_bit(self, action: str, capacity_kib: float, node_nm: float) -> float:
        """``sram.read``/``write`` energy per bit of a ``capacity_kib`` memory at ``node_nm``:
        log-log interpolation between the entries' capacities (extrapolated from the nearest
        pair outside them), each entry's energy per access / its ``width_bits``."""
        points = sorted({float(e.args()["capacity_kib"]): e.pj / float(e.args()["width_bits"])
                         * (1.0 if e.node_nm is None else node_scale(e.node_nm, node_nm))
                         for e in self.entries
                         if e.component == "sram" and e.action == action}.items())
        if not points:
            self.find("sram", action)  # raises: missing action
        if len(points) == 1:
            return points[0][1]
        x = math.log(max(capacity_kib, 1e-9))
        i = next((j for j in range(1, len(points) - 1) if x <= math.log(points[j][0])),
                 len(points) - 1)
        (c0, e0), (c1, e1) = points[i - 1], points[i]
        t = (x - math.log(c0)) / (math.log(c1) - math.log(c0))
        return math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0)))


def _parse_entry(path: str, component: str, raw) -> Entry:
    """One action of a component, validated; ValueError naming the file and the entry."""
    name = raw.get("name") if isinstance(raw, dict) else raw
    where = f"energy table {path}: {component}.{name}"
    if not isinstance(raw, dict) or not isinstance(name, str):
        raise ValueError(f"{where}: an action must be a mapping with a name")  # noqa: TRY004
    action = raw["name"]
    if action not in COMPONENT_ACTIONS[component]:
        raise ValueError(f"{where}: unknown action (known for {component}: "
                         f"{', '.join(COMPONENT_ACTIONS[component])})")
    energy = raw.get("energy")
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) \
            or not math.isfinite(energy) or energy < 0:
        raise ValueError(f"{where}: energy must be a finite number >= 0, got {energy!r}")
    unit = str(raw.get("unit", ""))
    prefix, _, per = unit.partition("/")
    if prefix not in UNIT_PJ or per not in ("", "bit"):
        raise ValueError(f"{where}: unit {unit!r} is not one of "
                         f"{', '.join(UNIT_PJ)} (optionally per bit, e.g. pJ/bit)")
    arguments = raw.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}: arguments must be a mapping")  # noqa: TRY004
    # An sram entry is per access of width_bits; a dram entry per bit (a /bit unit, or an
    # access of width_bits bits).
    sized = ("capacity_kib", "width_bits") if component == "sram" else \
        ("width_bits",) if component == "dram" and not per else ()
    for key in sized:
        value = arguments.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value <= 0:
            raise ValueError(f"{where}: arguments.{key} must be a positive number")
    node = raw.get("node_nm")
    if node == "n/a":
        node = None
    elif isinstance(node, bool) or not isinstance(node, (int, float)) or \
            not 1 <= node <= 1000:
        raise ValueError(f"{where}: node_nm must be a number in [1, 1000] or n/a, got {node!r}")
    width = float(arguments["width_bits"]) if component == "dram" and not per else 1.0
    return Entry(component, action, tuple(sorted(arguments.items())),
                 float(energy) * UNIT_PJ[prefix] / width, node, str(raw.get("source", "")))


def parse_table(data, path: str) -> EnergyTable:
    """An :class:`EnergyTable` from a loaded ERT mapping; every problem names the entry."""
    ert = data.get("ERT") if isinstance(data, dict) else None
    if not isinstance(ert, dict) or not isinstance(ert.get("tables"), list):
        raise ValueError(  # noqa: TRY004 - user input, reported as exit code 2
            f"energy table {path}: expected 'ERT: {{tables: [...]}}' (an Accelergy energy "
            "reference table)")
    # ERT-wide unit and node_nm apply to entries without their own (an Accelergy ERT is in pJ
    # at the node it was generated for and names neither per entry).
    defaults = {key: ert[key] for key in ("unit", "node_nm") if key in ert}
    entries = []
    for table in ert["tables"]:
        name = table.get("name") if isinstance(table, dict) else None
        if not isinstance(name, str):
            raise ValueError(  # noqa: TRY004 - user input, reported as exit code 2
                f"energy table {path}: every table needs a name (its component)")
        # Accelergy names components by their hierarchy (system.chip.PE[0..255].mac_array).
        component = name.split(".")[-1].split("[")[0]
        if component not in COMPONENT_ACTIONS:
            raise ValueError(f"energy table {path}: {name}: unknown component '{component}' "
                             f"(known: {', '.join(COMPONENT_ACTIONS)})")
        entries += [_parse_entry(path, component, {**defaults, **a} if isinstance(a, dict)
                                 else a) for a in table.get("actions") or []]
    table = EnergyTable(path, tuple(entries), str(ert.get("dram_technology", "")))
    table.find("dram", "read", technology=table.dram_technology)
    table.find("dram", "write", technology=table.dram_technology)
    return table


@lru_cache(maxsize=16)
def _parse_cached(text: str, path: str) -> EnergyTable:
    return parse_table(load_yaml(text, f"energy table {path}"), path)


def load_table(path: str | Path | None = None) -> EnergyTable:
    """The energy table at ``path`` (default: the packaged one), validated (parsed tables are
    cached by content)."""
    path = Path(path) if path is not None else DEFAULT_TABLE
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"energy table {path}: larger than {MAX_BYTES >> 20} MiB; refused")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"energy table {path}: cannot be read "
                         f"({getattr(exc, 'strerror', None) or exc})") from None
    return _parse_cached(text, str(path))


# ------------------------------------------------------------------------------ action counts


def _reads_per_tile_write(extent: int, tile: int, mma: int, tensor_core: bool) -> int:
    """Reads of an operand chunk summed over the tiles along ``extent``: one per mma tile of
    each (tensor core: a warp reads what it uses), or one per tile (systolic: operands stream
    through the array once)."""
    full, rest = divmod(extent, tile)
    if not tensor_core:
        return full + (1 if rest else 0)
    return full * -(-tile // mma) + (-(-rest // mma) if rest else 0)


def gemm_actions(hw, g) -> dict[tuple[str, str], float]:
    """Action counts of ONE run of a simulated GEMM ``g`` (:class:`GemmResult`) on ``hw``:
    {(component, action): count}; SRAM and DRAM actions in bits; decoder actions by name, the
    rank ROM's as ``(decoder, rom_read_bit)``."""
    counts: dict[tuple[str, str], float] = {}

    def add(component, action, value):
        if value:
            counts[(component, action)] = counts.get((component, action), 0.0) + float(value)
    for cls, nbytes in g.dram_bytes_per_run.items():
        add("dram", "write_outputs" if cls == "outputs" else f"read_{cls}", 8 * nbytes)
    if g.kind != "gemm" or not g.m * g.n * g.k:
        return counts
    macs = g.array_macs_per_run + g.salient_macs_per_run
    add("mac_array", "multiply", macs)
    add("mac_array", "accumulate", macs)
    chip_macs = hw.num_cores * hw.macs_per_cycle_per_core
    add("mac_array", "idle_slot", g.stall_per_run.get("compute", 0.0) * chip_macs)
    value_bits = 8 * hw.value_bytes
    tile_m, tile_n, chunk_k = g.tile
    split = g.split_k
    k_slice = g.k // split
    m_tiles = -(-g.m // tile_m)
    n_tiles = -(-g.n // tile_n)
    kept_row = g.array_macs_per_run / (split * g.m * g.n)  # stored weights per row and slice
    tensor_core = hw.template == "tensor_core"
    weight_bits = split * g.n * kept_row * value_bits
    add("weight_buffer", "write", m_tiles * weight_bits)
    add("weight_buffer", "read", weight_bits * _reads_per_tile_write(
        g.m, tile_m, hw.mma_tile_m, tensor_core))
    act_bits = split * g.m * k_slice * value_bits
    add("act_buffer", "write", n_tiles * act_bits)
    add("act_buffer", "read", act_bits * _reads_per_tile_write(
        g.n, tile_n, hw.mma_tile_n, tensor_core))
    salient_bits = 8 * g.dram_bytes_per_run.get("salient", 0.0)
    add("weight_buffer", "write", salient_bits)
    add("weight_buffer", "read", salient_bits)
    acc_bits = split * g.m * g.n * -(-k_slice // chunk_k) * 8 * hw.accumulator_bytes
    add("out_buffer", "write", acc_bits)
    add("out_buffer", "read", acc_bits)
    if g.pattern != "dense":
        p = Pattern.parse(g.pattern)
        # Blocks per weight row (a padded tail is one, a dense tail none): every wave loads
        # metadata and values of the same rows, so the simulator's DRAM metadata / value bytes
        # is the row's metadata bits / its value bits.
        dram = g.dram_bytes_per_run
        blocks = round(dram.get("metadata", 0.0) / dram["values"] * kept_row * value_bits
                       / p.bits_per_block(hw.encoding))
        decoded = split * m_tiles * g.n * blocks
        meta_bits = decoded * p.bits_per_block(hw.encoding)
        add("metadata_buffer", "write", meta_bits)
        add("metadata_buffer", "read", meta_bits)
        for action, per_block in decoder_model(hw.decoder_kind).energy_actions(p).items():
            add("decoder", action, decoded * per_block)
        add("operand_mux", "mux2_bit",
            g.array_macs_per_run * (mux_inputs(hw) - 1) * value_bits)
    return counts


def _buffer_kib(hw, buffer: str) -> float:
    if buffer == "metadata_buffer":
        return metadata_buffer_kib(hw)
    return getattr(hw, {"weight_buffer": "weight_buffer_kib", "act_buffer": "act_buffer_kib",
                        "out_buffer": "out_buffer_kib"}[buffer])


def action_pj(hw, table: EnergyTable, component: str, action: str, pattern: str) -> float:
    """Energy (pJ) of one counted action (:func:`gemm_actions`) on ``hw`` running
    ``pattern``."""
    node = hw.process_nm
    if component == "dram":
        base = "write" if action.startswith("write") else "read"
        return table.pj("dram", base, node, technology=table.dram_technology)
    if component in BUFFERS:
        return table.sram_pj_per_bit(action, _buffer_kib(hw, component), node)
    if component == "decoder" and action == ROM_ACTION:
        p = Pattern.parse(pattern)
        return table.sram_pj_per_bit("read", p.configurations * p.m / 8 / 1024, node)
    if component == "mac_array" and action != "idle_slot":
        dtype = hw.dtype if action == "multiply" else (
            "int32" if hw.dtype == "int8" else "fp32")
        return table.pj(component, action, node, dtype=dtype)
    return table.pj(component, action, node)


def workload_energy(result, table: EnergyTable | None = None) -> dict:
    """The energy fields of a simulated workload (:class:`WorkloadResult`): ``energy_j``,
    ``energy_breakdown_j`` ({component: {action: J}}), ``pj_per_mac`` (per dense-equivalent
    MAC, m x n x k), ``tops_per_w`` (dense-equivalent: 2 m n k ops per joule / 1e12),
    ``average_power_w`` (energy / simulated time), ``energy_actions`` (the counts), and
    ``gemms``: per GEMM of ``result.gemms``, its ``energy_j`` and ``energy_actions``
    ({"component.action": count}, all its runs)."""
    table = table or load_table()
    hw = result.hardware
    breakdown: dict[str, dict[str, float]] = {}
    actions: dict[str, dict[str, float]] = {}
    prices: dict = {}
    per_gemm = []
    for g in result.gemms:
        mine = {"energy_j": 0.0, "energy_actions": {}}
        for (component, action), count in gemm_actions(hw, g).items():
            key = (component, action, g.pattern)
            if key not in prices:
                prices[key] = action_pj(hw, table, component, action, g.pattern)
            count *= g.count
            joules = count * prices[key] / PJ_PER_J
            slot = actions.setdefault(component, {})
            slot[action] = slot.get(action, 0.0) + count
            slot = breakdown.setdefault(component, {})
            slot[action] = slot.get(action, 0.0) + joules
            mine["energy_actions"][f"{component}.{action}"] = count
            mine["energy_j"] += joules
        per_gemm.append(mine)
    energy = sum(v for actions_j in breakdown.values() for v in actions_j.values())
    macs = sum(g.m * g.n * g.k * g.count for g in result.gemms)
    seconds = result.total_cycles / (hw.run_clock_ghz * 1e9)
    return {
        "energy_j": energy,
        "energy_breakdown_j": breakdown,
        "pj_per_mac": energy * PJ_PER_J / macs if macs else 0.0,
        "tops_per_w": 2 * macs / energy / 1e12 if energy else 0.0,
        "average_power_w": energy / seconds if seconds else 0.0,
        "energy_table": table.path,
        "energy_actions": actions,
        "gemms": per_gemm,
    }


def attach_energy(record: dict, result, table: EnergyTable | None = None) -> dict:
    """Add :func:`workload_energy` to ``record`` (``result.to_dict()``): the workload's fields
    at the top, each GEMM's ``energy_j`` and ``energy_actions`` into its ``gemms`` entry."""
    energy = workload_energy(result, table)
    for entry, extra in zip(record["gemms"], energy.pop("gemms"), strict=True):
        entry.update(extra)
    record.update(energy)
    return energy


# Every (component, action) the model can charge: the flat sweep columns, the same on every point.
DRAM_CLASSES = ("values", "metadata", "activations", "salient")  # mapping.bytes_by_class
BREAKDOWN_KEYS = (
    *(("mac_array", a) for a in COMPONENT_ACTIONS["mac_array"]),
    ("operand_mux", "mux2_bit"),
    *(("decoder", a) for a in DECODER_ACTIONS),
    *((b, a) for b in BUFFERS for a in ("read", "write")),
    *(("dram", f"read_{c}") for c in DRAM_CLASSES), ("dram", "write_outputs"),
)


def breakdown_columns(breakdown: dict) -> dict[str, float]:
    """Flat ``energy_<component>_<action>_j`` columns of an ``energy_breakdown_j``: every key of
    :data:`BREAKDOWN_KEYS` (0.0 when not charged), then any other charged pair."""
    flat = {(c, a): v for c, actions in breakdown.items() for a, v in actions.items()}
    keys = list(BREAKDOWN_KEYS) + sorted(set(flat) - set(BREAKDOWN_KEYS))
    return {f"energy_{c}_{a}_j": flat.get((c, a), 0.0) for c, a in keys}


def check_table(table: EnergyTable, hw) -> None:
    """Raise (naming the file and the entry) unless ``table`` prices every action ``hw`` can
    charge, so that a simulation never runs on a table it cannot use."""
    node = hw.process_nm
    for action in ("multiply", "accumulate", "idle_slot"):
        action_pj(hw, table, "mac_array", action, "dense")
    for buffer in BUFFERS:
        for action in ("read", "write"):
            action_pj(hw, table, buffer, action, "dense")
    if not hw.is_sparse:
        return
    table.pj("operand_mux", "mux2_bit", node)
    decoder = decoder_model(hw.decoder_kind)
    for p in hw.supported:
        for action in decoder.energy_actions(p):
            action_pj(hw, table, "decoder", action, str(p))
