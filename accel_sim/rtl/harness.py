"""Drive a decoder circuit with one block per accepted cycle in Amaranth's simulator and record,
cycle by cycle, when each block was taken and when (and as what) it came out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from compression.formats import Pattern

from .decoders import DecoderCircuit


@dataclass(frozen=True)
class DecodeTrace:
    """``taken[b]`` / ``emitted[b]``: cycles block b entered / left; ``positions[b]``: its
    N_max selects as they came out."""

    taken: np.ndarray
    emitted: np.ndarray
    positions: np.ndarray

    @property
    def latencies(self) -> np.ndarray:
        return self.emitted - self.taken

    @property
    def intervals(self) -> np.ndarray:
        return np.diff(self.taken)


def pack_meta(circuit: DecoderCircuit, fields: np.ndarray, pattern: Pattern) -> list[int]:
    """One ``meta`` word per block from ``fields[blocks, per_block]`` (the format's fields),
    each field zero-extended to the circuit's field width."""
    count, bits = circuit.meta_field_bits(pattern)
    fields = np.asarray(fields)
    if fields.shape[1] > count:
        raise ValueError(f"{fields.shape[1]} fields per block do not fit {count} meta fields")
    return [sum(int(v) << (j * bits) for j, v in enumerate(row)) for row in fields]


def simulate_decoder(circuit: DecoderCircuit, fields: np.ndarray, pattern: Pattern,
                     max_cycles: int | None = None) -> DecodeTrace:
    """Offer the blocks back to back (a new one whenever ``ready``) and collect the outputs."""
    pattern = Pattern.parse(pattern)
    words = pack_meta(circuit, fields, pattern)
    index = circuit.patterns.index(pattern)
    limit = max_cycles or (len(words) + 2) * (circuit.m_max + 2) + 8
    w, slots = circuit.select_bits, circuit.n_max
    taken, emitted, out = [], [], []

    async def bench(ctx):
        if "pattern" in circuit.signature.members:
            ctx.set(circuit.pattern, index)
        for cycle in range(limit):
            pending = len(taken) < len(words)
            ctx.set(circuit.valid_in, int(pending))
            ctx.set(circuit.meta, words[len(taken)] if pending else 0)
            if ctx.get(circuit.valid_out):
                sel = ctx.get(circuit.sel)
                emitted.append(cycle)
                out.append([(sel >> (k * w)) & ((1 << w) - 1) for k in range(slots)])
            if pending and ctx.get(circuit.ready):
                taken.append(cycle)
            if len(emitted) == len(words):
                return
            await ctx.tick()

    top = Module()  # a sync domain even for a purely combinational decoder
    top.domains.sync = ClockDomain()
    top.submodules.dut = circuit
    sim = Simulator(top)
    sim.add_clock(1e-9)
    sim.add_testbench(bench)
    sim.run()
    if len(emitted) != len(words):
        raise RuntimeError(f"{type(circuit).__name__}: {len(emitted)} of {len(words)} blocks "
                           f"came out within {limit} cycles")
    return DecodeTrace(np.array(taken), np.array(emitted),
                       np.array(out, dtype=np.int64).reshape(len(words), slots))
