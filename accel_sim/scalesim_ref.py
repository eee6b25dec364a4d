"""Running the real SCALE-Sim beside nmsim on the same files (parity script and tests).

SCALE-Sim 3.0.0 needs ``numpy<2``, so it lives in its own virtual environment, built on demand
under a cache folder keyed by its requirements (``NMSIM_SCALESIM_PYTHON`` names an existing
interpreter instead). :func:`run_scalesim` feeds (config, topology) pairs to
``accel_sim/scalesim_runner.py`` under that interpreter; :func:`run_nmsim` reads the same files
through :mod:`accel_sim.scalesim_io`. :func:`scalesim_compute_cycles` is SCALE-Sim's compute
cycle count in closed form, written from its source (``compute/systolic_compute_{ws,os,is}.py``,
``compute/operand_matrix.py``) and checked against the tool on every case of
``scripts/scalesim_parity.py``: the fallback reference where the tool cannot be installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import scalesim_io

REQUIREMENTS = ("scalesim==3.0.0", "numpy<2")
RUNNER = Path(__file__).with_name("scalesim_runner.py")
DEFAULT_CACHE = Path.home() / ".cache" / "nmsim"


@dataclass(frozen=True)
class ParityCase:
    """One GEMM on one array, as both tools see it; ``bandwidth`` (words/cycle) selects
    SCALE-Sim's USER mode with SRAM of ``sram_kb`` (ifmap, filter, ofmap)."""

    label: str
    dataflow: str
    rows: int
    cols: int
    m: int
    n: int
    k: int
    pattern: str | None = None
    sram_kb: tuple[int, int, int] = (1024, 1024, 1024)
    bandwidth: float | None = None

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write the case's SCALE-Sim config and topology into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        cfg, topo = folder / "scale.cfg", folder / "topology.csv"
        cfg.write_text(scalesim_io.scalesim_config_text(
            self.label, self.rows, self.cols, self.dataflow, sram_kb=self.sram_kb,
            bandwidth=self.bandwidth, sparsity=self.pattern is not None))
        layer = (self.label, self.m, self.n, self.k) + ((self.pattern,) if self.pattern else ())
        topo.write_text(scalesim_io.topology_text([layer]))
        return cfg, topo


def scalesim_compute_cycles(dataflow: str, rows: int, cols: int, m: int, n: int, k: int,
                            pattern: str | None = None) -> int:
    """SCALE-Sim 3.0.0's compute cycles (``Total Cycles - Stall Cycles``) of a GEMM.

    Spatial S_R x S_C, temporal T: OS (m, n, k), WS (k', n, m), IS (k', m, n). A fold lasts
    ``2R + C + T - 2`` (WS, IS: R preload rows + skew + drain) or ``R + C + T - 2`` (OS); the
    total is ``folds x fold - 1``. N:M (WS only in SCALE-Sim): the filter keeps the first N of
    every M rows and min(N, t) of a t-row tail, compressed: k' = (k // M) N + min(N, k % M)."""
    kept = k
    if pattern is not None:
        n_keep, m_block = (int(x) for x in pattern.split(":"))
        kept = (k // m_block) * n_keep + min(n_keep, k % m_block)
    s_r, s_c, t, preload = {"os": (m, n, k, 0), "ws": (kept, n, m, rows),
                            "is": (kept, m, n, rows)}[dataflow]
    folds = -(-s_r // rows) * -(-s_c // cols)
    return folds * (preload + rows + cols + t - 2) - 1


def scalesim_python(cache_dir: Path | None = None, timeout_s: float = 900.0
                    ) -> tuple[str | None, str]:
    """(interpreter with SCALE-Sim, "") or (None, why not): ``NMSIM_SCALESIM_PYTHON``, else a
    venv under ``cache_dir`` built once with pip (needs PyPI)."""
    named = os.environ.get("NMSIM_SCALESIM_PYTHON")
    if named:
        if Path(named).is_file():
            return named, ""
        return None, f"NMSIM_SCALESIM_PYTHON={named} is not a file"
    key = hashlib.sha256(" ".join(REQUIREMENTS).encode()).hexdigest()[:12]
    venv = Path(cache_dir or DEFAULT_CACHE) / f"scalesim-venv-{key}"
    python, marker = venv / "bin" / "python", venv / ".nmsim-installed"
    if marker.is_file() and python.is_file():
        return str(python), ""
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=timeout_s)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
                       check=True, capture_output=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        tail = detail.decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        return None, f"could not build SCALE-Sim's venv at {venv}: {tail[0][:200]}"
    marker.write_text(" ".join(REQUIREMENTS) + "\n")
    return str(python), ""


def run_scalesim(python: str, files: list[tuple[Path, Path]], workdir: Path,
                 timeout_s: float = 3600.0) -> list[dict]:
    """SCALE-Sim's report rows and seconds for each (config, topology) pair, in order."""
    jobs = [{"config": str(c), "topology": str(t), "out": str(workdir / f"run{i}")}
            for i, (c, t) in enumerate(files)]
    proc = subprocess.run([python, str(RUNNER)], input=json.dumps(jobs), text=True,
                          capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"SCALE-Sim runner failed ({proc.returncode}): {tail[0]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def run_nmsim(cfg_path: Path, topo_path: Path, repeats: int = 5) -> dict:
    """nmsim on the same files: per-layer rows and the median wall / CPU seconds of reading
    both files and simulating every layer (after one warm-up run)."""
    def once():
        cfg = scalesim_io.read_scalesim_config(cfg_path)
        layers = scalesim_io.read_topology(topo_path)
        return [scalesim_io.compute_report_row(i, layer, hw, result) for i, (layer, hw, result)
                in enumerate(scalesim_io.simulate_topology(cfg, layers))]
    rows = once()
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        once()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return {"rows": rows, "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}
