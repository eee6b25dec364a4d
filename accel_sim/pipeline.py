"""The simpy pipeline: DMA -> decoder -> operand select -> MAC array -> write-back.

Each wave-step (:class:`accel_sim.mapping.Step`) flows through five processes:

* **DMA** loads the step's operands over the one DRAM channel (occupancy bytes / bandwidth, data
  usable ``dram_latency`` later; requests pipeline) into an input buffer slot (``buffer_stages``
  slots when double-buffered, freed when the MAC array finishes the step), so at most
  ``stages - 1`` loads are in flight while the array computes: too few stages expose the latency;
* **decoder** turns the metadata into select signals (occupancy ``decode_cycles``, then its
  latency), the step keeping its input slot;
* **operand select** drives the muxes (latency of a log2(inputs)-level mux tree, pipelined);
* **MAC array** computes (``max(mac_cycles, operand_cycles, salient_cycles)``: the array, the
  shared-memory operand delivery feeding it, the salient lanes); the first step of a wave needs a
  free output-buffer slot;
* **write-back** stores a finished wave's outputs over the same DRAM channel and frees its slot.

Stall attribution (the MAC array's view, so that the causes add up to the total): waiting for an
operand that has not arrived from DRAM is *memory_bandwidth* for the part of the wait during
which the channel was busy (data arriving in ``[t0, t1]`` left the channel in ``[t0 - latency,
t1 - latency]``; a busy channel then means bandwidth limited the arrivals) and *memory_latency*
for the rest (the channel was idle: too few loads in flight to cover the latency); waiting for an
output slot (a write-back on the channel) and the final write-back are *memory_bandwidth*;
waiting for data that has arrived but is still being decoded or selected is *decode*; array
cycles beyond the useful MACs (fill/drain, padding of partial tiles) are *compute*; operand
delivery slower than the array is *operand_delivery*; salient lanes slower than both are
*salient*.

Periodic steady state: runs of identical steps (and of identical waves) make the pipeline
periodic. At every completion the MAC array records the time, the counters and the *state* of the
whole pipeline relative to now: the steps in flight with the times their operands arrive and their
select signals are ready, when the DRAM channel and the decoder are next free, the pending
write-backs and the free output slots. Equal completion deltas alone do not prove a steady state
(a slot-bound pipeline completes in bursts: four equal gaps, then a long one); an equal state does,
because the pipeline is deterministic: from equal states fed the same steps it repeats itself. So
once the state at the latest completion of a run equals the one ``length`` completions earlier,
the rest of the run is credited as whole periods (time and every counter), which is exact, and
simulation resumes at the run's end so that transitions (k-tail, write-back, partial waves) go
through the event path.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import simpy

MAX_PERIOD = 16  # longest period searched, in steps (or waves)
COUNTERS = ("busy", "compute", "memory_bandwidth", "memory_latency", "decode",
            "operand_delivery", "salient")


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


def _close(a, b, tol: float) -> bool:
    """Equal pipeline states (nested tuples of numbers, steps and None) within ``tol``."""
    if isinstance(a, tuple):
        return (isinstance(b, tuple) and len(a) == len(b)
                and all(_close(x, y, tol) for x, y in zip(a, b)))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    return a == b


def _steady(history: list):
    """(length, time, counter deltas) of the shortest period of 1..MAX_PERIOD units such that the
    pipeline state at the latest completion of ``history`` ((time, counters, state) snapshots)
    equals the state ``length`` completions earlier, else None."""
    if len(history) < 2:
        return None
    now, counts, state = history[-1]
    tol = 1e-9 * max(1.0, abs(now))
    for length in range(1, min(MAX_PERIOD, len(history) - 1) + 1):
        then, before, past = history[-1 - length]
        if _close(state, past, tol):
            return length, now - then, tuple(y - x for x, y in zip(before, counts))
    return None


def run_pipeline(schedule, bytes_per_cycle: float, latency: float, decode_latency: float,
                 select_latency: float, slots: int, out_slots_count: int,
                 steady_state: bool = True) -> PipelineResult:
    """Simulate ``schedule`` ([(wave_runs, wave_repeat)], wave_runs = ((Step, repeat), ...))."""
    env = simpy.Environment()
    # When the DRAM channel and the decoder are next free. The channel serves transfers first
    # come, first served, one at a time: booking its next free cycle when a transfer is issued
    # is that queue, without its events.
    free_at = {"channel": 0.0, "decoder": 0.0}

    busy: deque = deque()  # merged [begin, end] intervals of channel transfers, oldest first

    def book(nbytes):
        """Cycles from now until a transfer of ``nbytes`` issued now has left the channel."""
        start = max(env.now, free_at["channel"])
        free_at["channel"] = start + nbytes / bytes_per_cycle
        if busy and busy[-1][1] >= start:
            busy[-1][1] = free_at["channel"]
        else:
            busy.append([start, free_at["channel"]])
        return free_at["channel"] - env.now

    def busy_within(lo, hi):
        """Cycles the channel was transferring within [lo, hi]; forgets intervals that ended
        before ``lo`` (later queries start no earlier: the MAC array's waits move forward)."""
        while busy and busy[0][1] <= lo:
            busy.popleft()
        return sum(max(0.0, min(hi, e) - max(lo, b)) for b, e in busy if b < hi)
    in_slots = simpy.Container(env, capacity=slots, init=slots)
    # The select buffer needs no slots of its own: a step holds its input slot from its load
    # until the MAC array finishes it, so at most ``slots`` steps are ever decoded ahead.
    out_slots = simpy.Container(env, capacity=out_slots_count, init=out_slots_count)
    loaded = simpy.Store(env)
    decoded = simpy.Store(env)
    selected = simpy.Store(env)
    clock = _Clock()
    counters = dict.fromkeys(COUNTERS, 0.0)
    in_flight: deque = deque()  # [step, operands arrive, select signals ready] per loaded step
    writebacks: deque = deque()  # end times of the write-backs on the channel
    step_history: dict = {}
    wave_history: dict = {}
    stats = {"simulated": 0, "skipped": 0, "last_mac": 0.0}
    total_steps = 0

    def state():
        """Everything the pipeline's future depends on besides the steps still to come, with
        times relative to now (past times as 0: they no longer matter)."""
        now = env.now

        def rel(t):
            return max(0.0, t - now)
        return (rel(free_at["channel"]), rel(free_at["decoder"]), in_slots.level,
                out_slots.level, tuple(rel(t) for t in writebacks),
                tuple((max(b - now, -latency), e - now) for b, e in busy
                      if e > now - latency),
                tuple((s, rel(a), None if r is None else rel(r)) for s, a, r in in_flight))

    def record(history: dict, key):
        """Append a completion snapshot (time, counters, state) under ``key``."""
        entries = history.setdefault(key, [])
        entries.append((env.now + clock.credit_time,
                        tuple(counters[c] + clock.credit[c] for c in COUNTERS), state()))
        if len(entries) > MAX_PERIOD + 1:
            del entries[0]

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
                    found = _steady(wave_history.get(wave_id, []))
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
                            found = _steady(step_history.get(key, []))
                            if found is not None:
                                skip = credit(found, repeat - i)
                                stats["skipped"] += skip
                                i += skip
                                step_history.pop(key, None)
                                if skip:
                                    continue
                        yield in_slots.get(1)
                        transfer = book(step.load_bytes) if step.load_bytes else 0.0
                        entry = [step, env.now + transfer + latency, None]
                        in_flight.append(entry)
                        if transfer:
                            yield env.timeout(transfer)
                        wave_end = run_id == n_runs - 1 and i == repeat - 1
                        item = (step, entry, key, (wave_id, w) if wave_end else None)
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
            step, entry = item[0], item[1]
            free_at["decoder"] = env.now + step.decode_cycles
            entry[2] = free_at["decoder"] + decode_latency + select_latency
            if step.decode_cycles:
                yield env.timeout(step.decode_cycles)
            deliver(decoded, item, decode_latency)

    def operand_select():
        while True:
            item = yield decoded.get()
            if item is None:
                deliver(selected, None, select_latency)
                return
            deliver(selected, item, select_latency)

    def writeback(nbytes):
        transfer = book(nbytes)
        writebacks.append(env.now + transfer)
        yield env.timeout(transfer)
        writebacks.popleft()  # the channel is FIFO: the oldest write-back ends first
        out_slots.put(1)

    def mac():
        while True:
            start = env.now
            item = yield selected.get()
            if item is None:
                return
            step, entry, key, wave_key = item
            arrived = entry[1]
            waited = env.now - start
            memory = max(0.0, min(env.now, arrived) - start)
            bandwidth = min(memory, busy_within(start - latency, start + memory - latency))
            counters["memory_bandwidth"] += bandwidth
            counters["memory_latency"] += memory - bandwidth
            counters["decode"] += waited - memory
            if step.wave_start:
                start = env.now
                yield out_slots.get(1)
                counters["memory_bandwidth"] += env.now - start
            fed = max(step.mac_cycles, step.operand_cycles)
            occupancy = max(fed, step.salient_cycles)
            yield env.timeout(occupancy)
            counters["busy"] += step.useful_cycles
            counters["compute"] += step.mac_cycles - step.useful_cycles
            counters["operand_delivery"] += fed - step.mac_cycles
            counters["salient"] += occupancy - fed
            in_slots.put(1)
            in_flight.popleft()  # steps finish in load order: this one is the oldest
            if step.writeback_bytes:
                env.process(writeback(step.writeback_bytes))
            elif wave_key is not None:
                out_slots.put(1)
            stats["last_mac"] = env.now
            record(step_history, key)
            if wave_key is not None:
                record(wave_history, wave_key[0])

    for wave_runs, wave_repeat in schedule:
        total_steps += wave_repeat * sum(c for _, c in wave_runs)
    for proc in (dma, decoder, operand_select, mac):
        env.process(proc())
    env.run()
    end = env.now
    counters["memory_bandwidth"] += end - stats["last_mac"]  # final write-back drain
    total = end + clock.credit_time
    merged = {c: counters[c] + clock.credit[c] for c in COUNTERS}
    if not math.isclose(stats["simulated"] + stats["skipped"], total_steps):
        raise RuntimeError("pipeline lost steps")  # an internal invariant, not user input
    return PipelineResult(total, merged, stats["simulated"], stats["skipped"])
