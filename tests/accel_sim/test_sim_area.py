"""Area model: closed forms of the components and the dense < 2:4 < flexible ordering.

The decoder and mux fits against synthesis are checked in test_rtl.py."""

import math

import pytest

from accel_sim.area import (
    ALIGN_SHIFTER_UM2_45,
    FLIP_FLOP_UM2_45,
    FP16_MULT_UM2_45,
    FP32_ADD_UM2_45,
    INT8_MULT_UM2_45,
    INT32_ADD_UM2_45,
    MetadataDecoder,
    OperandMux,
    area_breakdown,
    logic_scale,
    metadata_buffer_kib,
)
from accel_sim.config import load_hardware
from compression.formats import Pattern


def test_flexible_costs_more_than_fixed_24_which_costs_more_than_dense():
    dense, fixed, flexible = (area_breakdown(load_hardware(n))
                              for n in ("dense", "a100-like", "flexible-nm"))
    assert dense["total"] < fixed["total"] < flexible["total"]
    for part in ("operand_mux", "metadata_buffer", "index_regs", "operand_fanin"):
        assert dense[part] == 0.0
        assert fixed[part] > 0.0
    assert fixed["decoders"] == 0.0  # 2:4 index metadata drives the muxes: wires only
    assert flexible["decoders"] > 0.0
    assert flexible["operand_mux"] > fixed["operand_mux"]
    assert dense["mac_array"] == fixed["mac_array"] == flexible["mac_array"]
    assert dense["pipeline_regs"] == fixed["pipeline_regs"] > 0.0
    for breakdown in (dense, fixed, flexible):
        assert breakdown["total"] == pytest.approx(
            sum(v for k, v in breakdown.items() if k != "total"))


def test_sorted_mux_is_m_minus_n_plus_one_inputs():
    hw = load_hardware("flexible-nm").replace(supported_patterns=["8:16"], pattern="8:16")
    full = area_breakdown(hw.replace(mux_style="full"))["operand_mux"]
    sorted_ = area_breakdown(hw.replace(mux_style="sorted"))["operand_mux"]
    assert sorted_ < full
    assert sorted_ / full == pytest.approx(OperandMux(9, 16).area_um2_45()
                                           / OperandMux(16, 16).area_um2_45())
    assert OperandMux(1, 16).area_um2_45() == 0.0


def test_large_rank_rom_is_a_macro_of_every_blocks_selects():
    patterns = (Pattern(2, 4), Pattern(8, 16))
    rom = MetadataDecoder("rank_rom", patterns)
    # C(M, N) words per pattern of N_max selects of log2(M_max) bits.
    assert rom.rom_bits() == (math.comb(4, 2) + math.comb(16, 8)) * 8 * 4
    assert rom.logic_um2_45() == 0.0
    small = MetadataDecoder("rank_rom", (Pattern(2, 4),))
    assert small.rom_bits() == 0 and small.logic_um2_45() > 0.0  # synthesized as logic
    assert MetadataDecoder("rank_pipeline", patterns).rom_bits() == 0


def test_pipelined_rank_decoder_grows_with_m_and_serial_is_smaller():
    small = MetadataDecoder("rank_pipeline", (Pattern(2, 4),)).logic_um2_45()
    large = MetadataDecoder("rank_pipeline", (Pattern(8, 16),)).logic_um2_45()
    serial = MetadataDecoder("rank_serial", (Pattern(8, 16),)).logic_um2_45()
    assert large > 4 * small
    assert serial < large / 3


def test_mac_array_at_45nm_is_multipliers_one_adder_tree_and_one_accumulator():
    hw = load_hardware("dense").replace(process_nm=45)
    units, w = hw.num_cores * hw.array_rows * hw.array_cols, hw.dot_width
    per_unit = (w * FP16_MULT_UM2_45 + (w - 1) * INT32_ADD_UM2_45 + w * ALIGN_SHIFTER_UM2_45
                + FP32_ADD_UM2_45)
    assert area_breakdown(hw)["mac_array"] == pytest.approx(units * per_unit / 1e6)
    tpu = load_hardware("tpu-v1-like").replace(process_nm=45)  # int8 systolic: 1 MAC per PE
    assert area_breakdown(tpu)["mac_array"] == pytest.approx(
        256 * 256 * (INT8_MULT_UM2_45 + INT32_ADD_UM2_45) / 1e6)
    assert logic_scale(45) == 1.0
    assert logic_scale(7) < logic_scale(16) < logic_scale(28) < 1.0


def test_metadata_buffer_follows_formats_bits_per_element():
    hw = load_hardware("a100-like")
    values = hw.weight_buffer_kib * 1024 / hw.value_bytes
    # 2:4 index: 2 bits per kept value; rank: 3 bits per block of 2 kept = 1.5 bits.
    assert metadata_buffer_kib(hw) == pytest.approx(values * 2 / 8 / 1024)
    rank = hw.replace(encoding="rank", decoder="rank_rom")
    assert metadata_buffer_kib(rank) == pytest.approx(values * 1.5 / 8 / 1024)


def test_pe_registers_by_template():
    sys_ = load_hardware("systolic-nm").replace(process_nm=45)
    pes, bits = 128 * 128, 16
    got = area_breakdown(sys_)
    # weight + activation operand registers and an fp32 partial sum per PE.
    assert got["pipeline_regs"] == pytest.approx(pes * (2 * bits + 32) * FLIP_FLOP_UM2_45 / 1e6)
    # sorted 8:16 mux = 9 inputs: 8 forwarding registers more, a 4-bit index register.
    assert got["operand_fanin"] == pytest.approx(pes * 8 * bits * FLIP_FLOP_UM2_45 / 1e6)
    assert got["index_regs"] == pytest.approx(pes * 4 * FLIP_FLOP_UM2_45 / 1e6)
    tc = load_hardware("a100-like").replace(process_nm=45)
    macs = tc.num_cores * tc.macs_per_cycle_per_core
    # 2:4: a width-8 dot-product unit receives 16 activations instead of 8.
    assert area_breakdown(tc)["operand_fanin"] == pytest.approx(
        macs * bits * FLIP_FLOP_UM2_45 / 1e6)

