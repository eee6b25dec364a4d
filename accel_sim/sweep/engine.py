"""The sweep engine: evaluate design points on a local process pool or a Dask cluster.

Points are cut into small chunks; a bounded window of chunks is in flight at a time (memory stays
flat for sweeps of any size) and every finished point is written to the store by this process, the
single writer, as soon as its chunk returns. Points already in the store are skipped, so a sweep
restarted after a crash or a SIGKILL only computes what is missing.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

from tqdm import tqdm

from accel_sim.sweep.evaluate import evaluate_chunk
from accel_sim.sweep.spec import SweepSpec, point_key
from accel_sim.sweep.store import SweepStore

# Chunks in flight per worker: enough to keep workers busy while the writer stores results.
_WINDOW_PER_WORKER = 4
# Target number of chunks per worker over a whole sweep (small chunks balance load better).
_CHUNKS_PER_WORKER = 32
_MAX_CHUNK = 64


@dataclass(frozen=True)
class SweepStats:
    """What one run of the engine did."""

    total: int  # points in the sweep
    skipped: int  # already in the store
    computed: int  # evaluated now
    errors: int  # of the computed, how many raised
    wall_s: float
    engine: str


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


# Local workers beyond this many per available CPU only add memory (~200 MB each), not speed.
MAX_WORKERS_PER_CPU = 4


def check_workers(workers: int) -> int:
    """Refuse a local worker count below 1 or above MAX_WORKERS_PER_CPU x the CPUs available."""
    bound = MAX_WORKERS_PER_CPU * default_workers()
    if not 1 <= workers <= bound:
        raise ValueError(f"--workers must be in [1, {bound}] ({MAX_WORKERS_PER_CPU} per "
                         f"available CPU), got {workers}")
    return workers


def run_spec(spec: SweepSpec, store: SweepStore, **options) -> SweepStats:
    """Run every point of ``spec`` that ``store`` does not already hold."""
    return run_points(spec.points(), store, spec_name=spec.name, spec_source=spec.source,
                      spec_text=spec.text, **options)


def run_points(points: list[dict], store: SweepStore, *, workers: int | None = None,
               dask_address: str | None = None, chunk_size: int | None = None,
               retry_errors: bool = False, progress: bool = True, spec_name: str = "points",
               spec_source: str = "<points>", spec_text: str | None = None) -> SweepStats:
    """Evaluate the points missing from ``store`` and store each as it finishes."""
    start = time.perf_counter()
    workers = check_workers(workers or default_workers())
    done = store.finished_keys(include_errors=not retry_errors)
    todo = [(key, p) for key, p in ((point_key(p), p) for p in points) if key not in done]
    engine = f"dask:{dask_address}" if dask_address else f"local:{workers}"
    if not todo:
        return SweepStats(len(points), len(points), 0, 0, time.perf_counter() - start, engine)
    run_id = store.start_run(spec_name, spec_source, engine, spec_text)
    size = chunk_size or min(_MAX_CHUNK, max(1, len(todo) // (workers * _CHUNKS_PER_WORKER)))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    errors = 0
    bar = tqdm(total=len(todo), unit="pt", desc=f"sweep {spec_name}", disable=not progress,
               smoothing=0.1, dynamic_ncols=True)
    try:
        run = _run_on_dask if dask_address else _run_locally
        for records in run(chunks, workers, dask_address):
            for key, point, result, error, elapsed in records:
                store.put(key, point, result, error, elapsed, run_id)
                errors += error is not None
            bar.update(len(records))
            if errors:
                bar.set_postfix(errors=errors, refresh=False)
    finally:
        bar.close()
    skipped = len(points) - len(todo)
    return SweepStats(len(points), skipped, len(todo), errors, time.perf_counter() - start, engine)


def _run_locally(chunks, workers, _address):
    """Yield each chunk's records as it finishes, on a process pool (in-process for 1 worker)."""
    if workers == 1:
        for chunk in chunks:
            yield evaluate_chunk(chunk)
        return
    pending_chunks = iter(chunks)
    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        running = {pool.submit(evaluate_chunk, c)
                   for c in itertools.islice(pending_chunks, workers * _WINDOW_PER_WORKER)}
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
                nxt = next(pending_chunks, None)
                if nxt is not None:
                    running.add(pool.submit(evaluate_chunk, nxt))


