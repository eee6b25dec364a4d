"""Amaranth circuits of the metadata decoders in :mod:`accel_sim.decoders`.

Every decoder serves a tuple of supported patterns (one datapath for all of them, like a flexible
tensor core): ``pattern`` selects the running one when there are several and the circuit
depends on it. The common interface:

* ``meta`` (in): one block's metadata fields as :meth:`accel_sim.decoders.DecoderModel.fields`
  unpacks them from a ``compression.formats`` stream, each field zero-extended to the widest
  supported pattern (``index``: N_max fields of ceil(log2 M_max) bits, ``bitmask``: M_max bits,
  ``rank``: ceil(log2 C(M, N)) bits of the widest rank);
* ``valid_in`` / ``ready`` (in / out): a block is taken on a cycle where both are high;
* ``sel`` (out): N_max operand-mux selects of ceil(log2 M_max) bits, slot k at bits
  ``[k*w, (k+1)*w)``: the ascending kept positions (slots >= the running N are zero);
* ``valid_out`` (out): ``sel`` holds a decoded block this cycle.

Latency (cycles from a block taken to its selects out) and interval (cycles between taken
blocks) are structural facts of each circuit; :mod:`accel_sim.rtl.harness` measures them in
simulation and the tests compare them with what the simulator charges.
"""

from __future__ import annotations

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from compression.formats import Pattern

__all__ = ["DirectDecoderCircuit", "PopcountDecoderCircuit", "RankPipelineDecoderCircuit",
           "RankRomDecoderCircuit", "RankSerialDecoderCircuit", "bits_for"]


def bits_for(count: int) -> int:
    """Bits of an unsigned number < ``count`` (at least 1)."""
    return max(1, (count - 1).bit_length())


class DecoderCircuit(wiring.Component):
    """Base: the common ports for a tuple of supported patterns."""

    encoding = ""
    pattern_dependent = True  # False: the same circuit for every pattern (no ``pattern`` input)

    def __init__(self, patterns: tuple[Pattern, ...]):
        self.patterns = tuple(Pattern.parse(p) for p in patterns)
        if not self.patterns:
            raise ValueError("a decoder circuit needs at least one pattern")
        self.n_max = max(p.n for p in self.patterns)
        self.m_max = max(p.m for p in self.patterns)
        self.select_bits = bits_for(self.m_max)
        ports = {"meta": In(self.meta_bits), "valid_in": In(1), "ready": Out(1),
                 "sel": Out(self.n_max * self.select_bits), "valid_out": Out(1)}
        if len(self.patterns) > 1 and self.pattern_dependent:
            ports["pattern"] = In(bits_for(len(self.patterns)))
        super().__init__(ports)

    @property
    def meta_bits(self) -> int:
        raise NotImplementedError


    def pattern_index(self):
        return self.pattern if "pattern" in self.signature.members else Const(0, 1)

    def meta_field_bits(self, pattern: Pattern) -> tuple[int, int]:
        """(fields per block, bits per field) of ``meta`` while running ``pattern``."""
        return 1, self.meta_bits


class DirectDecoderCircuit(DecoderCircuit):
    """``index`` metadata: the fields are the selects (wires, no cells, latency 0)."""

    encoding = "index"
    pattern_dependent = False

    @property
    def meta_bits(self) -> int:
        return self.n_max * self.select_bits

    def meta_field_bits(self, pattern):
        return self.n_max, self.select_bits

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.sel.eq(self.meta), self.valid_out.eq(self.valid_in),
                     self.ready.eq(1)]
        return m


