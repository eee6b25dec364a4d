"""Metadata decoder models: the hardware's reading of :mod:`compression.formats` metadata.

Each decoder turns a row-aligned metadata stream (the layout of ``compression.formats``; fields are
extracted with its :func:`~compression.formats.unpack_fields`) into the operand-select signals of
every block: the ascending kept positions. The models compute what the circuit computes, step by
step, so that ``functional_matmul`` and the kernels can be checked against them bit for bit:

* ``direct`` (``index``): the index fields are the mux selects; no logic.
* ``popcount`` (``bitmask``): an exclusive prefix popcount over the M mask bits gives each set
  bit its slot; slot k's mux select is the bit's position.
* ``rank_rom`` (``rank``): a ROM of C(M, N) entries, addressed by the rank, holding the M-bit mask
  (the table is programmed here by enumerating the combinations in colex order).
* ``rank_pipeline`` / ``rank_serial`` (``rank``): colex unranking by compare-subtract, one stage per
  candidate position c = M-1 .. 0: if rank >= C(c, k) (k = kept elements still to place), c is kept
  and C(c, k) is subtracted. ``pipeline`` has M stages (one block per cycle, M cycles latency);
  ``serial`` reuses one stage M times (one block per M cycles).

Timing per decoder instance: :meth:`DecoderModel.blocks_per_cycle` and
:meth:`DecoderModel.latency_cycles`. Each model owns its circuit: :meth:`DecoderModel.circuit`
returns the Amaranth RTL (:mod:`accel_sim.rtl.decoders`) that the tests simulate bit for bit and
cycle by cycle against the format and this model's timing, and that :mod:`accel_sim.rtl.synth`
synthesizes; and its area: :meth:`DecoderModel.area_features` (structural size measures of that
circuit) times :attr:`DecoderModel.area_fit_um2` (the fit to the synthesis), which
:mod:`accel_sim.area` asks for.

``DECODER_MODELS`` is the registry: one name per decoder, the same in configs, sweeps, reports
and the kernels (:data:`nm_kernels.numba_nm.KERNEL_DECODERS`). A decoder is added by adding its
class to it; configs, CLI choices and sweep axes derive their choices from it.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal

from compression.formats import FormatError, Pattern, binomial_table, encoding_of

from .rtl import decoders as rtl

# A rank ROM larger than this many entries is not a buildable decoder (2**16 x M bits: 8:16 has
# 12870 entries, 16:32 has 601 080 390).
MAX_RANK_ROM_ENTRIES = 1 << 16
# A rank ROM of more words than this is a ROM macro (SRAM-bit area), not logic.
MAX_LOGIC_ROM_WORDS = 256


class DecoderModel:
    """Base class: a decoder of one metadata encoding: function, timing, circuit and area.

    ``auto`` marks the decoder a config's ``decoder: auto`` picks for its encoding.
    ``area_fit_um2``: um^2 (45 nm NanGate cells) per unit of each :meth:`area_features` entry,
    the non-negative least-squares fit to the Yosys synthesis of :meth:`circuit`
    (reports/area/synthesis.md; regenerate with ``python -m accel_sim.rtl.synth``).
    """

    kind = ""
    encoding = ""
    auto = False
    circuit_class: type[rtl.DecoderCircuit] = rtl.DecoderCircuit
    area_fit_um2: tuple[float, ...] = ()

    def blocks_per_cycle(self, pattern: Pattern) -> float:
        """Blocks one decoder instance finishes per cycle (``inf``: no decoding work)."""
        return 1.0

    def latency_cycles(self, pattern: Pattern, supported: tuple[Pattern, ...] = ()) -> int:
        """Cycles from metadata in to select signals out while running ``pattern`` on a
        decoder built for ``supported`` (default: ``pattern`` alone)."""
        raise NotImplementedError

    def energy_actions(self, pattern: Pattern) -> dict[str, float]:
        """The actions of decoding one block of ``pattern``, counted on this decoder's circuit
        (:mod:`accel_sim.rtl.decoders`), for the energy model (:mod:`accel_sim.energy`):
        ``adder_bit`` (one bit of an adder or subtractor), ``comparator_bit``, ``register_bit``
        (a pipeline flip-flop written), ``rom_read_bit`` (a ROM bit read)."""
        raise NotImplementedError

    def circuit(self, patterns: tuple[Pattern, ...]) -> rtl.DecoderCircuit:
        """The Amaranth circuit of this decoder serving ``patterns`` (one datapath)."""
        return self.circuit_class(tuple(Pattern.parse(p) for p in patterns))

    def pattern_errors(self, pattern: Pattern, encoding: str | None = None) -> list[str]:
        """Why this decoder cannot serve ``pattern`` with ``encoding`` metadata (default its
        own; empty: it can): a field wider than the encoding's decoder datapath
        (:attr:`compression.formats.Encoding.max_field_bits`)."""
        encoding = encoding or self.encoding
        limit = encoding_of(encoding).max_field_bits
        bits = pattern.field_bits(encoding)
        if limit is not None and bits > limit:
            return [(f"pattern {pattern}: {encoding} of {bits} bits exceeds the {limit}-bit "
                     "decoder datapath")]
        return []

    def area_features(self, patterns: tuple[Pattern, ...]) -> tuple[float, ...]:
        """Structural size measures of :meth:`circuit` serving ``patterns``."""
        return ()

    def synthesizable(self, patterns: tuple[Pattern, ...]) -> bool:
        """Whether the circuit is synthesized as logic (else costed as a ROM macro)."""
        return True

    def rom_bits(self, patterns: tuple[Pattern, ...]) -> int:
        """Bits of ROM macro the decoder holds (SRAM-bit area); 0 for logic decoders."""
        return 0

    def logic_um2_45(self, patterns: tuple[Pattern, ...]) -> float:
        """Logic area at 45 nm, um^2: the fit to the synthesized circuit (0 for a ROM macro)."""
        if not self.synthesizable(patterns):
            return 0.0
        return sum(f * c for f, c in zip(self.area_features(patterns), self.area_fit_um2,
                                         strict=True))

    def decode_fields(self, fields: np.ndarray, pattern: Pattern) -> np.ndarray:
        """Kept positions ``int64[..., N]`` from per-block fields (see :meth:`fields`)."""
        raise NotImplementedError

    def fields(self, metadata: np.ndarray, pattern: Pattern, rows: int, blocks: int) -> np.ndarray:
        """The per-block fields of a metadata stream as the circuit reads them,
        ``[rows, blocks, width]`` (:meth:`compression.formats.Encoding.unpack`)."""
        metadata = _check_stream(metadata, pattern, self.encoding, rows, blocks)
        return encoding_of(self.encoding).unpack(metadata, pattern, rows, blocks)

    def decode(self, metadata: np.ndarray, pattern: Pattern, rows: int, blocks: int
               ) -> np.ndarray:
        """Kept positions ``int64[rows, blocks, N]`` of a whole metadata stream."""
        return self.decode_fields(self.fields(metadata, pattern, rows, blocks), pattern)


def _widest_sizes(patterns: tuple[Pattern, ...]) -> tuple[int, int, int]:
    """(M_max, N_max, select bits) of a datapath serving ``patterns``."""
    m = max(p.m for p in patterns)
    return m, max(p.n for p in patterns), rtl.bits_for(m)


def _widest(pattern: Pattern, supported: tuple[Pattern, ...]) -> Pattern:
    """The pattern with the largest M among ``pattern`` and ``supported``."""
    return max((pattern, *supported), key=lambda p: p.m)


def _check_stream(metadata, pattern: Pattern, encoding: str, rows: int, blocks: int):
    metadata = np.asarray(metadata)
    want = (rows, -(-blocks * pattern.bits_per_block(encoding) // 8))
    if metadata.dtype != np.uint8 or metadata.shape != want:
        raise FormatError(f"metadata stream {metadata.dtype} {metadata.shape} does not match "
                          f"{pattern} {encoding} with {rows} rows of {blocks} blocks {want}")
    return metadata


class DirectDecoder(DecoderModel):
    """``index`` metadata: the fields drive the operand muxes directly."""

    kind, encoding, auto = "direct", "index", True
    circuit_class = rtl.DirectDecoderCircuit

    def blocks_per_cycle(self, pattern: Pattern) -> float:
        return math.inf

    def latency_cycles(self, pattern, supported=()):
        return 0

    def energy_actions(self, pattern):
        return {}  # the index fields are the selects: no logic switches

    def decode_fields(self, fields, pattern):
        return np.asarray(fields, dtype=np.int64)


class PopcountDecoder(DecoderModel):
    """``bitmask`` metadata through an exclusive prefix-popcount network (log2 M levels)."""

    kind, encoding, auto = "popcount", "bitmask", True
    circuit_class = rtl.PopcountDecoderCircuit
    area_fit_um2 = (6.261, 1.226)

    def area_features(self, patterns):
        """Registered prefix levels of M counters; the N x M slot encoder."""
        m, n, _ = _widest_sizes(patterns)
        return (math.ceil(math.log2(m)) * m * rtl.bits_for(m + 1), n * m)

    def latency_cycles(self, pattern, supported=()):
        widest = _widest(pattern, supported)  # the network spans the widest block
        return widest.index_bits + 1  # registered prefix levels + slot encoder

    def energy_actions(self, pattern):
        """Kogge-Stone prefix popcount: level l adds M - 2^l pairs of counts (and registers
        M counts and the M mask bits); the slot encoder compares each count with each slot."""
        m, width = pattern.m, (pattern.m + 1).bit_length()
        levels = math.ceil(math.log2(m))
        return {"adder_bit": float(sum((m - (1 << lvl)) * width for lvl in range(levels))),
                "register_bit": float(levels * m * (width + 1)
                                      + pattern.n * pattern.index_bits),
                "comparator_bit": float(pattern.n * m * width)}

    def decode_fields(self, fields, pattern):
        bits = np.asarray(fields, dtype=np.int64)
        counts = bits.sum(axis=-1)
        if (counts != pattern.n).any():
            bad = int(counts[counts != pattern.n].reshape(-1)[0])
            raise FormatError(f"popcount decoder: a block has {bad} set bits, {pattern} "
                              f"needs {pattern.n}")
        slot = np.cumsum(bits, axis=-1) - bits  # exclusive prefix popcount
        out = np.zeros(bits.shape[:-1] + (pattern.n,), dtype=np.int64)
        lead = np.nonzero(bits)
        out[lead[:-1] + (slot[lead],)] = lead[-1]
        return out


def _compare_subtract(ranks: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Colex unranking, one compare-subtract stage per candidate position (highest first)."""
    n, m = pattern.n, pattern.m
    binom = binomial_table(pattern)
    rest = np.asarray(ranks, dtype=np.uint64).copy()
    if (rest >= np.uint64(pattern.configurations)).any():
        raise FormatError(f"rank decoder: rank out of range for {pattern} "
                          f"(must be < {pattern.configurations})")
    todo = np.full(rest.shape, n, dtype=np.int64)
    out = np.zeros(rest.shape + (n,), dtype=np.int64)
    for c in range(m - 1, -1, -1):
        cost = binom[c][todo]
        take = (todo > 0) & (rest >= cost)
        where = np.nonzero(take)
        out[where + (todo[where] - 1,)] = c
        rest[take] -= cost[take]
        todo[take] -= 1
    return out


