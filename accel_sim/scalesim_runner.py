"""Run the real SCALE-Sim on (config, topology) pairs and print its COMPUTE_REPORT as JSON.

Runs under SCALE-Sim's own interpreter (its venv: ``scalesim==3.0.0``, ``numpy<2``), executed
by path (``accel_sim.scalesim_ref`` starts it), so it imports nothing from nmsim. Reads a JSON
list of ``{"config", "topology", "out"}`` on stdin; prints one JSON object per line: the report
rows (``total_cycles`` includes stalls) and the wall and CPU seconds of the simulation call
alone (interpreter start and imports excluded, so the speed comparison with nmsim is like for
like).
"""

import contextlib
import io
import json
import os
import sys
import time

from scalesim.scale_sim import scalesim


def run_one(config: str, topology: str, out: str) -> dict:
    layout = os.path.join(out, "layout.csv")  # SCALE-Sim opens a layout file even when unused
    os.makedirs(out, exist_ok=True)
    with open(layout, "w") as handle:
        handle.write("Layer name,\n")
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        sim = scalesim(save_disk_space=True, verbose=False, config=config, topology=topology,
                       layout=layout, input_type_gemm=True)
        sim.run_scale(top_path=out)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    report = os.path.join(out, sim.config.get_run_name(), "COMPUTE_REPORT.csv")
    rows = []
    with open(report) as handle:
        next(handle)
        for line in handle:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) < 7:
                continue
            rows.append({"layer": int(fields[0]), "total_cycles_incl_prefetch": float(fields[1]),
                         "total_cycles": float(fields[2]), "stall_cycles": float(fields[3]),
                         "overall_util": float(fields[4]), "mapping_efficiency": float(fields[5]),
                         "compute_util": float(fields[6])})
    return {"config": config, "topology": topology, "wall_s": wall, "cpu_s": cpu,
            "rows": rows}


def main() -> int:
    for case in json.load(sys.stdin):
        print(json.dumps(run_one(case["config"], case["topology"], case["out"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