class PopcountDecoderCircuit(DecoderCircuit):
    """``bitmask`` metadata: an inclusive prefix popcount (Kogge-Stone, ceil(log2 M) levels,
    registered after each level) then a slot encoder (registered): bit i with prefix count
    k + 1 drives slot k's select with i. Pattern-agnostic: only N_max and M_max matter."""

    encoding = "bitmask"
    pattern_dependent = False

    @property
    def meta_bits(self) -> int:
        return self.m_max


    @property
    def levels(self) -> int:
        return math.ceil(math.log2(self.m_max))

    def meta_field_bits(self, pattern):
        return self.m_max, 1

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.ready.eq(1)
        width = bits_for(self.m_max + 1)
        bits, valid = self.meta, self.valid_in
        counts = [bits[i].as_unsigned() for i in range(self.m_max)]
        for level in range(self.levels):
            step = 1 << level
            nxt = [Signal(width, name=f"count_l{level}_{i}", reset_less=True)
                   for i in range(self.m_max)]
            nbits = Signal(self.m_max, name=f"bits_l{level}", reset_less=True)
            nvalid = Signal(name=f"valid_l{level}")
            m.d.sync += [nxt[i].eq(counts[i] + (counts[i - step] if i >= step else 0))
                         for i in range(self.m_max)]
            m.d.sync += [nbits.eq(bits), nvalid.eq(valid)]
            counts, bits, valid = nxt, nbits, nvalid
        slots = []
        for k in range(self.n_max):
            slot = Const(0, self.select_bits)
            for i in range(self.m_max):
                slot = slot | Mux(bits[i] & (counts[i] == k + 1), i, 0)
            slots.append(slot)
        sel = Signal(len(self.sel), reset_less=True)
        m.d.sync += [sel.eq(Cat(*slots)), self.valid_out.eq(valid)]
        m.d.comb += self.sel.eq(sel)
        return m


def _stage_costs(patterns: tuple[Pattern, ...], c: int, n_max: int, never: int) -> list[int]:
    """Compare-subtract constants of candidate position ``c``: C(c, k) per (pattern, k), flat
    index ``pattern * (n_max + 1) + k``; ``never`` (above every rank) where the stage must not
    take: no element left (k = 0), k above the pattern's N, or c outside the pattern's block."""
    table = []
    for p in patterns:
        for k in range(n_max + 1):
            table.append(math.comb(c, k) if 1 <= k <= p.n and c < p.m else never)
    return table


class _RankCircuit(DecoderCircuit):
    encoding = "rank"

    @property
    def meta_bits(self) -> int:
        return max(p.rank_bits for p in self.patterns)

    @property
    def todo_bits(self) -> int:
        return bits_for(self.n_max + 1)

    def compare_subtract(self, m: Module, c, rest, todo, positions, costs):
        """One colex unranking stage at candidate position ``c`` (constant or signal): take c
        when rest >= C(c, todo); returns the next (rest, todo, positions) as expressions."""
        cost = Signal(self.meta_bits + 1)
        m.d.comb += cost.eq(costs)
        take = rest >= cost
        new_rest = Mux(take, rest - cost, rest)
        new_todo = Mux(take, todo - 1, todo)
        w = self.select_bits
        new_positions = []
        for slot in range(self.n_max):
            old = positions[slot * w:(slot + 1) * w]
            new_positions.append(Mux(take & (todo == slot + 1), c, old))
        return new_rest, new_todo, new_positions

    def start_todo(self):
        return Array(Const(p.n, self.todo_bits) for p in self.patterns)[self.pattern_index()]


class RankPipelineDecoderCircuit(_RankCircuit):
    """``rank`` metadata: M_max registered compare-subtract stages, c = M_max - 1 .. 0
    (one block per cycle, latency M_max)."""

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.ready.eq(1)
        psel = self.pattern_index()
        never = 1 << self.meta_bits
        rest, todo, valid = self.meta, self.start_todo(), self.valid_in
        positions = Const(0, self.n_max * self.select_bits)
        for stage, c in enumerate(range(self.m_max - 1, -1, -1)):
            costs = Array(Const(v, self.meta_bits + 1) for v in
                          _stage_costs(self.patterns, c, self.n_max, never))
            cost = costs[psel * (self.n_max + 1) + todo]
            new_rest, new_todo, new_pos = self.compare_subtract(m, c, rest, todo, positions,
                                                                cost)
            r_rest = Signal(self.meta_bits, name=f"rest_s{stage}", reset_less=True)
            r_todo = Signal(self.todo_bits, name=f"todo_s{stage}", reset_less=True)
            r_pos = Signal(self.n_max * self.select_bits, name=f"pos_s{stage}",
                           reset_less=True)
            r_valid = Signal(name=f"valid_s{stage}")
            m.d.sync += [r_rest.eq(new_rest), r_todo.eq(new_todo), r_valid.eq(valid)]
            m.d.sync += r_pos.eq(Cat(*new_pos))
            if "pattern" in self.signature.members:
                r_psel = Signal.like(self.pattern, name=f"pattern_s{stage}", reset_less=True)
                m.d.sync += r_psel.eq(psel)
                psel = r_psel
            rest, todo, positions, valid = r_rest, r_todo, r_pos, r_valid
        m.d.comb += [self.sel.eq(positions), self.valid_out.eq(valid)]
        return m


