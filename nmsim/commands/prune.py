"""`nmsim prune`: prune a LLaMa-family model to N:M and write it in the shared compressed format."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from compression.criteria import METHODS, OBSERVE_DTYPES, PROPAGATE, Salient, Target


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune a model to N:M and write compressed weights")
    p.add_argument("--model", required=True,
                   help="smollm2-135m, a local Hugging Face folder, or a .gguf file")
    p.add_argument("--pattern", required=True, help="N:M (N kept of M), or P%% unstructured")
    p.add_argument("--method", choices=METHODS, default="wanda")
    side = p.add_mutually_exclusive_group()
    side.add_argument("--salient", metavar="K:L", help="structured salient side-car, e.g. 16:256")
    side.add_argument("--salient-unstructured", metavar="P",
                      help="unstructured side-car: share of each layer (0.0625, 6.25%%) or "
                           "K:L for the same count as that pattern")
    p.add_argument("--variance-correction", nargs="?", const="var", choices=("var", "mean-var"),
                   help="rescale each output channel to the dense output variance over the "
                        "calibration tokens (var, the default when given alone); mean-var also "
                        "matches the mean with an output bias")
    p.add_argument("--vc-gain", default="variance",
                   help="variance correction's per-channel gain: variance (match the dense "
                        "output variance) or least-squares (never raises the output error)")
    p.add_argument("--vc-scope", default="all",
                   help="which linears variance correction rescales: all, or "
                        "output-projections (o_proj and down_proj only)")
    p.add_argument("--salient-dtype", default="float32",
                   help="stored dtype of a structured side-car's values (float32, float16)")
    p.add_argument("--equalize", type=float, metavar="A", help="SmoothQuant-like alpha in [0, 1]")
    p.add_argument("--propagate", choices=PROPAGATE, default="pruned",
                   help="next layer calibrated on the pruned layer's outputs (pruned: two "
                        "forwards per layer), on the dense model's (dense: one forward), or "
                        "every group of linears on the outputs of the pruned groups before it, "
                        "inside the layer too (sequential: one forward, LLaMa layers)")
    p.add_argument("--observe-dtype", choices=OBSERVE_DTYPES, default="float32",
                   help="precision of the forward that observes each layer's input statistics "
                        "(--propagate pruned): bfloat16 runs its matmuls under autocast (faster "
                        "on CPUs with AVX-512 BF16 or AMX, much slower without); the propagating "
                        "forward, masks and weights stay fp32")
    p.add_argument("--finetune-steps", type=int, default=0)
    p.add_argument("--finetune-data", metavar="FILE",
                   help="fine-tune text (default: the calibration windows); refused when it "
                        "comes from the evaluation text")
    p.add_argument("--eval-before-finetune", action="store_true",
                   help="also measure perplexity before the fine-tune (one more evaluation)")
    p.add_argument("--calib", help="calibration text (default: shared wiki.valid.tokens)")
    p.add_argument("--eval", help="evaluation text (default: shared wiki.test.raw)")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=512, help="calibration and evaluation window")
    p.add_argument("--eval-windows", type=int, help="evaluate the first W windows (default: all)")
    p.add_argument("--no-eval", action="store_true", help="skip perplexity")
    p.add_argument("--encoding", default="rank", help="metadata encoding: rank, index, bitmask")
    p.add_argument("--value-dtype", default="float16", help="float16, bfloat16 or float32")
    p.add_argument("--masks-from", type=Path, metavar="DIR",
                   help="reuse the masks of an `nmsim export` or prune output folder of this "
                        "model (same --pattern and side-car); SparseGPT then only reconstructs")
    p.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    p.set_defaults(func=run)


# Bounds of the numeric options, checked before the model loads (not after an hour of pruning).
_INT_BOUNDS = {"finetune_steps": (0, 1_000_000), "calib_samples": (1, 1_000_000),
               "seqlen": (1, 1 << 20), "eval_windows": (1, 1 << 30)}


def _check_args(args) -> None:
    """One-line errors for every bad option, before any model or text is loaded."""
    for name, (low, high) in _INT_BOUNDS.items():
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"--{name.replace('_', '-')} must be in [{low}, {high}], got {value}")
    if args.out.exists() or args.out.is_symlink():
        raise ValueError(f"output folder {args.out} already exists; left untouched - choose a "
                         "new --out")


def run(args) -> int:
    _check_args(args)
    # Imported here: torch and transformers take seconds, which every other command would pay.
    from compression.export import check_masks, read_masks
    from compression.job import DataConfig, prune_and_evaluate
    from compression.pipeline import PruneConfig
    from compression.prune_output import OutputWriter
    from workloads.loading import load_model

    if args.salient:
        salient = Salient.parse(args.salient)
    elif args.salient_unstructured:
        salient = Salient.parse(args.salient_unstructured, unstructured=True)
    else:
        salient = None
    cfg = PruneConfig(Target.parse(args.pattern), args.method, salient,
                      variance_correction=args.variance_correction is not None,
                      match_mean=args.variance_correction == "mean-var",
                      vc_gain=args.vc_gain, vc_scope=args.vc_scope,
                      salient_dtype=args.salient_dtype,
                      equalize_alpha=args.equalize, encoding=args.encoding,
                      value_dtype=args.value_dtype, propagate=args.propagate,
                      observe_dtype=args.observe_dtype)
    data = DataConfig(args.calib, args.eval, args.calib_samples, args.seqlen, args.seqlen,
                      args.eval_windows, finetune_path=args.finetune_data)
    needs_calib = cfg.needs_calibration or args.finetune_steps
    data.check_files(calib=needs_calib, evaluation=not args.no_eval,  # fail before loading
                     finetune=bool(args.finetune_steps))
    fixed = read_masks(args.masks_from) if args.masks_from else None  # fail before loading
    start = time.perf_counter()
    loaded = load_model(args.model)
    load_s = time.perf_counter() - start
    if fixed:
        check_masks(*fixed, loaded.model, loaded.name, cfg, args.masks_from)
    calib = data.calibration(loaded.tokenizer) if needs_calib else None
    windows = None if args.no_eval else data.evaluation(loaded.tokenizer)
    tune = data.finetune(loaded.tokenizer, calib) if args.finetune_steps else None
    # A terminated run unwinds like an interrupted one, so the writer removes its staging folder.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        with OutputWriter(args.out) as writer:
            metrics, records = prune_and_evaluate(
                loaded, cfg, calib, windows, args.finetune_steps, writer=writer,
                release_layers=windows is None and not args.finetune_steps,
                eval_before_finetune=args.eval_before_finetune,
                fixed_masks=fixed[0] if fixed else None, finetune_windows=tune)
            metrics["timings"]["load_s"] = load_s
            metrics["data"] = data.describe() if needs_calib else None
            metrics["masks_from"] = str(args.masks_from) if args.masks_from else None
            writer.commit(records, metrics)
    finally:
        signal.signal(signal.SIGTERM, previous)
    ppl = (f"perplexity {metrics['perplexity']:.3f} ({metrics['windows']} windows x "
           f"{metrics['seqlen']} tokens)" if windows is not None else "not evaluated")
    if "before_finetune" in metrics:
        ppl += f", {metrics['before_finetune']['perplexity']:.3f} before the fine-tune"
    print(f"{cfg.target} {cfg.method}: {ppl}; prune {metrics['timings']['prune_s']:.1f} s; "
          f"peak RSS {metrics['peak_rss_mib']:.0f} MiB -> {args.out}")
    return 0
