"""`nmsim simulate`: a model workload on a sparse tensor-core design (accel_sim)."""

from __future__ import annotations

import json

from accel_sim import scalesim_io
from accel_sim.config import load_hardware
from accel_sim.energy import attach_energy, check_table, load_table
from accel_sim.limits import MAX_STEPS, check_steps, check_workload_parameters
from accel_sim.simulate import simulate_workload
from accel_sim.sweep.evaluate import simulator_version
from accel_sim.workload_io import check_coverage, load_masks, match_weights
from compression.formats import Pattern
from workloads.models import ARCHITECTURES, PHASES, gemms, get_arch


def register(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a model workload on a sparse tensor core")
    p.add_argument("--hw", default="flexible-nm", metavar="PRESET_OR_FILE",
                   help="hardware preset name or YAML file (default flexible-nm)")
    p.add_argument("--workload", default="llama2-7b", metavar="NAME_OR_CONFIG_JSON",
                   help=f"a built-in model ({', '.join(sorted(ARCHITECTURES))}) or a Hugging "
                        "Face config.json of a LLaMa-family model (Llama-2/3, Mistral, Qwen2)")
    p.add_argument("--phase", default="prefill", choices=PHASES)
    p.add_argument("--seq", type=int, default=2048, help="prefill tokens (decode: KV length)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--kv-len", type=int, default=None, help="decode KV length (default --seq)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default all)")
    p.add_argument("--no-lm-head", action="store_true", help="leave out the output projection")
    p.add_argument("--pattern", default=None, metavar="N:M",
                   help="pattern to run (must be supported by the hardware; 'dense' allowed)")
    p.add_argument("--salient", default=None, metavar="N:M",
                   help="synthetic structured salient side-car, e.g. 16:256")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="a `nmsim prune --out` folder (or one compressed file): per-layer work "
                        "from the real masks")
    p.add_argument("--allow-partial-masks", action="store_true",
                   help="run the weights --masks does not cover as uniform N:M (counted in the "
                        "output) instead of refusing")
    p.add_argument("--full", action="store_true",
                   help="simulate every step (no steady-state extrapolation)")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS,
                   help=f"refuse a simulation estimated above this many wave-steps (default "
                        f"{MAX_STEPS:,}, a few minutes here)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--energy-table", default=None, metavar="FILE",
                   help="energy reference table (Accelergy ERT-shaped YAML, docs/energy.md) "
                        "instead of the packaged accel_sim/energy_tables/default.yaml")
    p.add_argument("--scalesim-config", default=None, metavar="FILE.cfg",
                   help="a SCALE-Sim config (array, dataflow, SRAMs, bandwidth, sparsity): "
                        "simulate its systolic design instead of --hw (needs --topology)")
    p.add_argument("--topology", default=None, metavar="FILE.csv",
                   help="a SCALE-Sim GEMM topology (name, M, N, K[, N:M]) instead of --workload")
    p.add_argument("--per-layer-csv", default=None, metavar="FILE",
                   help="with --scalesim-config: write a per-layer CSV shaped like SCALE-Sim's "
                        "COMPUTE_REPORT plus nmsim's stall, metadata and decoder columns")
    p.set_defaults(func=run)


def run(args) -> int:
    check_workload_parameters(seq=args.seq, batch=args.batch, kv_len=args.kv_len)
    if args.layers is not None and args.layers < 1:
        raise ValueError(f"--layers must be at least 1, got {args.layers}")
    if args.scalesim_config or args.topology or args.per_layer_csv:
        return _run_scalesim_inputs(args)
    get_arch(args.workload)  # a bad name or config.json: one line naming the file and the field
    hw = load_hardware(args.hw)
    if args.pattern is not None:
        hw = hw.run_at(args.pattern)
    table = load_table(args.energy_table)
    check_table(table, hw)
    check_steps(hw, gemms(args.workload, args.phase, seq=args.seq, batch=args.batch,
                          kv_len=args.kv_len, layers=args.layers), args.max_steps)
    weights = load_masks(args.masks, hw) if args.masks else None
    gemm_list = gemms(args.workload, args.phase, seq=args.seq, batch=args.batch,
                      kv_len=args.kv_len, layers=args.layers, lm_head=not args.no_lm_head,
                      per_layer=weights is not None)
    uniform = None
    if weights is not None:
        weights = match_weights(gemm_list, weights)
        uniform = check_coverage(gemm_list, weights, args.allow_partial_masks)
    salient = None if args.salient is None else Pattern.parse(args.salient)
    result = simulate_workload(hw, gemm_list, weights, salient=salient,
                               steady_state=not args.full, progress=not args.json)
    record = result.to_dict()
    attach_energy(record, result, table)
    record.update(workload=args.workload, phase=args.phase, seq=args.seq, batch=args.batch,
                  masks=args.masks, uniform_weights=uniform, hardware_config=hw.to_dict(),
                  simulator_version=simulator_version())  # enough to reproduce a saved JSON
    if args.json:
        print(json.dumps(record, indent=2, allow_nan=False))
        return 0
    _print_table(record)
    return 0