class RankPipelineDecoder(DecoderModel):
    """``rank`` metadata through an M-stage compare-subtract pipeline."""

    kind, encoding, auto = "rank_pipeline", "rank", True
    circuit_class = rtl.RankPipelineDecoderCircuit
    area_fit_um2 = (12.39, 5.52)

    def area_features(self, patterns):
        """M stages: rank subtractor/register, N position registers."""
        m, n, select = _widest_sizes(patterns)
        return (m * max(p.rank_bits for p in patterns), m * n * select)

    def latency_cycles(self, pattern, supported=()):
        return _widest(pattern, supported).m  # every block passes all M_max stages

    def energy_actions(self, pattern):
        """M compare-subtract stages: compare rank >= C(c, k) (rank_bits + 1 wide), subtract it
        and decrement k, register rest, k and the N positions."""
        rank, todo = pattern.rank_bits, (pattern.n + 1).bit_length()
        stages = pattern.m
        return {"comparator_bit": float(stages * (rank + 1)),
                "adder_bit": float(stages * (rank + todo)),
                "register_bit": float(stages * (rank + todo + pattern.n * pattern.index_bits
                                                + 1))}

    def decode_fields(self, fields, pattern):
        return _compare_subtract(np.asarray(fields)[..., 0], pattern)


class RankSerialDecoder(RankPipelineDecoder):
    """One compare-subtract stage reused M times per block (area-lean, slow)."""

    kind, auto = "rank_serial", False
    circuit_class = rtl.RankSerialDecoderCircuit
    area_fit_um2 = (29.48, 0.01318)

    def area_features(self, patterns):
        """One stage and its registers; the constants table M x P x (N+1)."""
        m, n, select = _widest_sizes(patterns)
        rank = max(p.rank_bits for p in patterns)
        return (rank + n * select, m * len(patterns) * (n + 1) * rank)

    def blocks_per_cycle(self, pattern: Pattern) -> float:
        return 1.0 / pattern.m

    def latency_cycles(self, pattern, supported=()):
        return pattern.m  # the stage loops over the running pattern's M positions only


