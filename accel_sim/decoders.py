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
synthesizes for the area model.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

from compression.formats import FormatError, Pattern, binomial_table, unpack_fields

from .rtl import decoders as rtl


class DecoderModel:
    """Base class: a decoder of one metadata encoding."""

    kind = ""
    encoding = ""
    circuit_class: type[rtl.DecoderCircuit] = rtl.DecoderCircuit

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

    def decode_fields(self, fields: np.ndarray, pattern: Pattern) -> np.ndarray:
        """Kept positions ``int64[..., N]`` from per-block fields (see :meth:`fields`)."""
        raise NotImplementedError

    def fields(self, metadata: np.ndarray, pattern: Pattern, rows: int, blocks: int) -> np.ndarray:
        """The per-block fields of a metadata stream, ``[rows, blocks, width]``."""
        metadata = _check_stream(metadata, pattern, self.encoding, rows, blocks)
        per_block = pattern.fields_per_block(self.encoding)
        bits = pattern.field_bits(self.encoding)
        if self.encoding == "bitmask":  # one field per mask bit keeps M > 64 in range
            per_block, bits = pattern.m, 1
        flat = unpack_fields(metadata, blocks * per_block, bits)
        return flat.reshape(rows, blocks, per_block)

    def decode(self, metadata: np.ndarray, pattern: Pattern, rows: int, blocks: int
               ) -> np.ndarray:
        """Kept positions ``int64[rows, blocks, N]`` of a whole metadata stream."""
        return self.decode_fields(self.fields(metadata, pattern, rows, blocks), pattern)


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

    kind, encoding = "direct", "index"
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

    kind, encoding = "popcount", "bitmask"
    circuit_class = rtl.PopcountDecoderCircuit

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

    kind, encoding = "rank_pipeline", "rank"
    circuit_class = rtl.RankPipelineDecoderCircuit

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

    kind = "rank_serial"
    circuit_class = rtl.RankSerialDecoderCircuit

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

    def latency_cycles(self, pattern, supported=()):
        return 1

    def energy_actions(self, pattern):
        """One M-bit ROM word read, the N positions registered."""
        return {"rom_read_bit": float(pattern.m),
                "register_bit": float(pattern.n * pattern.index_bits)}

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


DECODER_MODELS = {cls.kind: cls() for cls in
                  (DirectDecoder, PopcountDecoder, RankRomDecoder, RankPipelineDecoder,
                   RankSerialDecoder)}


def decoder_model(kind: str) -> DecoderModel:
    if kind not in DECODER_MODELS:
        raise ValueError(f"unknown decoder '{kind}': choose one of {', '.join(DECODER_MODELS)}")
    return DECODER_MODELS[kind]
