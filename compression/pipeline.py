"""Layer-by-layer pruning of a LLaMa-family model (magnitude, Wanda, SparseGPT) with corrections.

Calibration inputs are captured at the first decoder layer, then each layer in turn is lifted to
fp32, observed on its inputs (input statistics per linear), optionally equalized, pruned, and run
again so that the *pruned* layer's outputs become the next layer's inputs (SparseGPT's protocol,
used here for every method). Only one layer is ever in fp32, so a fp16 model needs about its own
size plus one fp32 layer and the calibration activations.

Per linear, with importance scores (|W| for magnitude, |W| * ||X_j|| otherwise):
salient side-car S (optional) -> bulk mask on the rest (N:M via formats.nm_mask, or unstructured)
-> SparseGPT reconstruction (sparsegpt only) -> variance correction (optional). The weight that is
evaluated is exactly the stored one: :func:`compress_model` rounds the bulk to its value dtype
and writes W = B + S back into the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from compression.corrections import (
    VC_GAINS,
    InputStats,
    equalization_scales,
    equalize,
    variance_correction,
)
from compression.criteria import (
    METHODS,
    OBSERVE_DTYPES,
    PROPAGATE,
    Salient,
    Target,
    bulk_mask,
    magnitude_scores,
    salient_mask,
    wanda_scores,
)
from compression.formats import CSRTensor, NMTensor, SparseWeight, check_encoding, value_dtype
from compression.sparsegpt import hessian_factor, sparsegpt_prune
from workloads.models import LINEAR_GROUPS

# Which linears variance correction rescales: all, or only the two that write into the residual
# stream (whose outputs every later layer reads; the others feed attention scores or the MLP gate).
VC_SCOPES = {"all": None, "output-projections": ("self_attn.o_proj", "mlp.down_proj")}


@dataclass(frozen=True)
class PruneConfig:
    """One pruning recipe."""

    target: Target
    method: str = "wanda"
    salient: Salient | None = None
    variance_correction: bool = False
    match_mean: bool = False  # variance correction also matches the output mean (adds a bias)
    vc_gain: str = "variance"  # corrections.VC_GAINS
    vc_scope: str = "all"  # VC_SCOPES
    equalize_alpha: float | None = None
    encoding: str = "rank"
    value_dtype: str = "float16"
    salient_dtype: str = "float32"  # the structured side-car's stored values
    sparsegpt_damp: float = 0.01
    sparsegpt_blocksize: int = 128
    # Which outputs feed the next layer's calibration: "pruned" (SparseGPT's protocol: the pruned
    # layer is run again, two forwards per layer) or "dense" (the outputs of the observing
    # forward itself, one forward per layer: every layer is calibrated on the dense model's
    # activations; llm-compressor's propagate_error=False) or "sequential" (pruned outputs inside
    # the layer too: each group of linears observed on the outputs of the already pruned groups
    # before it, every linear computed once: one forward per layer, GPTQ's true-sequential).
    propagate: str = "pruned"
    # Precision of the observing forward (the one that collects the input statistics):
    # "bfloat16" runs its matmuls under CPU autocast (about 2x fp32's rate with AVX-512 BF16,
    # more with AMX, far slower without either). The propagating forward stays fp32 (in bf16
    # it would carry its rounding into every later layer's inputs). Masks chosen on the same
    # inputs agree with fp32's on 99.985% of SmolLM2's weights (Wanda 8:16; docs/compression.md).
    observe_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}': choose one of {', '.join(METHODS)}")
        if self.salient is not None:
            self.salient.check_against(self.target)
        if self.match_mean and not self.variance_correction:
            raise ValueError("matching the output mean is part of variance correction")
        if self.vc_gain not in VC_GAINS:
            raise ValueError(f"unknown variance-correction gain '{self.vc_gain}': choose one of "
                             f"{', '.join(VC_GAINS)}")
        if self.vc_scope not in VC_SCOPES:
            raise ValueError(f"unknown variance-correction scope '{self.vc_scope}': choose one "
                             f"of {', '.join(VC_SCOPES)}")
        if ((self.vc_gain, self.vc_scope) != ("variance", "all")
                and not self.variance_correction):
            raise ValueError("a variance-correction gain or scope needs variance correction")
        value_dtype(self.salient_dtype)
        if self.salient_dtype != "float32" and (self.salient is None or self.salient.unstructured
                                                or not self.target.structured):
            raise ValueError("a side-car value dtype other than float32 needs a structured "
                             "side-car on an N:M bulk (the unstructured one is stored in fp32)")
        if self.equalize_alpha is not None and not 0 <= self.equalize_alpha <= 1:
            raise ValueError(f"--equalize alpha must be in [0, 1], got {self.equalize_alpha}")
        if self.propagate not in PROPAGATE:
            raise ValueError(f"unknown propagation '{self.propagate}': choose one of "
                             f"{', '.join(PROPAGATE)}")
        if self.observe_dtype not in OBSERVE_DTYPES:
            raise ValueError(f"unknown observe dtype '{self.observe_dtype}': choose one of "
                             f"{', '.join(OBSERVE_DTYPES)}")
        if self.observe_dtype != "float32" and self.propagate != "pruned":
            raise ValueError(f"a {self.observe_dtype} observing forward needs --propagate pruned"
                             f" ('{self.propagate}' would propagate its rounded outputs)")
        check_encoding(self.encoding)
        value_dtype(self.value_dtype)

    @property
    def needs_calibration(self) -> bool:
        return (self.method != "magnitude" or self.variance_correction
                or self.equalize_alpha is not None)

    @property
    def needs_gram(self) -> bool:
        """Whether calibration accumulates X^T X (SparseGPT's Hessian, variance correction's
        covariance); Wanda and equalization need only norms and maxima."""
        return self.method == "sparsegpt" or self.variance_correction

    def describe(self) -> dict:
        return {"pattern": str(self.target), "method": self.method,
                "salient": str(self.salient) if self.salient else None,
                "variance_correction": self.variance_correction,
                "variance_correction_match_mean": self.match_mean,
                "variance_correction_gain": self.vc_gain,
                "variance_correction_scope": self.vc_scope,
                "equalize_alpha": self.equalize_alpha, "encoding": self.encoding,
                "value_dtype": self.value_dtype, "salient_dtype": self.salient_dtype,
                "propagate": self.propagate,
                # only when not fp32, so the keys of rows measured before the field stay valid
                **({"observe_dtype": self.observe_dtype}
                   if self.observe_dtype != "float32" else {})}

    def observe_precision(self) -> contextlib.AbstractContextManager:
        """The context the observing forward runs in."""
        if self.observe_dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=getattr(torch, self.observe_dtype))

    def corrects(self, name: str) -> bool:
        """Whether variance correction rescales the linear ``name`` (e.g. ``mlp.down_proj``)."""
        scope = VC_SCOPES[self.vc_scope]
        return self.variance_correction and (scope is None or name.endswith(scope))


@dataclass
class LayerMask:
    """Where a linear keeps weights: the bulk mask and the salient side-car's (or None)."""

    bulk: np.ndarray
    salient: np.ndarray | None = None

    @property
    def union(self) -> np.ndarray:
        return self.bulk if self.salient is None else self.bulk | self.salient