@lru_cache(maxsize=16)
def rank_rom(pattern: Pattern) -> np.ndarray:
    """The ROM: ``bool[C(M, N), M]`` keep masks in colex order of their kept positions."""
    combos = sorted(itertools.combinations(range(pattern.m), pattern.n),
                    key=lambda c: tuple(reversed(c)))
    rom = np.zeros((len(combos), pattern.m), dtype=bool)
    rows = np.repeat(np.arange(len(combos)), pattern.n)
    rom[rows, np.array(combos, dtype=np.int64).reshape(-1)] = True
    rom.setflags(write=False)
    return rom


class RankRomDecoder(DecoderModel):
    """``rank`` metadata through a ROM lookup of C(M, N) x M bits (one cycle)."""

    kind, encoding = "rank_rom", "rank"
    area_fit_um2 = (0.2043, 7.485)

    def latency_cycles(self, pattern, supported=()):
        return 1

    def energy_actions(self, pattern):
        """One M-bit ROM word read, the N positions registered."""
        return {"rom_read_bit": float(pattern.m),
                "register_bit": float(pattern.n * pattern.index_bits)}

    def pattern_errors(self, pattern, encoding=None):
        rom = ([] if pattern.configurations <= MAX_RANK_ROM_ENTRIES else
               [(f"decoder rank_rom cannot hold {pattern}: C({pattern.m},{pattern.n}) = "
                 f"{pattern.configurations} entries > {MAX_RANK_ROM_ENTRIES}")])
        return rom + super().pattern_errors(pattern, encoding)

    def area_features(self, patterns):
        """ROM as logic: words x select bits; the output register."""
        _, n, select = _widest_sizes(patterns)
        return (sum(p.configurations for p in patterns) * n * select, n * select)

    def synthesizable(self, patterns):
        return sum(p.configurations for p in patterns) <= MAX_LOGIC_ROM_WORDS

    def rom_bits(self, patterns):
        """ROM macro bits: every supported block's N_max selects of ceil(log2 M_max) bits."""
        if self.synthesizable(patterns):
            return 0
        _, n, select = _widest_sizes(patterns)
        return sum(p.configurations for p in patterns) * n * select

    def circuit(self, patterns):
        patterns = tuple(Pattern.parse(p) for p in patterns)
        return rtl.RankRomDecoderCircuit(patterns, [rank_rom(p) for p in patterns])

    def decode_fields(self, fields, pattern):
        ranks = np.asarray(fields)[..., 0].astype(np.int64)
        rom = rank_rom(pattern)
        if ranks.size and (ranks.min() < 0 or ranks.max() >= len(rom)):
            raise FormatError(f"rank ROM: rank out of range for {pattern}")
        masks = rom[ranks]
        return (np.flatnonzero(masks) % pattern.m).reshape(ranks.shape + (pattern.n,))