class RankSerialDecoderCircuit(_RankCircuit):
    """``rank`` metadata: one compare-subtract stage reused M times per block (the running
    pattern's M: one block per M cycles, latency M). The first step runs on the incoming rank
    in the cycle it is taken; the last one writes the output register."""


    def elaborate(self, platform):
        m = Module()
        psel_in = self.pattern_index()
        busy = Signal()
        c = Signal(self.select_bits, reset_less=True)
        rest = Signal(self.meta_bits, reset_less=True)
        todo = Signal(self.todo_bits, reset_less=True)
        positions = Signal(self.n_max * self.select_bits, reset_less=True)
        psel = Signal(len(psel_in), name="psel_reg", reset_less=True)
        sel = Signal(len(self.sel), reset_less=True)
        m.d.comb += self.sel.eq(sel)
        start = self.valid_in & ~busy
        m.d.comb += self.ready.eq(~busy)
        last_c = Array(Const(p.m - 1, self.select_bits) for p in self.patterns)
        cur_c = Mux(start, last_c[psel_in], c)
        cur_p = Mux(start, psel_in, psel)
        cur_todo = Mux(start, self.start_todo(), todo)
        never = 1 << self.meta_bits
        table = [v for cc in range(self.m_max)
                 for v in _stage_costs(self.patterns, cc, self.n_max, never)]
        costs = Array(Const(v, self.meta_bits + 1) for v in table)
        per_c = len(self.patterns) * (self.n_max + 1)
        cost = costs[cur_c * per_c + cur_p * (self.n_max + 1) + cur_todo]
        new_rest, new_todo, new_pos = self.compare_subtract(
            m, cur_c, Mux(start, self.meta, rest), cur_todo,
            Mux(start, 0, positions), cost)
        active = start | busy
        with m.If(active):
            m.d.sync += [rest.eq(new_rest), todo.eq(new_todo), positions.eq(Cat(*new_pos)),
                         c.eq(cur_c - 1), psel.eq(cur_p), busy.eq(cur_c != 0)]
        done = active & (cur_c == 0)
        m.d.sync += self.valid_out.eq(done)
        with m.If(done):
            m.d.sync += sel.eq(Cat(*new_pos))
        return m


class RankRomDecoderCircuit(_RankCircuit):
    """``rank`` metadata: a ROM addressed by (pattern base + rank) holding the N_max selects of
    every block (the kept positions, programmed from ``tables``), output registered
    (latency 1). ``tables[i]`` is ``bool[C(M, N), M]`` for ``patterns[i]`` in rank order."""

    def __init__(self, patterns, tables):
        super().__init__(patterns)
        self.tables = tables

    def rom_words(self) -> list[int]:
        """ROM contents: per pattern (in order), per rank, the packed selects."""
        words = []
        for table in self.tables:
            for row in table:
                kept = [i for i, keep in enumerate(row) if keep]
                words.append(sum(pos << (k * self.select_bits) for k, pos in enumerate(kept)))
        return words

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.ready.eq(1)
        words = self.rom_words()
        bases, base = [], 0
        for p in self.patterns:
            bases.append(base)
            base += p.configurations
        address = Signal(bits_for(len(words)))
        base_of = Array(Const(b, len(address)) for b in bases)
        m.d.comb += address.eq(base_of[self.pattern_index()] + self.meta)
        word = Signal(len(self.sel))
        with m.Switch(address):
            for i, value in enumerate(words):
                with m.Case(i):
                    m.d.comb += word.eq(value)
        sel = Signal(len(self.sel), reset_less=True)
        m.d.sync += [sel.eq(word), self.valid_out.eq(self.valid_in)]
        m.d.comb += self.sel.eq(sel)
        return m