@dataclass
class PruneOutcome:
    """Masks by module name (e.g. ``model.layers.0.self_attn.q_proj``) and per-linear records.

    With a layer sink (:func:`prune_model`), masks leave with their layer and are not kept here.
    """

    masks: dict[str, LayerMask] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)


@dataclass
class CompressedLayer:
    """One decoder layer as stored: compressed linears (N:M bulk only), masks, the output
    biases that mean matching added and the RMSNorm gains equalization changed (what an export
    needs beside the base model), all by module name."""

    index: int
    weights: dict[str, SparseWeight]
    masks: dict[str, LayerMask]
    biases: dict[str, np.ndarray]
    gains: dict[str, np.ndarray] = field(default_factory=dict)

    def bool_masks(self) -> dict[str, np.ndarray]:
        """``NAME`` (bulk) and ``NAME.salient`` keep masks."""
        out = {}
        for name, mask in self.masks.items():
            out[name] = mask.bulk
            if mask.salient is not None:
                out[f"{name}.salient"] = mask.salient
        return out


LayerSink = Callable[[CompressedLayer], None]


def prune_weight(weight: torch.Tensor, stats: InputStats | None, cfg: PruneConfig,
                 factor: tuple[torch.Tensor, torch.Tensor] | None = None,
                 fixed: LayerMask | None = None, correct: bool | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, LayerMask, dict]:
    """Prune one ``[out, in]`` weight; returns (new fp32 weight, output bias from mean matching
    or None, masks, statistics). ``factor``: SparseGPT's :func:`hessian_factor` of ``stats``
    when already computed for another linear of the same input. ``fixed``: masks to reuse
    instead of choosing them (``nmsim prune --masks-from``); SparseGPT then only reconstructs.
    ``correct``: whether variance correction applies here (default: whenever ``cfg`` has it;
    :meth:`PruneConfig.corrects` tells by the linear's name)."""
    w = weight.detach().to(torch.float32)
    w_np = w.numpy()
    if fixed is not None:
        sal, keep = fixed.salient, fixed.bulk
    else:
        importance = (magnitude_scores(w_np) if cfg.method == "magnitude" else
                      wanda_scores(w_np, stats.norms.numpy().astype(np.float32)))
        sal = salient_mask(importance, cfg.salient) if cfg.salient else None
    rest = w_np if sal is None else np.where(sal, np.float32(0), w_np)
    if cfg.method == "sparsegpt":
        new_rest, keep = sparsegpt_prune(torch.from_numpy(rest), stats.gram, cfg.target,
                                         None if sal is None else torch.from_numpy(sal),
                                         cfg.sparsegpt_blocksize, cfg.sparsegpt_damp, factor,
                                         None if fixed is None else torch.from_numpy(keep))
        keep = keep.numpy()
    else:
        if fixed is None:
            scores = importance if sal is None else np.where(sal, -np.inf, importance)
            keep = bulk_mask(scores, cfg.target, per_row=cfg.method != "magnitude")
        new_rest = torch.from_numpy(np.where(keep, rest, np.float32(0)))
    new = new_rest if sal is None else new_rest + torch.from_numpy(np.where(sal, w_np, 0.0))
    bias = None
    if cfg.variance_correction if correct is None else correct:
        new, bias = variance_correction(w, new, stats, cfg.match_mean, cfg.vc_gain)
    mask = LayerMask(keep, sal)
    record = {"out": w.shape[0], "in": w.shape[1],
              "kept_fraction": float(mask.union.mean()),
              "salient": int(sal.sum()) if sal is not None else 0}
    if stats is not None:
        record["relative_output_error"] = relative_output_error(w, new, bias, stats)
    return new, bias, mask, record


