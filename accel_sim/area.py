"""Area model: one class per component, explicit units (um^2 per instance, mm^2 reported).

Every constant carries its source, process node and unit. Logic is costed at 45 nm (published
45 nm arithmetic and standard-cell areas) and scaled to the design's node by the ratio of
(contacted gate pitch x minimum metal pitch), the usual first-order logic-density proxy; SRAM is
costed with the published high-density bitcell of the node (log-log interpolation between nodes).
Not modelled: control, NoC/crossbar, register files beyond the listed buffers, clock tree, I/O.

Decoders and operand muxes are costed at their synthesized circuits (:mod:`accel_sim.rtl`,
Yosys onto NanGate 45 nm cells, fitted per kind; see reports/area/synthesis.md); dot-product
units are multipliers + one adder tree + one accumulator; every PE carries its pipeline
registers, a sparse PE also its index register and the operand fan-in its mux selects from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compression.formats import Pattern

from .config import HardwareConfig
from .decoders import decoder_model
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

# ---- 45 nm standard cells, um^2. Source: NanGate FreePDK45 Open Cell Library (45 nm), LEF
# footprints (width x 1.4 um cell height; OpenROAD test/Nangate45/Nangate45.lef): MUX2_X1
# 1.862 (1.33 wide), FA_X1 4.256 (3.04), DFF_X1 4.522 (3.23).
MUX2_UM2_45 = 1.862
FULL_ADDER_UM2_45 = 4.256
FLIP_FLOP_UM2_45 = 4.522
# A salient lane adds a side-car entry's in-block offset to its block's base column to address
# the activation: a ripple adder of 16 full adders, enough for k up to 65,536 columns (the
# widest k here is LLaMa-2-70B's down_proj, 28,672; workloads.models). Project sizing.
SALIENT_OFFSET_ADDER_BITS = 16

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


# ---- Dot-product unit (a tensor core's W-wide dot product): W multipliers feed one shared
# adder tree and one accumulator. Integer products add exactly in a tree of W - 1 int32 adders
# (Horowitz's 32b add above); floating-point products are aligned to the largest exponent by a
# barrel shifter each and summed as integers (the tree), then added to the fp32 accumulator once.
# The aligned width is taken as 32 bits (fp16: 22-bit product significand + sign and guard bits);
# a 32-bit logarithmic barrel shifter is 5 levels x 32 MUX2 (NanGate MUX2_X1 above). This is
# the multi-operand design of fused dot-product units; an assumption of this model, not a
# published tensor-core netlist.
ALIGNED_PRODUCT_BITS = 32
ALIGN_SHIFTER_UM2_45 = ALIGNED_PRODUCT_BITS * 5 * MUX2_UM2_45

# ---- Operand-mux area: least-squares fit to the Yosys synthesis of its Amaranth circuit
# (accel_sim/rtl) in NanGate 45 nm cells, um^2 per unit of each feature of :func:`mux_features`;
# the fit, each circuit's synthesized area and the fit's error are in reports/area/synthesis.md
# (regenerate: python -m accel_sim.rtl.synth). Each decoder model owns its own fit
# (:attr:`accel_sim.decoders.DecoderModel.area_fit_um2`).
MUX_FIT_UM2 = (1.314, 0.4116)  # per (inputs - 1) x width bit, per width bit (see mux_features)


def _bits(value: int) -> int:
    return max(1, (value - 1).bit_length())


def multiplier_um2_45(dtype: str) -> float:
    """One multiplier of the value dtype (Horowitz 45 nm; bf16/fp8 by significand width^2)."""
    if dtype == "int8":
        return INT8_MULT_UM2_45
    if dtype in SIGNIFICAND_BITS:
        return FP16_MULT_UM2_45 * (SIGNIFICAND_BITS[dtype] / FP16_SIGNIFICAND_BITS) ** 2
    return FP16_MULT_UM2_45


@dataclass(frozen=True)
class DotProductUnit:
    """``width`` multipliers + one adder tree (+ alignment for floats) + one accumulator; a
    systolic PE is the width-1 case (multiplier + accumulator)."""

    dtype: str
    width: int

    def area_um2_45(self) -> float:
        integer = self.dtype == "int8"
        tree = (self.width - 1) * INT32_ADD_UM2_45
        align = 0.0 if integer or self.width == 1 else self.width * ALIGN_SHIFTER_UM2_45
        accumulator = INT32_ADD_UM2_45 if integer else FP32_ADD_UM2_45
        return self.width * multiplier_um2_45(self.dtype) + tree + align + accumulator


@dataclass(frozen=True)
class OperandMux:
    """An ``inputs``:1 mux of ``width`` bits, at the area its synthesized circuit fits."""

    inputs: int
    width: int

    def area_um2_45(self) -> float:
        if self.inputs <= 1:
            return 0.0
        return sum(f * c for f, c in zip(mux_features(self.inputs, self.width), MUX_FIT_UM2,
                                         strict=True))


def mux_features(inputs: int, width: int) -> tuple[float, float]:
    """Size measures of an ``inputs``:1 mux circuit: its 2:1 tree, and its select decoding
    per output bit."""
    return ((inputs - 1) * width, width)


@dataclass(frozen=True)
class MetadataDecoder:
    """One metadata decoder serving every supported pattern, at the area its decoder model
    gives (:mod:`accel_sim.decoders`: the fit to its synthesized circuit, 45 nm logic, or a ROM
    macro of SRAM-bit area, see :meth:`rom_bits`)."""

    kind: str
    patterns: tuple[Pattern, ...]

    @property
    def rom_macro(self) -> bool:
        return self.rom_bits() > 0

    def logic_um2_45(self) -> float:
        return decoder_model(self.kind).logic_um2_45(self.patterns)

    def rom_bits(self) -> int:
        return decoder_model(self.kind).rom_bits(self.patterns)


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


def _pe_register_bits(hw: HardwareConfig) -> dict[str, float]:
    """Flip-flop bits per core of the PE pipeline registers and of the sparse PE's extras.

    * ``pipeline_regs`` (dense and sparse): per multiplier a weight and an activation operand
      register, per dot-product unit (systolic PE) a partial-sum register;
    * ``index_regs`` (sparse): per multiplier the held weight's select index (the stationary
      weight's in a weight-stationary PE, the forwarded one's otherwise);
    * ``operand_fanin`` (sparse), by template: a systolic PE's mux picks among ``inputs``
      activations, so it holds ``inputs - 1`` forwarding registers more than a dense PE; a
      tensor core's dot-product unit of width W receives W x max(M/N) activations (a wider
      operand bus, registered at the unit) instead of W.
    """
    macs = hw.macs_per_cycle_per_core
    width = hw.dot_width if hw.template == "tensor_core" else 1
    units = macs // width
    value_bits, acc_bits = hw.value_bytes * 8, hw.accumulator_bytes * 8
    out = {"pipeline_regs": macs * 2 * value_bits + units * acc_bits,
           "index_regs": 0.0, "operand_fanin": 0.0}
    if hw.is_sparse:
        inputs = mux_inputs(hw)
        out["index_regs"] = macs * _bits(inputs)
        if hw.template == "systolic":
            out["operand_fanin"] = macs * (inputs - 1) * value_bits
        else:
            expand = max(p.m / p.n for p in hw.supported)
            out["operand_fanin"] = units * width * (expand - 1) * value_bits
    return out


def area_breakdown(hw: HardwareConfig) -> dict[str, float]:
    """Area per component in mm^2 (whole chip: per-core figures x ``num_cores``), plus total."""
    logic = logic_scale(hw.process_nm)
    cores = hw.num_cores
    macs = hw.macs_per_cycle_per_core
    width = hw.dot_width if hw.template == "tensor_core" else 1
    out = {"mac_array": cores * (macs // width) * DotProductUnit(hw.dtype, width).area_um2_45()
           * logic}
    out.update({name: cores * bits * FLIP_FLOP_UM2_45 * logic
                for name, bits in _pe_register_bits(hw).items()})
    out.update(operand_mux=0.0, decoders=0.0, metadata_buffer=0.0)
    if hw.is_sparse:
        out["operand_mux"] = cores * macs * OperandMux(
            mux_inputs(hw), hw.value_bytes * 8).area_um2_45() * logic
        dec = MetadataDecoder(hw.decoder_kind, hw.supported)
        per_core = dec.logic_um2_45() * logic + dec.rom_bits() * sram_bit_um2(hw.process_nm)
        out["decoders"] = cores * hw.num_decoders * per_core
        out["metadata_buffer"] = cores * SramBuffer(metadata_buffer_kib(hw)).area_um2(
            hw.process_nm)
    lane = (DotProductUnit(hw.dtype, 1).area_um2_45()
            + SALIENT_OFFSET_ADDER_BITS * FULL_ADDER_UM2_45)
    out["salient_lanes"] = cores * hw.salient_lanes * lane * logic
    for name in ("weight_buffer", "act_buffer", "out_buffer"):
        out[name] = cores * SramBuffer(getattr(hw, f"{name}_kib")).area_um2(hw.process_nm)
    mm2 = {name: value / UM2_PER_MM2 for name, value in out.items()}
    mm2["total"] = sum(mm2.values())
    return mm2