def _prefix_adders(n: int) -> int:
    """Adders of a Kogge-Stone prefix sum over n terms: sum over its levels l of n - 2**l."""
    return sum(n - (1 << level) for level in range((n - 1).bit_length()))


class PrefixSumDecoderCircuit(rtl.DecoderCircuit):
    """``rle`` metadata: slot k's select is c_k = run_0 + sum_{0<j<=k} (run_j + 1), a
    Kogge-Stone prefix sum over the N_max run fields: ceil(log2 N_max) adder levels, registered
    after each level (latency ceil(log2 N_max) cycles, one block per cycle; a ripple chain would
    put N adders in series in one cycle). Slots beyond the running N are forced to zero."""

    encoding = "rle"

    @property
    def run_bits(self) -> int:
        return max(p.field_bits("rle") for p in self.patterns)

    @property
    def meta_bits(self) -> int:
        return self.n_max * self.run_bits

    def meta_field_bits(self, pattern):
        return self.n_max, self.run_bits

    @property
    def levels(self) -> int:
        return (self.n_max - 1).bit_length()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.ready.eq(1)
        width, run_bits = self.select_bits, self.run_bits
        runs = [self.meta[k * run_bits:(k + 1) * run_bits] for k in range(self.n_max)]
        sums = [runs[0]] + [run + 1 for run in runs[1:]]
        valid = self.valid_in
        for level in range(self.levels):
            step = 1 << level
            nxt = [Signal(width, name=f"sum_l{level}_{k}", reset_less=True)
                   for k in range(self.n_max)]
            nvalid = Signal(name=f"valid_l{level}")
            m.d.sync += [nxt[k].eq(sums[k] + (sums[k - step] if k >= step else 0))
                         for k in range(self.n_max)]
            m.d.sync += nvalid.eq(valid)
            sums, valid = nxt, nvalid
        kept = Array([Const(p.n, rtl.bits_for(self.n_max + 1)) for p in self.patterns])[
            self.pattern_index()]
        slots = [Mux(k < kept, sums[k], 0)[:width] for k in range(self.n_max)]
        m.d.comb += [self.sel.eq(Cat(*slots)), self.valid_out.eq(valid)]
        return m


