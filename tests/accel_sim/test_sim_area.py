"""Area model: closed forms of the components and the dense < 2:4 < flexible ordering."""

import math

import pytest

from accel_sim.area import (
    FP16_MULT_UM2_45,
    FP32_ADD_UM2_45,
    MUX2_UM2_45,
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
    for part in ("operand_mux", "decoders", "metadata_buffer"):
        assert dense[part] == 0.0
        assert fixed[part] > 0.0
    assert flexible["operand_mux"] > fixed["operand_mux"]
    assert dense["mac_array"] == fixed["mac_array"] == flexible["mac_array"]
    for breakdown in (dense, fixed, flexible):
        assert breakdown["total"] == pytest.approx(
            sum(v for k, v in breakdown.items() if k != "total"))


def test_sorted_mux_is_m_minus_n_plus_one_inputs():
    hw = load_hardware("flexible-nm").replace(supported_patterns=["8:16"], pattern="8:16")
    full = area_breakdown(hw.replace(mux_style="full"))["operand_mux"]
    sorted_ = area_breakdown(hw.replace(mux_style="sorted"))["operand_mux"]
    # (M-N+1):1 = 9:1 against 16:1: (9-1) / (16-1) 2:1 cells per bit.
    assert sorted_ / full == pytest.approx(8 / 15)
    assert OperandMux(9, 16).area_um2_45() == pytest.approx(8 * 16 * MUX2_UM2_45)


def test_rank_rom_holds_c_m_n_by_m_bits_per_pattern():
    patterns = (Pattern(2, 4), Pattern(8, 16))
    rom = MetadataDecoder("rank_rom", patterns, 4)
    assert rom.rom_bits() == math.comb(4, 2) * 4 + math.comb(16, 8) * 16
    assert MetadataDecoder("rank_pipeline", patterns, 4).rom_bits() == 0


def test_pipelined_rank_decoder_grows_with_m_and_serial_is_smaller():
    small = MetadataDecoder("rank_pipeline", (Pattern(2, 4),), 2).logic_um2_45()
    large = MetadataDecoder("rank_pipeline", (Pattern(8, 16),), 4).logic_um2_45()
    serial = MetadataDecoder("rank_serial", (Pattern(8, 16),), 4).logic_um2_45()
    assert large > 4 * small
    assert serial < large / 8


def test_mac_array_at_45nm_is_horowitz_fp16_mult_plus_fp32_add():
    hw = load_hardware("dense").replace(process_nm=45)
    macs = hw.num_cores * hw.macs_per_cycle_per_core
    expected_mm2 = macs * (FP16_MULT_UM2_45 + FP32_ADD_UM2_45) / 1e6
    assert area_breakdown(hw)["mac_array"] == pytest.approx(expected_mm2)
    assert logic_scale(45) == 1.0
    assert logic_scale(7) < logic_scale(16) < logic_scale(28) < 1.0


def test_metadata_buffer_follows_formats_bits_per_element():
    hw = load_hardware("a100-like")
    values = hw.weight_buffer_kib * 1024 / hw.value_bytes
    # 2:4 index: 2 bits per kept value; rank: 3 bits per block of 2 kept = 1.5 bits.
    assert metadata_buffer_kib(hw) == pytest.approx(values * 2 / 8 / 1024)
    rank = hw.replace(encoding="rank", decoder="rank_rom")
    assert metadata_buffer_kib(rank) == pytest.approx(values * 1.5 / 8 / 1024)
