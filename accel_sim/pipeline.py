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
from dataclasses import dataclass

import simpy

MAX_PERIOD = 16  # longest period searched, in steps (or waves)
COUNTERS = ("busy", "compute", "memory_bandwidth", "memory_latency", "decode",
            "operand_delivery", "salient")


@dataclass(kw_only=True)
class PipelineResult:
    cycles: float
    counters: dict
    simulated_steps: int
    skipped_steps: int


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


class _Pipeline:
    """One simulation: the simpy processes are methods over the pipeline's explicit state."""

    def __init__(self, schedule, bytes_per_cycle: float, latency: float, decode_latency: float,
                 select_latency: float, slots: int, out_slots: int, steady_state: bool):
        self.schedule = schedule
        self.bytes_per_cycle, self.latency = bytes_per_cycle, latency
        self.decode_latency, self.select_latency = decode_latency, select_latency
        self.steady_state = steady_state
        self.env = env = simpy.Environment()
        # When the DRAM channel and the decoder are next free. The channel serves transfers
        # first come, first served, one at a time: booking its next free cycle when a transfer
        # is issued is that queue, without its events.
        self.channel_free = 0.0
        self.decoder_free = 0.0
        self.busy: deque = deque()  # merged [begin, end] intervals of channel transfers
        self.in_slots = simpy.Container(env, capacity=slots, init=slots)
        # The select buffer needs no slots of its own: a step holds its input slot from its
        # load until the MAC array finishes it, so at most ``slots`` steps are decoded ahead.
        self.out_slots = simpy.Container(env, capacity=out_slots, init=out_slots)
        self.loaded, self.decoded, self.selected = (simpy.Store(env), simpy.Store(env),
                                                    simpy.Store(env))
        self.counters = dict.fromkeys(COUNTERS, 0.0)
        # Credited (skipped) periods: time and counters.
        self.credit_time = 0.0
        self.credit = dict.fromkeys(COUNTERS, 0.0)
        self.in_flight: deque = deque()  # [step, operands arrive, selects ready] per loaded step
        self.writebacks: deque = deque()  # end times of the write-backs on the channel
        self.step_history: dict = {}
        self.wave_history: dict = {}
        self.simulated = self.skipped = 0
        self.last_mac = 0.0

    def run(self) -> PipelineResult:
        for process in (self.dma, self.decoder, self.operand_select, self.mac):
            self.env.process(process())
        self.env.run()
        end = self.env.now
        self.counters["memory_bandwidth"] += end - self.last_mac  # final write-back drain
        total_steps = sum(wave_repeat * sum(c for _, c in wave_runs)
                          for wave_runs, wave_repeat in self.schedule)
        if not math.isclose(self.simulated + self.skipped, total_steps):
            raise RuntimeError("pipeline lost steps")  # an internal invariant, not user input
        return PipelineResult(
            cycles=end + self.credit_time,
            counters={c: self.counters[c] + self.credit[c] for c in COUNTERS},
            simulated_steps=self.simulated, skipped_steps=self.skipped)

    # -- the DRAM channel ------------------------------------------------------------------
    def book(self, nbytes: float) -> float:
        """Cycles from now until a transfer of ``nbytes`` issued now has left the channel."""
        now = self.env.now
        start = max(now, self.channel_free)
        self.channel_free = start + nbytes / self.bytes_per_cycle
        if self.busy and self.busy[-1][1] >= start:
            self.busy[-1][1] = self.channel_free
        else:
            self.busy.append([start, self.channel_free])
        return self.channel_free - now

    def busy_within(self, lo: float, hi: float) -> float:
        """Cycles the channel was transferring within [lo, hi]; forgets intervals that ended
        before ``lo`` (later queries start no earlier: the MAC array's waits move forward)."""
        busy = self.busy
        while busy and busy[0][1] <= lo:
            busy.popleft()
        return sum(max(0.0, min(hi, e) - max(lo, b)) for b, e in busy if b < hi)

    # -- steady state ----------------------------------------------------------------------
    def state(self) -> tuple:
        """Everything the pipeline's future depends on besides the steps still to come, with
        times relative to now (past times as 0: they no longer matter)."""
        now, latency = self.env.now, self.latency

        def rel(t):
            return max(0.0, t - now)
        return (rel(self.channel_free), rel(self.decoder_free), self.in_slots.level,
                self.out_slots.level, tuple(rel(t) for t in self.writebacks),
                tuple((max(b - now, -latency), e - now) for b, e in self.busy
                      if e > now - latency),
                tuple((s, rel(a), None if r is None else rel(r)) for s, a, r in self.in_flight))

    def record(self, history: dict, key) -> None:
        """Append a completion snapshot (time, counters, state) under ``key``."""
        entries = history.setdefault(key, [])
        entries.append((self.env.now + self.credit_time,
                        tuple(self.counters[c] + self.credit[c] for c in COUNTERS),
                        self.state()))
        if len(entries) > MAX_PERIOD + 1:
            del entries[0]

    def skip_periods(self, history: dict, key, remaining: int) -> int:
        """Units (steps or waves) of ``remaining`` credited as whole periods of the steady
        state found in ``history[key]`` (0: none found); keeps the last unit simulated."""
        if not self.steady_state or remaining <= 1:
            return 0
        found = _steady(history.get(key, []))
        if found is None:
            return 0
        length, time, deltas = found
        times = (remaining - 1) // length
        self.credit_time += time * times
        for name, inc in zip(COUNTERS, deltas):
            self.credit[name] += inc * times
        history.pop(key, None)
        return times * length

    # -- the processes ---------------------------------------------------------------------
    def deliver(self, store: simpy.Store, item, delay: float) -> None:
        if delay > 0:
            self.env.timeout(delay).callbacks.append(lambda _ev: store.put(item))
        else:
            store.put(item)

    def dma(self):
        for wave_id, (wave_runs, wave_repeat) in enumerate(self.schedule):
            w = 0
            while w < wave_repeat:
                skip = self.skip_periods(self.wave_history, wave_id, wave_repeat - w)
                if skip:
                    self.skipped += skip * sum(c for _, c in wave_runs)
                    w += skip
                    continue
                for run_id, (step, repeat) in enumerate(wave_runs):
                    wave_end = (wave_id, w) if run_id == len(wave_runs) - 1 else None
                    yield from self.load_run(step, repeat, (wave_id, w, run_id), wave_end)
                w += 1
        self.deliver(self.loaded, None, self.latency)  # the end marker follows the last latency

    def load_run(self, step, repeat: int, key: tuple, wave_end: tuple | None):
        """Load ``repeat`` equal steps (a run), crediting its steady state when found."""
        env, i = self.env, 0
        while i < repeat:
            skip = self.skip_periods(self.step_history, key, repeat - i)
            if skip:
                self.skipped += skip
                i += skip
                continue
            yield self.in_slots.get(1)
            transfer = self.book(step.load_bytes) if step.load_bytes else 0.0
            entry = [step, env.now + transfer + self.latency, None]
            self.in_flight.append(entry)
            if transfer:
                yield env.timeout(transfer)
            item = (step, entry, key, wave_end if i == repeat - 1 else None)
            self.deliver(self.loaded, item, self.latency)
            self.simulated += 1
            i += 1

    def decoder(self):
        while True:
            item = yield self.loaded.get()
            if item is None:
                self.deliver(self.decoded, None, self.decode_latency)
                return
            step, entry = item[0], item[1]
            self.decoder_free = self.env.now + step.decode_cycles
            entry[2] = self.decoder_free + self.decode_latency + self.select_latency
            if step.decode_cycles:
                yield self.env.timeout(step.decode_cycles)
            self.deliver(self.decoded, item, self.decode_latency)

    def operand_select(self):
        while True:
            item = yield self.decoded.get()
            self.deliver(self.selected, item, self.select_latency)
            if item is None:
                return

    def writeback(self, nbytes: float):
        transfer = self.book(nbytes)
        self.writebacks.append(self.env.now + transfer)
        yield self.env.timeout(transfer)
        self.writebacks.popleft()  # the channel is FIFO: the oldest write-back ends first
        self.out_slots.put(1)

    def mac(self):
        env, counters = self.env, self.counters
        while True:
            start = env.now
            item = yield self.selected.get()
            if item is None:
                return
            step, entry, key, wave_key = item
            self.count_wait(start, entry[1])
            if step.wave_start:
                start = env.now
                yield self.out_slots.get(1)
                counters["memory_bandwidth"] += env.now - start
            fed = max(step.mac_cycles, step.operand_cycles)
            occupancy = max(fed, step.salient_cycles)
            yield env.timeout(occupancy)
            counters["busy"] += step.useful_cycles
            counters["compute"] += step.mac_cycles - step.useful_cycles
            counters["operand_delivery"] += fed - step.mac_cycles
            counters["salient"] += occupancy - fed
            self.in_slots.put(1)
            self.in_flight.popleft()  # steps finish in load order: this one is the oldest
            if step.writeback_bytes:
                env.process(self.writeback(step.writeback_bytes))
            elif wave_key is not None:
                self.out_slots.put(1)
            self.last_mac = env.now
            self.record(self.step_history, key)
            if wave_key is not None:
                self.record(self.wave_history, wave_key[0])

    def count_wait(self, start: float, arrived: float) -> None:
        """Attribute the MAC array's wait since ``start`` for a step whose operands arrived at
        ``arrived``: memory (bandwidth while the channel was busy, else latency), then decode."""
        now, counters = self.env.now, self.counters
        waited = now - start
        memory = max(0.0, min(now, arrived) - start)
        bandwidth = min(memory, self.busy_within(start - self.latency,
                                                 start + memory - self.latency))
        counters["memory_bandwidth"] += bandwidth
        counters["memory_latency"] += memory - bandwidth
        counters["decode"] += waited - memory


def run_pipeline(schedule, bytes_per_cycle: float, latency: float, decode_latency: float,
                 select_latency: float, slots: int, out_slots_count: int,
                 steady_state: bool = True) -> PipelineResult:
    """Simulate ``schedule`` ([(wave_runs, wave_repeat)], wave_runs = ((Step, repeat), ...))."""
    return _Pipeline(schedule, bytes_per_cycle, latency, decode_latency, select_latency, slots,
                     out_slots_count, steady_state).run()