class PrefixSumDecoder(DecoderModel):
    """``rle`` metadata: positions are prefix sums of the run lengths (+1 per earlier kept
    element), computed as the circuit does, level by level (:class:`PrefixSumDecoderCircuit`)."""

    kind, encoding, auto = "prefix_sum", "rle", True
    circuit_class = PrefixSumDecoderCircuit
    area_fit_um2 = (8.649, 0.0)

    def latency_cycles(self, pattern, supported=()):
        n_max = max(p.n for p in (pattern, *supported))  # the adder tree spans N_max slots
        return (n_max - 1).bit_length()

    def area_features(self, patterns):
        """Per level and slot, one select-width register and (about) one adder: the prefix
        adders plus the run + 1 incrementers number exactly levels x N_max for N_max a power
        of two; and the output slot masks (N_max x select bits)."""
        _, n, select = _widest_sizes(patterns)
        return ((n - 1).bit_length() * n * select, n * select)

    def energy_actions(self, pattern: Pattern) -> dict[str, float]:
        """Per block: the prefix adders and the N - 1 run + 1 incrementers (bits of each), and the
        level registers written (bits)."""
        n = pattern.n
        width = pattern.index_bits  # a running position is an index into the block
        return {"adder_bit": float((_prefix_adders(n) + n - 1) * width),
                "register_bit": float((n - 1).bit_length() * n * width)}

    def decode_fields(self, fields, pattern):
        sums = np.asarray(fields, dtype=np.int64).copy()
        sums[..., 1:] += 1
        step = 1
        while step < pattern.n:  # Kogge-Stone: each level adds the sum `step` slots back
            sums[..., step:] = sums[..., step:] + sums[..., :-step]
            step *= 2
        if sums.size and sums[..., -1].max() >= pattern.m:
            raise FormatError(f"prefix-sum decoder: run lengths skip more than the "
                              f"{pattern.m - pattern.n} positions of {pattern}")
        return sums


DECODER_MODELS: dict[str, DecoderModel] = {
    cls.kind: cls() for cls in (DirectDecoder, PopcountDecoder, RankRomDecoder,
                                RankPipelineDecoder, RankSerialDecoder, PrefixSumDecoder)}


def decoder_model(kind: str) -> DecoderModel:
    if kind not in DECODER_MODELS:
        raise ValueError(f"unknown decoder '{kind}': choose one of {', '.join(DECODER_MODELS)}")
    return DECODER_MODELS[kind]


def decoders_for_encoding() -> dict[str, tuple[str, ...]]:
    """Encoding -> the decoders that read it, the ``auto`` one first (registry order else)."""
    out: dict[str, list[str]] = {}
    for kind, model in sorted(DECODER_MODELS.items(), key=lambda item: not item[1].auto):
        out.setdefault(model.encoding, []).append(kind)
    return {encoding: tuple(kinds) for encoding, kinds in out.items()}
