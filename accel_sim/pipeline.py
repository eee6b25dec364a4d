"""The simpy pipeline: DMA -> decoder -> operand select -> MAC array -> write-back.

Each wave-step (:class:`accel_sim.mapping.Step`) flows through five processes:

* **DMA** loads the step's operands over the one DRAM channel (occupancy bytes / bandwidth, data
  usable ``dram_latency`` later; requests pipeline) into an input buffer slot (``buffer_stages``
  slots when double-buffered, freed when the MAC array finishes the step), so at most
  ``stages - 1`` loads are in flight while the array computes: too few stages expose the latency;
* **decoder** turns the metadata into select signals (occupancy ``decode_cycles``, then its
  latency), the step keeping its input slot;
* **operand select** drives the muxes (latency of a log2(inputs)-level mux tree, pipelined);
* **MAC array** computes (``max(mac_cycles, salient_cycles)``); the first step of a wave needs a
  free output-buffer slot;
* **write-back** stores a finished wave's outputs over the same DRAM channel and frees its slot.

Stall attribution (the MAC array's view, so that the causes add up to the total): waiting for an
operand that has not arrived from DRAM, or for an output slot, is *memory*; waiting for data that
has arrived but is still being decoded or selected is *decode*; array cycles beyond the useful
MACs (fill/drain, padding of partial tiles) are *compute*; salient lanes slower than the array are
*salient*; the final write-back after the last MAC is *memory*.

Periodic steady state: runs of identical steps (and of identical waves) make the pipeline
periodic. Once the last ``PERIODS`` completions of a run show the same period and the same counter
increments, the rest of the run is not simulated: it is credited as whole periods (time and every
counter), which is exact for a periodic system, and simulation resumes at the run's end so that
transitions (k-tail, write-back, partial waves) go through the event path.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import simpy

PERIODS = 3  # equal consecutive periods that establish a steady state
MAX_PERIOD = 4  # longest period searched, in steps (or waves)
COUNTERS = ("busy", "compute", "memory", "decode", "salient")


@dataclass
class PipelineResult:
    cycles: float
    counters: dict
    simulated_steps: int
    skipped_steps: int


@dataclass
class _Clock:
    """Virtual time and counters: simulated plus credited (skipped) periods."""

    credit_time: float = 0.0
    credit: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))


def _steady(history: list, need: int):
    """(length, time, counter deltas) of a period of 1..MAX_PERIOD steps if the last ``need``
    periods of ``history`` (completion snapshots) agree, else None."""
    for length in range(1, MAX_PERIOD + 1):
        if len(history) < need * length + 1:
            return None
        tail = history[-(need * length + 1)::length]
        deltas = [(b[0] - a[0], tuple(y - x for x, y in zip(a[1], b[1])))
                  for a, b in itertools.pairwise(tail)]
        first = deltas[0]
        scale = max(1.0, abs(tail[-1][0]))
        if all(abs(d[0] - first[0]) <= 1e-9 * scale
               and all(abs(x - y) <= 1e-9 * scale for x, y in zip(d[1], first[1]))
               for d in deltas[1:]):
            return (length, *first)
    return None


def run_pipeline(schedule, bytes_per_cycle: float, latency: float, decode_latency: float,
                 select_latency: float, slots: int, out_slots_count: int,
                 steady_state: bool = True) -> PipelineResult:
    """Simulate ``schedule`` ([(wave_runs, wave_repeat)], wave_runs = ((Step, repeat), ...))."""
    env = simpy.Environment()
    # The DRAM channel serves transfers first come, first served, one at a time: booking the
    # channel's next free cycle when a transfer is issued is that queue, without its events.
    channel = {"free": 0.0}

    def book(nbytes):
        """Cycles from now until a transfer of ``nbytes`` issued now has left the channel."""
        start = max(env.now, channel["free"])
        channel["free"] = start + nbytes / bytes_per_cycle
        return channel["free"] - env.now
    in_slots = simpy.Container(env, capacity=slots, init=slots)
    # The select buffer needs no slots of its own: a step holds its input slot from its load
    # until the MAC array finishes it, so at most ``slots`` steps are ever decoded ahead.
    out_slots = simpy.Container(env, capacity=out_slots_count, init=out_slots_count)
    loaded = simpy.Store(env)
    decoded = simpy.Store(env)
    selected = simpy.Store(env)
    clock = _Clock()
    counters = dict.fromkeys(COUNTERS, 0.0)
    step_history: dict = {}
    wave_history: dict = {}
    stats = {"simulated": 0, "skipped": 0, "last_mac": 0.0}
    total_steps = 0

    def snapshot():
        return (env.now + clock.credit_time,
                tuple(counters[c] + clock.credit[c] for c in COUNTERS))

    def credit(period, remaining):
        """Credit whole periods out of ``remaining`` units; returns the units skipped."""
        length, time, deltas = period
        times = (remaining - 1) // length  # keep the last unit simulated
        clock.credit_time += time * times
        for name, inc in zip(COUNTERS, deltas):
            clock.credit[name] += inc * times
        return times * length

    def deliver(store, item, delay):
        if delay > 0:
            env.timeout(delay).callbacks.append(lambda _ev: store.put(item))
        else:
            store.put(item)

    def dma():
        for wave_id, (wave_runs, wave_repeat) in enumerate(schedule):
            w = 0
            while w < wave_repeat:
                if steady_state and wave_repeat - w > 1:
                    found = _steady(wave_history.get(wave_id, []), PERIODS)
                    if found is not None:
                        skip = credit(found, wave_repeat - w)
                        stats["skipped"] += skip * sum(c for _, c in wave_runs)
                        w += skip
                        wave_history.pop(wave_id, None)
                        if skip:
                            continue
                n_runs = len(wave_runs)
                for run_id, (step, repeat) in enumerate(wave_runs):
                    i = 0
                    key = (wave_id, w, run_id)
                    while i < repeat:
                        if steady_state and repeat - i > 1:
                            found = _steady(step_history.get(key, []), PERIODS)
                            if found is not None:
                                skip = credit(found, repeat - i)
                                stats["skipped"] += skip
                                i += skip
                                step_history.pop(key, None)
                                if skip:
                                    continue
                        yield in_slots.get(1)
                        if step.load_bytes:
                            yield env.timeout(book(step.load_bytes))
                        wave_end = run_id == n_runs - 1 and i == repeat - 1
                        item = (step, env.now + latency, key, (wave_id, w) if wave_end else None)
                        deliver(loaded, item, latency)
                        stats["simulated"] += 1
                        i += 1
                w += 1
        deliver(loaded, None, latency)  # the end marker follows the last load's latency

    def decoder():
        while True:
            item = yield loaded.get()
            if item is None:
                deliver(decoded, None, decode_latency)
                return
            if item[0].decode_cycles:
                yield env.timeout(item[0].decode_cycles)
            deliver(decoded, item, decode_latency)

    def operand_select():
        while True:
            item = yield decoded.get()
            if item is None:
                deliver(selected, None, select_latency)
                return
            deliver(selected, item, select_latency)

    def writeback(nbytes):
        yield env.timeout(book(nbytes))
        out_slots.put(1)

    def mac():
        while True:
            start = env.now
            item = yield selected.get()
            if item is None:
                return
            step, arrived, key, wave_key = item
            waited = env.now - start
            memory = max(0.0, min(env.now, arrived) - start)
            counters["memory"] += memory
            counters["decode"] += waited - memory
            if step.wave_start:
                start = env.now
                yield out_slots.get(1)
                counters["memory"] += env.now - start
            occupancy = max(step.mac_cycles, step.salient_cycles)
            yield env.timeout(occupancy)
            counters["busy"] += step.useful_cycles
            counters["compute"] += step.mac_cycles - step.useful_cycles
            counters["salient"] += occupancy - step.mac_cycles
            in_slots.put(1)
            if step.writeback_bytes:
                env.process(writeback(step.writeback_bytes))
            elif wave_key is not None:
                out_slots.put(1)
            stats["last_mac"] = env.now
            step_history.setdefault(key, []).append(snapshot())
            if wave_key is not None:
                wave_history.setdefault(wave_key[0], []).append(snapshot())

    for wave_runs, wave_repeat in schedule:
        total_steps += wave_repeat * sum(c for _, c in wave_runs)
    for proc in (dma, decoder, operand_select, mac):
        env.process(proc())
    env.run()
    end = env.now
    counters["memory"] += end - stats["last_mac"]  # final write-back drain
    total = end + clock.credit_time
    merged = {c: counters[c] + clock.credit[c] for c in COUNTERS}
    if not math.isclose(stats["simulated"] + stats["skipped"], total_steps):
        raise RuntimeError("pipeline lost steps")  # an internal invariant, not user input
    return PipelineResult(total, merged, stats["simulated"], stats["skipped"])