def die_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: end this worker when the sweep's process dies by any signal
    (SIGKILL included, which leaves no chance to clean up), instead of computing for minutes.

    Linux: the kernel sends SIGKILL when the parent exits (prctl PR_SET_PDEATHSIG); elsewhere a
    daemon thread polls the parent's pid once a second."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    else:
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


# Seconds to reach a Dask scheduler before giving up: the TCP probe's connect and its wait for
# the scheduler's first bytes, then the Client's own connect.
DASK_PROBE_TIMEOUT_S = 4
DASK_CONNECT_TIMEOUT_S = 5
# A Dask scheduler's first message (its handshake) is a few hundred bytes; its 8-byte length
# prefix above this means the server speaks another protocol.
_MAX_HANDSHAKE_BYTES = 1 << 20


def probe_dask_tcp(address: str) -> None:
    """Refuse, within seconds, a tcp:// address where no Dask scheduler listens: a scheduler
    writes its handshake as soon as a connection opens (8-byte little-endian length first);
    an HTTP server writes nothing, other servers write something else. Without this check the
    Client waits forever on an HTTP server or tries to allocate exabytes for a garbage reply."""
    import socket
    import struct

    host_port = address.removeprefix("tcp://")
    host, _, port = host_port.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"--dask: invalid scheduler address {address!r} (e.g. tcp://host:8786)")
    try:
        with socket.create_connection((host, int(port)), timeout=DASK_PROBE_TIMEOUT_S) as sock:
            sock.settimeout(DASK_PROBE_TIMEOUT_S)
            prefix = b""
            while len(prefix) < 8:
                chunk = sock.recv(8 - len(prefix))
                if not chunk:
                    break
                prefix += chunk
    except TimeoutError:
        raise OSError(f"{address} is not a Dask scheduler: it sent no handshake within "
                      f"{DASK_PROBE_TIMEOUT_S} s") from None
    except OSError as exc:
        raise OSError(f"cannot reach a Dask scheduler at {address}: "
                      f"{exc.strerror or type(exc).__name__}") from None
    if len(prefix) < 8 or not 0 < struct.unpack("<Q", prefix)[0] <= _MAX_HANDSHAKE_BYTES:
        raise OSError(f"{address} is not a Dask scheduler: its reply is not a Dask handshake")


def connect_dask(address: str):
    """A ``distributed.Client`` for the scheduler at ``address``; anything that is not a
    reachable Dask scheduler (a closed port, an HTTP server, garbage) is a one-line OSError
    within :data:`DASK_CONNECT_TIMEOUT_S` seconds."""
    from distributed import Client

    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address):
        raise ValueError(f"--dask: invalid scheduler address {address!r} (e.g. tcp://host:8786)")
    if "://" not in address or address.startswith("tcp://"):
        probe_dask_tcp(address)
    try:
        return Client(address, timeout=f"{DASK_CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OSError(f"cannot reach a Dask scheduler at {address}: {first}") from None
    except Exception as exc:  # noqa: BLE001 - a foreign server makes the handshake fail anyhow
        raise OSError(f"{address} is not a Dask scheduler (handshake failed: "
                      f"{type(exc).__name__})") from None


def _run_on_dask(chunks, workers, address):
    """Yield each chunk's records as it finishes, on the dask.distributed scheduler at address.

    The scheduler and workers must import this package (``pip install`` it there, or set
    PYTHONPATH). Cluster failures become an ``OSError``; points stored so far stay stored.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    with connect_dask(address) as client:
        try:
            slots = max(workers, sum(client.nthreads().values())) * _WINDOW_PER_WORKER
            pending_chunks = iter(chunks)
            running = as_completed([client.submit(evaluate_chunk, c, pure=False)
                                    for c in itertools.islice(pending_chunks, slots)])
            for future in running:
                records = future.result()
                future.release()
                yield records
                nxt = next(pending_chunks, None)
                if nxt is not None:
                    running.add(client.submit(evaluate_chunk, nxt, pure=False))
        except ImportError as exc:
            raise OSError(f"the Dask cluster at {address} cannot import the sweep code ({exc}): "
                          "install nmsim on the scheduler and workers or set their PYTHONPATH"
                          ) from None
        except RuntimeError as exc:  # e.g. the scheduler cannot deserialize the task graph
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise OSError(f"the Dask cluster at {address} failed: {first} - the scheduler and "
                          "workers need the same environment with nmsim importable") from None
        except KilledWorker as exc:
            raise OSError(f"a Dask worker died running sweep points ({exc}); finished points are "
                          "stored, run the sweep again to resume") from None