def relative_output_error(dense: torch.Tensor, pruned: torch.Tensor, bias: torch.Tensor | None,
                          stats: InputStats) -> float:
    """||W X - (W' X + b)||^2 / ||W X||^2 over the calibration tokens, from X^T X and sum x."""
    diff = (dense - pruned).to(torch.float64)
    error = stats.quadratic(diff)
    if bias is not None:
        b = bias.to(torch.float64)
        error = error - 2 * b @ (diff @ stats.total) + stats.count * (b @ b)
    return float(error / stats.quadratic(dense))


class _StopForward(Exception):
    """Raised by a hook once the inputs it records are in (the rest of the forward is moot)."""


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.float32)
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    return value


@torch.no_grad()
def capture_layer_inputs(model, calib: np.ndarray, batch_size: int) -> tuple[list, dict]:
    """Run the calibration windows up to the first decoder layer: (fp32 hidden batches, kwargs)."""
    batches, kwargs_seen = [], {}

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        batches.append(hidden.detach().to(torch.float32))
        kwargs_seen.update({k: _to_float32(v) for k, v in kwargs.items()
                            if k not in ("hidden_states", "cache", "past_key_values",
                                         "past_key_value", "use_cache")})
        raise _StopForward

    handle = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, len(calib), batch_size):
            try:
                model(torch.from_numpy(calib[start : start + batch_size]), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return batches, kwargs_seen


def _lift(layer) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """Lift a layer's parameters to fp32; returns (parameter, stored tensor) pairs.

    The stored tensors are kept so that :func:`_lower` writes the result back into them rather
    than allocating new ones: a folder's weights are memory-mapped copy-on-write, and writing into
    the mapping replaces each file page by a private one, where a new tensor would leave the
    file page resident beside it (two copies of every pruned layer in the peak RSS).
    """
    stored = []
    for param in layer.parameters():
        stored.append((param, param.data))
        param.data = param.data.to(torch.float32)
    return stored


def _lower(stored: list[tuple[torch.nn.Parameter, torch.Tensor]], write_back: bool = True
           ) -> None:
    """Write lifted parameters back into their stored tensors (rounding to the stored dtype);
    without ``write_back``, only drop the fp32 copies."""
    for param, original in stored:
        if param.data_ptr() != original.data_ptr():
            if write_back:
                original.copy_(param.data)
            param.data = original


def _run_layer(layer, batches: list, kwargs: dict) -> list:
    outputs = []
    for hidden in batches:
        out = layer(hidden, **kwargs)
        outputs.append(out[0] if isinstance(out, tuple) else out)
    return outputs


@torch.no_grad()
def prune_model(model, calib: np.ndarray | None, cfg: PruneConfig, batch_size: int = 4,
                progress: bool = True, sink: LayerSink | None = None,
                release: bool = False, fixed_masks: dict[str, LayerMask] | None = None
                ) -> PruneOutcome:
    """Prune every decoder-layer linear of ``model`` in place, layer by layer.

    With ``sink``, each layer is compressed as soon as its pruned outputs have been computed
    (the stored weight written back, as :func:`compress_model` does) and handed to ``sink``;
    its masks are then dropped, so memory does not grow with the model. Without, the masks are
    kept in the outcome for a later :func:`compress_model` (fine-tuning needs them all).
    ``release`` (with a sink, for runs that only want the written layers): a layer handed to the
    sink is not written back, its parameters return to their stored tensors (a folder's
    memory-mapped file pages, which the kernel may drop), so a pruned 13B model need not fit in
    memory; the model is left unusable for evaluation. ``fixed_masks`` (by module name, as
    :func:`compression.export.read_masks` returns them) are reused instead of chosen.
    """
    if release and sink is None:
        raise ValueError("release needs a sink: the pruned layers would be lost")
    if cfg.needs_calibration and calib is None:
        raise ValueError(f"method '{cfg.method}' with these corrections needs calibration text")
    outcome = PruneOutcome()
    layers = model.model.layers
    batches, kwargs = (capture_layer_inputs(model, calib, batch_size)
                       if cfg.needs_calibration else ([], {}))
    for index, layer in enumerate(tqdm(layers, desc=f"prune {cfg.method} {cfg.target}",
                                       disable=not progress, unit="layer")):
        stored_dtype = next(layer.parameters()).dtype
        stored = _lift(layer)
        masks = {}
        prune_group = _GroupPruner(layer, index, cfg, fixed_masks, masks, outcome.records)
        if cfg.propagate == "sequential" and cfg.needs_calibration:
            batches = _prune_layer_sequentially(layer, batches, kwargs, cfg, prune_group,
                                                check=index == 0)
        else:
            dense_outputs = [] if cfg.propagate == "dense" else None
            with cfg.observe_precision():
                stats = (_observe(layer, batches, kwargs, cfg.needs_gram, dense_outputs)
                         if cfg.needs_calibration else {})
            for norm_name, names in LINEAR_GROUPS:
                prune_group(norm_name, names, stats.get(names[0]))
            if cfg.needs_calibration:
                batches = (dense_outputs if dense_outputs is not None
                           else _run_layer(layer, batches, kwargs))
        if sink is None:
            outcome.masks.update(masks)
        else:
            sink(compress_layer(model, index, masks, cfg, stored_dtype))
        _lower(stored, write_back=not release)
        layer.to(stored_dtype)  # parameters added on the way (mean matching's biases)
    return outcome


@dataclass
class _GroupPruner:
    """Prunes the linears of one group (those fed by the same input) of a decoder layer in
    place, after equalizing them with their norm (if asked); masks and records are collected."""

    layer: torch.nn.Module
    index: int
    cfg: PruneConfig
    fixed_masks: dict[str, LayerMask] | None
    masks: dict[str, LayerMask]
    records: list[dict]

    def __call__(self, norm_name: str | None, names: tuple[str, ...],
                 group_stats: InputStats | None) -> None:
        cfg, layer = self.cfg, self.layer
        linears = [layer.get_submodule(n) for n in names]
        if cfg.equalize_alpha is not None and norm_name is not None:
            scales = equalization_scales([lin.weight for lin in linears], group_stats,
                                         cfg.equalize_alpha)
            equalize(layer.get_submodule(norm_name), linears, scales)
            group_stats.rescale(scales)
        factor = (hessian_factor(group_stats.gram, cfg.sparsegpt_damp)
                  if cfg.method == "sparsegpt" else None)
        for name, linear in zip(names, linears):
            full_name = f"model.layers.{self.index}.{name}"
            new, bias, mask, record = prune_weight(
                linear.weight, group_stats, cfg, factor,
                None if self.fixed_masks is None else self.fixed_masks[full_name],
                cfg.corrects(name))
            linear.weight.copy_(new)
            if bias is not None:
                linear.bias = torch.nn.Parameter(bias, requires_grad=False)
            self.masks[full_name] = mask
            self.records.append({"layer": self.index, "module": full_name, **record})


def _input_of(module: torch.nn.Module, call: Callable[[], object]) -> torch.Tensor:
    """What ``module`` receives when ``call()`` runs (the call stops there)."""
    seen = []

    def hook(mod, args):
        seen.append(args[0])
        raise _StopForward
    handle = module.register_forward_pre_hook(hook)
    try:
        call()
    except _StopForward:
        pass
    finally:
        handle.remove()
    return seen[0]


def _sublayer_inputs(layer, names: tuple[str, ...], batches: list, kwargs: dict,
                     after_attention: list | None = None) -> list:
    """Each batch's input to the linear ``names[0]``, computed with the layer's current weights:
    from the layer's own forward for the attention's linears, from its MLP (on the attention
    block's outputs ``after_attention``) for the MLP's."""
    module = layer.get_submodule(names[0])
    if names[0].startswith("self_attn."):
        return [_input_of(module, lambda x=x: layer(x, **kwargs)) for x in batches]
    norm = layer.post_attention_layernorm
    return [_input_of(module, lambda h=h: layer.mlp(norm(h))) for h in after_attention]


def _stats_of(inputs: list, features: int, gram_needed: bool) -> InputStats:
    stats = InputStats(features, gram_needed)
    for x in inputs:
        stats.add(x)
    return stats


def _prune_layer_sequentially(layer, batches: list, kwargs: dict, cfg: PruneConfig,
                              prune_group: _GroupPruner, check: bool = False) -> list:
    """Prune one LLaMa decoder layer group by group in one forward; returns its outputs (in
    the list ``batches``, whose inputs they replace).

    Each group of linears is observed on inputs computed with the groups before it already
    pruned (q/k/v on the input norm, o_proj on the attention of the pruned q/k/v, gate/up on
    the norm of the pruned attention block's output, down_proj on the pruned gate/up), pruned,
    and then computed once: every linear runs once per calibration batch (GPTQ's "true
    sequential" order). The residual sums are done here: ``check`` first verifies, on the first
    batch, that the layer computes h = x + o_proj(attn), out = h + down_proj(mlp inner).
    """
    if check:
        _check_llama_residuals(layer, batches[0], kwargs)
    (qkv_norm, qkv), (_, o_names), (mlp_norm, gate_up), (_, down_names) = LINEAR_GROUPS
    gram = cfg.needs_gram
    norm_in = [layer.get_submodule(qkv_norm)(x) for x in batches]
    prune_group(qkv_norm, qkv, _stats_of(norm_in, norm_in[0].shape[-1], gram))
    del norm_in
    attention = _sublayer_inputs(layer, o_names, batches, kwargs)
    o_proj = layer.get_submodule(o_names[0])
    prune_group(None, o_names, _stats_of(attention, o_proj.in_features, gram))
    hidden = batches  # replaced batch by batch: the layer's inputs are not needed any more
    for i, a in enumerate(attention):
        hidden[i] = hidden[i] + o_proj(a)
    del attention
    norm = layer.get_submodule(mlp_norm)
    prune_group(mlp_norm, gate_up, _stats_of((norm(h) for h in hidden), norm.weight.numel(),
                                             gram))
    inner = _sublayer_inputs(layer, down_names, batches, kwargs, hidden)
    down = layer.get_submodule(down_names[0])
    prune_group(None, down_names, _stats_of(inner, down.in_features, gram))
    for i, z in enumerate(inner):
        hidden[i] = hidden[i] + down(z)
        inner[i] = None  # the MLP's inner activations are the largest: free them as we go
    return hidden


def _check_llama_residuals(layer, x: torch.Tensor, kwargs: dict) -> None:
    """Refuse a decoder layer whose forward is not LLaMa's two residual blocks."""
    (_, o_names), (_, down_names) = LINEAR_GROUPS[1], LINEAR_GROUPS[3]
    hidden = x + layer.get_submodule(o_names[0])(_sublayer_inputs(layer, o_names, [x],
                                                                   kwargs)[0])
    inner = _sublayer_inputs(layer, down_names, [x], kwargs, [hidden])[0]
    staged = hidden + layer.get_submodule(down_names[0])(inner)
    out = layer(x, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    if not torch.allclose(staged, out, rtol=1e-4, atol=1e-4 * float(out.abs().max())):
        raise ValueError("propagate 'sequential' needs a LLaMa decoder layer (x + o_proj(attention)"
                         ", then h + down_proj(MLP)); this model's layers compute otherwise: use "
                         "--propagate pruned")


def _observe(layer, batches: list, kwargs: dict, gram_needed: bool = True,
             outputs: list | None = None) -> dict[str, InputStats]:
    """Input statistics of the first linear of each group over all calibration batches.

    The dense forward stops at the last group's input (down_proj's), unless ``outputs`` is
    given: then it runs to the end and the layer's outputs are appended to it.
    """
    stats, handles = {}, []
    last = LINEAR_GROUPS[-1][1][0]
    for _, names in LINEAR_GROUPS:
        module = layer.get_submodule(names[0])
        stats[names[0]] = InputStats(module.in_features, gram_needed)

        def observe(mod, args, s=stats[names[0]], stop=names[0] == last and outputs is None):
            s.add(args[0])
            if stop:
                raise _StopForward
        handles.append(module.register_forward_pre_hook(observe))
    try:
        for hidden in batches:
            try:
                out = layer(hidden, **kwargs)
            except _StopForward:
                continue
            if outputs is not None:
                outputs.append(out[0] if isinstance(out, tuple) else out)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _round(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to the value dtype (torch's vectorised fp16 conversion rounds to
    nearest even like numpy's, about ten times faster)."""
    if value_dtype(dtype) == np.float16:
        return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float16).numpy()
    return values.astype(value_dtype(dtype))


def compress_weight(weight: np.ndarray, mask: LayerMask, cfg: PruneConfig
                    ) -> tuple[SparseWeight | None, np.ndarray]:
    """Split ``weight`` into the bulk B (N:M, value dtype) and side-car S (``cfg.salient_dtype``,
    fp32 for an unstructured side-car).

    Returns (SparseWeight, or None for an unstructured bulk, and the dense B + S as stored).
    """
    sal = mask.salient
    bulk_values = weight if sal is None else np.where(sal, np.float32(0), weight)
    rounded = _round(np.where(mask.bulk, bulk_values, np.float32(0)), cfg.value_dtype)
    stored = torch.from_numpy(rounded).float().numpy() if rounded.dtype == np.float16 else \
        rounded.astype(np.float32)
    side = None
    if sal is not None:
        side_values = _round(np.where(sal, weight, np.float32(0)), cfg.salient_dtype)
        stored = stored + side_values.astype(np.float32)
        if cfg.target.structured:
            side = (CSRTensor.from_dense(side_values, sal) if cfg.salient.unstructured else
                    NMTensor.from_dense(side_values, sal, cfg.salient.pattern, encoding="index",
                                        tail="pad", dtype=cfg.salient_dtype))
    if not cfg.target.structured:
        return None, stored
    # Kept values and the dense tail are where rounded == bulk_values rounded: compress it as is.
    bulk = NMTensor.from_dense(rounded, mask.bulk, cfg.target.pattern, cfg.encoding,
                               tail="dense", dtype=cfg.value_dtype)
    return SparseWeight(bulk, side), stored


@torch.no_grad()
def compress_layer(model, index: int, masks: dict[str, LayerMask], cfg: PruneConfig,
                   stored_dtype: torch.dtype) -> CompressedLayer:
    """Compress one decoder layer's pruned linears and write the stored weight (B + S) back.

    The weight is first rounded to ``stored_dtype`` (the model's own dtype, where a fp32 layer
    is on its way back), so compressing during pruning stores what compressing afterwards did.
    """
    weights, biases = {}, {}
    for name, mask in masks.items():
        linear = model.get_submodule(name)
        weight = linear.weight.detach().to(stored_dtype).to(torch.float32).numpy()
        sparse, stored = compress_weight(weight, mask, cfg)
        linear.weight.copy_(torch.from_numpy(stored).to(stored_dtype))
        if sparse is not None:
            weights[name] = sparse
        if linear.bias is not None:
            biases[name] = linear.bias.detach().to(stored_dtype).to(torch.float32).numpy()
    gains = {}
    if cfg.equalize_alpha is not None:
        for norm_name, _ in LINEAR_GROUPS:
            if norm_name is not None:
                name = f"model.layers.{index}.{norm_name}"
                gains[name] = model.get_submodule(name).weight.detach().to(stored_dtype).to(
                    torch.float32).numpy()
    return CompressedLayer(index, weights, masks, biases, gains)


def compress_pruned(model, outcome: PruneOutcome, cfg: PruneConfig, sink: LayerSink) -> None:
    """Compress the masks an outcome kept (after fine-tuning), one decoder layer at a time."""
    by_layer: dict[int, dict[str, LayerMask]] = {}
    for name, mask in outcome.masks.items():
        by_layer.setdefault(int(name.split(".")[2]), {})[name] = mask
    for index, masks in sorted(by_layer.items()):
        dtype = model.get_submodule(next(iter(masks))).weight.dtype
        sink(compress_layer(model, index, masks, cfg, dtype))


def compress_model(model, outcome: PruneOutcome, cfg: PruneConfig) -> dict[str, SparseWeight]:
    """Every compressed linear by name (the stored weights written back into the model)."""
    compressed = {}
    compress_pruned(model, outcome, cfg, lambda layer: compressed.update(layer.weights))
    return compressed