def _run_scalesim_inputs(args) -> int:
    """SCALE-Sim's own config and topology, reported per layer like its COMPUTE_REPORT."""
    if not (args.scalesim_config and args.topology):
        raise ValueError("--scalesim-config and --topology go together (--per-layer-csv needs "
                         "both)")
    cfg = scalesim_io.read_scalesim_config(args.scalesim_config)
    layers = scalesim_io.read_topology(args.topology)
    rows = [scalesim_io.compute_report_row(i, layer, hw, result) for i, (layer, hw, result)
            in enumerate(scalesim_io.simulate_topology(cfg, layers))]
    if args.per_layer_csv:
        scalesim_io.write_per_layer_csv(args.per_layer_csv, rows)
    if args.json:
        print(json.dumps({"config": cfg.path, "topology": args.topology, "layers": rows},
                         indent=2))
        return 0
    print(f"{cfg.run_name}: {cfg.array_rows}x{cfg.array_cols} {cfg.dataflow.upper()} systolic, "
          f"{cfg.bandwidth_mode} bandwidth ({args.topology})")
    print(f"{'layer':<16}{'M':>7}{'N':>7}{'K':>7}{'pattern':>8}{'cycles':>12}{'stall':>10}"
          f"{'util %':>8}{'map eff %':>10}")
    for r in rows:
        print(f"{r['Layer name']:<16}{r['M']:>7}{r['N']:>7}{r['K']:>7}{r['Pattern']:>8}"
              f"{r['Total Cycles']:>12.0f}{r['Stall Cycles']:>10.0f}{r['Overall Util %']:>8.2f}"
              f"{r['Mapping Efficiency %']:>10.2f}")
    print(f"total: {sum(r['Total Cycles'] for r in rows):.0f} cycles")
    return 0


def _print_table(r: dict) -> None:
    print(f"{r['workload']} {r['phase']} seq={r['seq']} batch={r['batch']} on {r['hardware']} "
          f"(pattern {r['pattern']}, {r['clock_ghz']} GHz)")
    head = f"{'gemm':<22}{'m':>7}{'n':>7}{'k':>7}{'count':>7}{'pattern':>8}{'Mcycles':>10}" \
           f"{'util':>6}{'TFLOP/s':>9}  dominant stall"
    print(head)
    for g in r["gemms"]:
        stalls = g["stall_cycles"]
        dominant = max(stalls, key=stalls.get)
        print(f"{g['name']:<22}{g['m']:>7}{g['n']:>7}{g['k']:>7}{g['count']:>7}{g['pattern']:>8}"
              f"{g['total_cycles'] / 1e6:>10.3f}{g['utilization']:>6.2f}"
              f"{g['effective_tflops']:>9.1f}  {dominant}")
    print(f"total: {r['total_cycles'] / 1e6:.3f} Mcycles = {r['seconds'] * 1e3:.3f} ms, "
          f"{r['effective_tflops']:.1f} TFLOP/s dense-equivalent (peak {r['dense_peak_tflops']:.0f}"
          f" dense / {r['sparse_peak_tflops']:.0f} sparse), utilization {r['utilization']:.2f}")
    print(f"analytical cross-check (roofline + latency): {r['analytical_cycles'] / 1e6:.3f} "
          "Mcycles")
    stalls = ", ".join(f"{k} {v / 1e6:.3f}" for k, v in r["stall_cycles"].items())
    print(f"stalls (Mcycles): {stalls}")
    dram = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in r["dram_bytes"].items())
    print(f"DRAM MiB: {dram}")
    area = ", ".join(f"{k} {v:.2f}" for k, v in r["area_breakdown_mm2"].items() if k != "total")
    print(f"area {r['area_mm2']:.2f} mm2: {area}")
    print(f"energy {r['energy_j'] * 1e3:.3f} mJ = {r['pj_per_mac']:.3f} pJ per dense MAC, "
          f"{r['tops_per_w']:.2f} TOPS/W dense-equivalent, {r['average_power_w']:.1f} W average")
    parts = sorted(((f"{c}.{a}", v) for c, acts in r["energy_breakdown_j"].items()
                    for a, v in acts.items() if v), key=lambda kv: -kv[1])
    print("energy mJ: " + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in parts))
    if r["uniform_weights"]:
        print(f"{r['uniform_weights']} weights had no mask in {r['masks']} and ran as uniform "
              f"{r['pattern']}")
    print(f"simulated {r['simulated_steps']} steps, extrapolated {r['skipped_steps']}, "
          f"{r['wall_s']:.2f} s wall")
