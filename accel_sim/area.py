"""Area model: one class per component, explicit units (um^2 per instance, mm^2 reported).

Every constant carries its source, process node and unit. Logic is costed at 45 nm (published
45 nm arithmetic and standard-cell areas) and scaled to the design's node by the ratio of
(contacted gate pitch x minimum metal pitch), the usual first-order logic-density proxy; SRAM is
costed with the published high-density bitcell of the node (log-log interpolation between nodes).
Not modelled: control, NoC/crossbar, register files beyond the listed buffers, clock tree, I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compression.formats import Pattern

from .config import HardwareConfig
from .mapping import mux_inputs

UM2_PER_MM2 = 1e6

# ---- 45 nm arithmetic, um^2 per unit. Source: M. Horowitz, "Computing's energy problem (and what
# we can do about it)", ISSCC 2014, area table (45 nm): 8b mult 282, 32b add 137, 16b FP mult
# 1640, 32b FP add 4184.
INT8_MULT_UM2_45 = 282.0
INT32_ADD_UM2_45 = 137.0
FP16_MULT_UM2_45 = 1640.0
FP32_ADD_UM2_45 = 4184.0
# bf16 / fp8 multipliers: derived here from the fp16 one by the significand-multiplier array,
# which grows with the square of the significand width (fp16 11 bits, bf16 8, fp8 E4M3 4).
FP16_SIGNIFICAND_BITS = 11
SIGNIFICAND_BITS = {"bf16": 8, "fp8": 4}

# ---- 45 nm standard cells, um^2. Source: NanGate FreePDK45 Open Cell Library (45 nm), cell
# height 1.4 um: MUX2_X1 1.862, FA_X1 4.256, DFF_X1 4.522, NAND2_X1 0.798.
MUX2_UM2_45 = 1.862
FULL_ADDER_UM2_45 = 4.256
FLIP_FLOP_UM2_45 = 4.522
NAND2_UM2_45 = 0.798

# ---- Logic scaling: contacted gate pitch x minimum metal pitch, nm^2, per node. Sources: Intel
# 45 nm (Mistry et al., IEDM 2007: 160 nm gate pitch, 160 nm M1 pitch); TSMC 28 nm (117 x 90);
# TSMC 16FF (90 x 64); TSMC N7 (57 x 40); TSMC N5 (51 x 28) - the foundries' published pitches as
# tabulated by WikiChip. 45 nm is the reference (factor 1).
GATE_X_METAL_PITCH_NM2 = {45: 160 * 160, 28: 117 * 90, 16: 90 * 64, 7: 57 * 40, 5: 51 * 28}
# ---- SRAM high-density 6T bitcell, um^2. Sources: Intel 45 nm 0.346 (Mistry, IEDM 2007); TSMC
# 28 nm 0.127 (TSMC 28HPM HD cell); TSMC 16FF+ 0.070; TSMC N7 0.027 (Chang et al., ISSCC 2017);
# TSMC N5 0.021 (Yeap et al., IEDM 2019).
SRAM_BITCELL_UM2 = {45: 0.346, 28: 0.127, 16: 0.070, 7: 0.027, 5: 0.021}
# Array efficiency (bitcells / macro area incl. decoders, sense amps, I/O): 0.7 assumed, the
# order CACTI reports for large macros. Mask-programmed ROM is costed at the SRAM bitcell
# (conservative: a ROM bit is smaller).
SRAM_ARRAY_EFFICIENCY = 0.7


def _interp_loglog(table: dict[float, float], node_nm: float) -> float:
    nodes = sorted(table)
    if node_nm in table:
        return table[node_nm]
    lo = max([n for n in nodes if n <= node_nm], default=nodes[0])
    hi = min([n for n in nodes if n >= node_nm], default=nodes[-1])
    if lo == hi:  # outside the table: extrapolate from the nearest pair
        lo, hi = (nodes[0], nodes[1]) if node_nm < nodes[0] else (nodes[-2], nodes[-1])
    t = (math.log(node_nm) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return math.exp(math.log(table[lo]) + t * (math.log(table[hi]) - math.log(table[lo])))


def logic_scale(node_nm: float) -> float:
    """Area factor from 45 nm logic to ``node_nm``."""
    return _interp_loglog(GATE_X_METAL_PITCH_NM2, node_nm) / GATE_X_METAL_PITCH_NM2[45]


def sram_bit_um2(node_nm: float) -> float:
    """Macro area per SRAM bit at ``node_nm`` (bitcell / array efficiency)."""
    return _interp_loglog(SRAM_BITCELL_UM2, node_nm) / SRAM_ARRAY_EFFICIENCY


@dataclass(frozen=True)
class MacUnit:
    """One multiply-accumulate: multiplier of the value dtype + accumulator adder
    (int32 for int8, fp32 otherwise)."""

    dtype: str

    def area_um2_45(self) -> float:
        if self.dtype == "int8":
            return INT8_MULT_UM2_45 + INT32_ADD_UM2_45
        mult = FP16_MULT_UM2_45
        if self.dtype in SIGNIFICAND_BITS:
            mult *= (SIGNIFICAND_BITS[self.dtype] / FP16_SIGNIFICAND_BITS) ** 2
        return mult + FP32_ADD_UM2_45


@dataclass(frozen=True)
class OperandMux:
    """An ``inputs``:1 mux of ``width`` bits as a tree of (inputs - 1) 2:1 mux cells per bit."""

    inputs: int
    width: int

    def area_um2_45(self) -> float:
        return max(0, self.inputs - 1) * self.width * MUX2_UM2_45


def _bits(value: int) -> int:
    return max(1, (value - 1).bit_length())


@dataclass(frozen=True)
class MetadataDecoder:
    """One metadata decoder serving every supported pattern (one block per cycle, or per M
    cycles for ``rank_serial``). Logic in 45 nm cells; the rank ROM in SRAM-bit area."""

    kind: str
    patterns: tuple[Pattern, ...]
    select_bits: int  # width of one operand-select signal

    def logic_um2_45(self) -> float:
        m_max = max(p.m for p in self.patterns)
        n_max = max(p.n for p in self.patterns)
        # Output register: N_max select signals.
        regs = n_max * self.select_bits * FLIP_FLOP_UM2_45
        if self.kind == "direct":
            return regs
        if self.kind == "popcount":
            # Prefix popcount over M bits: log2(M) levels of M adders of ceil(log2(M+1)) bits,
            # then N one-hot-to-position encoders of M x log2(M) NAND2 each.
            levels = _bits(m_max)
            adders = m_max * levels * _bits(m_max + 1)
            encoders = n_max * m_max * levels
            return regs + adders * FULL_ADDER_UM2_45 + encoders * NAND2_UM2_45
        rank_bits = max(p.rank_bits for p in self.patterns)
        slot_bits = _bits(n_max + 1)
        # One compare-subtract stage: a rank_bits subtractor whose borrow is the compare
        # (rank_bits full adders), a mux picking the constant C(c, k) among the N_max x patterns
        # hard-wired binomials, and the stage registers (rank, slot, M-bit keep mask).
        constants = n_max * len(self.patterns)
        stage = (rank_bits * FULL_ADDER_UM2_45
                 + OperandMux(constants, rank_bits).area_um2_45()
                 + (rank_bits + slot_bits + m_max) * FLIP_FLOP_UM2_45)
        if self.kind == "rank_pipeline":
            return regs + m_max * stage
        if self.kind == "rank_serial":
            return regs + stage + _bits(m_max) * FLIP_FLOP_UM2_45  # + stage counter
        if self.kind == "rank_rom":
            return regs + rank_bits * FLIP_FLOP_UM2_45  # address register
        raise ValueError(f"unknown decoder kind '{self.kind}'")

    def rom_bits(self) -> int:
        """ROM of C(M, N) x M bits per supported pattern (``rank_rom`` only)."""
        if self.kind != "rank_rom":
            return 0
        return sum(p.configurations * p.m for p in self.patterns)


@dataclass(frozen=True)
class SramBuffer:
    """An on-chip SRAM buffer of ``kib`` KiB."""

    kib: float

    def area_um2(self, node_nm: float) -> float:
        return self.kib * 1024 * 8 * sram_bit_um2(node_nm)


def metadata_buffer_kib(hw: HardwareConfig) -> float:
    """Metadata storage beside the weight buffer: enough for the metadata of every value the
    weight buffer holds, at the costliest supported pattern (bits per kept value = bits per
    element x M / N, from compression.formats)."""
    if not hw.is_sparse:
        return 0.0
    values = hw.weight_buffer_kib * 1024 / hw.value_bytes
    bits_per_kept = max(p.bits_per_element(hw.encoding) * p.m / p.n for p in hw.supported)
    return values * bits_per_kept / 8 / 1024


def area_breakdown(hw: HardwareConfig) -> dict[str, float]:
    """Area per component in mm^2 (whole chip: per-core figures x ``num_cores``), plus total."""
    logic = logic_scale(hw.process_nm)
    cores = hw.num_cores
    macs = hw.macs_per_cycle_per_core
    width_bits = hw.value_bytes * 8
    out = {
        "mac_array": cores * macs * MacUnit(hw.dtype).area_um2_45() * logic,
        "operand_mux": 0.0,
        "decoders": 0.0,
        "metadata_buffer": 0.0,
    }
    if hw.is_sparse:
        inputs = mux_inputs(hw)
        out["operand_mux"] = cores * macs * OperandMux(inputs, width_bits).area_um2_45() * logic
        dec = MetadataDecoder(hw.decoder_kind, hw.supported, _bits(inputs))
        per_core = dec.logic_um2_45() * logic + dec.rom_bits() * sram_bit_um2(hw.process_nm)
        out["decoders"] = cores * hw.num_decoders * per_core
        out["metadata_buffer"] = cores * SramBuffer(metadata_buffer_kib(hw)).area_um2(
            hw.process_nm)
    out["salient_lanes"] = cores * hw.salient_lanes * (
        MacUnit(hw.dtype).area_um2_45() + 16 * FULL_ADDER_UM2_45) * logic  # + offset adder
    for name in ("weight_buffer", "act_buffer", "out_buffer"):
        out[name] = cores * SramBuffer(getattr(hw, f"{name}_kib")).area_um2(hw.process_nm)
    mm2 = {name: value / UM2_PER_MM2 for name, value in out.items()}
    mm2["total"] = sum(mm2.values())
    return mm2
