"""Model architectures and the GEMMs of one forward pass, per phase.

Shapes follow the Hugging Face ``LlamaForCausalLM`` module layout: per decoder layer seven weight
GEMMs (``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``) and two activation-activation
GEMMs (attention scores ``Q K^T`` and context ``P V``), plus the ``lm_head`` once per pass.

A :class:`GEMM` computes ``Y[m, n] = X[m, k] @ W[n, k]^T``: the weight is ``[n_out = n, k]`` (the
N:M blocks run along k) and ``m`` is the number of tokens (batch x seq). ``count`` is how many
times the GEMM runs in one forward pass of the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("prefill", "decode")

# The linears of a LLaMa decoder layer in forward order, grouped by shared input, with the
# RMSNorm that feeds each group (None: the input is the previous linear's output). The one list
# of them: pruning walks these groups, the random test model writes them, GEMMs follow them.
LINEAR_GROUPS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    (None, ("self_attn.o_proj",)),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    (None, ("mlp.down_proj",)),
)
LAYER_WEIGHTS = tuple(name for _, names in LINEAR_GROUPS for name in names)


@dataclass(frozen=True)
class ModelArch:
    """A LLaMa-family decoder-only transformer (grouped-query attention when kv_heads < heads)."""

    name: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    layers: int
    vocab: int
    source: str
    # Width of one attention head when a config sets it apart from hidden / heads (Mistral-Nemo:
    # 5120 hidden, 32 heads of 128); None: hidden // heads.
    explicit_head_dim: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("hidden", "intermediate", "heads", "kv_heads", "layers", "vocab"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"{self.name}: {field_name} must be positive")
        if self.explicit_head_dim is not None and self.explicit_head_dim <= 0:
            raise ValueError(f"{self.name}: head_dim must be positive")
        if (self.explicit_head_dim is None and self.hidden % self.heads) \
                or self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: hidden must divide by heads and heads by kv_heads")

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden // self.heads

    def weight_shape(self, weight_name: str) -> tuple[int, int]:
        """``(n_out, k)`` of a per-layer weight (or ``lm_head``)."""
        kv = self.kv_heads * self.head_dim
        q = self.heads * self.head_dim
        shapes = {
            "self_attn.q_proj": (q, self.hidden),
            "self_attn.k_proj": (kv, self.hidden),
            "self_attn.v_proj": (kv, self.hidden),
            "self_attn.o_proj": (self.hidden, q),
            "mlp.gate_proj": (self.intermediate, self.hidden),
            "mlp.up_proj": (self.intermediate, self.hidden),
            "mlp.down_proj": (self.hidden, self.intermediate),
            "lm_head": (self.vocab, self.hidden),
        }
        if weight_name not in shapes:
            raise ValueError(f"unknown weight '{weight_name}': choose one of {', '.join(shapes)}")
        return shapes[weight_name]

    @property
    def parameters(self) -> int:
        """Weight parameters of the linear layers plus embeddings (norms excluded)."""
        per_layer = sum(n * k for n, k in map(self.weight_shape, LAYER_WEIGHTS))
        return self.layers * per_layer + 2 * self.vocab * self.hidden


# Values are the config.json of each checkpoint on the Hugging Face hub (hidden_size,
# intermediate_size, num_attention_heads, num_key_value_heads, num_hidden_layers, vocab_size).
ARCHITECTURES: dict[str, ModelArch] = {
    arch.name: arch
    for arch in (
        ModelArch("llama2-7b", 4096, 11008, 32, 32, 32, 32000,
                  "meta-llama/Llama-2-7b-hf config.json (Touvron et al. 2023, Table 1)"),
        ModelArch("llama2-13b", 5120, 13824, 40, 40, 40, 32000,
                  "meta-llama/Llama-2-13b-hf config.json (Touvron et al. 2023, Table 1)"),
        ModelArch("llama2-70b", 8192, 28672, 64, 8, 80, 32000,
                  "meta-llama/Llama-2-70b-hf config.json (GQA with 8 KV heads)"),
        ModelArch("llama3-8b", 4096, 14336, 32, 8, 32, 128256,
                  "meta-llama/Meta-Llama-3-8B config.json (Llama 3.1 8B has the same shapes)"),
        ModelArch("smollm2-135m", 576, 1536, 9, 3, 30, 49152,
                  "HuggingFaceTB/SmolLM2-135M(-Instruct) config.json"),
    )
}


def get_arch(name: str | ModelArch) -> ModelArch:
    """A built-in architecture by name, or one read from a Hugging Face ``config.json`` path."""
    if isinstance(name, ModelArch):
        return name
    if isinstance(name, str) and name.endswith(".json"):
        from workloads.hf_config import load_hf_config

        return load_hf_config(name)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown workload '{name}': choose one of {', '.join(ARCHITECTURES)} "
                         "or a Hugging Face config.json path")
    return ARCHITECTURES[name]


@dataclass(frozen=True)
class GEMM:
    """``Y[m, n] = X[m, k] @ W[n, k]^T``, run ``count`` times per forward pass.

    ``weight_name`` names the weight (``"self_attn.q_proj"``, or a full module name such as
    ``"model.layers.3.self_attn.q_proj"`` for per-layer lists); None for activation-activation
    GEMMs (attention), which the hardware runs dense. ``group`` runs are independent of each
    other and may execute concurrently (the heads of one layer); ``count`` is a multiple of it.
    """

    name: str
    m: int
    n: int
    k: int
    count: int = 1
    weight_name: str | None = None
    group: int = 1

    def __post_init__(self) -> None:
        for field_name in ("m", "n", "k", "count", "group"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GEMM '{self.name}': {field_name} must be a positive integer, "
                                 f"got {value!r}")
        if self.count % self.group:
            raise ValueError(f"GEMM '{self.name}': count {self.count} is not a multiple of "
                             f"group {self.group}")

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates of one run."""
        return self.m * self.n * self.k

    @property
    def flops(self) -> int:
        """Dense-equivalent FLOPs of all runs (2 per MAC)."""
        return 2 * self.macs * self.count


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def gemms(arch: str | ModelArch, phase: str, seq: int = 2048, batch: int = 1,
          kv_len: int | None = None, layers: int | None = None, lm_head: bool = True,
          per_layer: bool = False) -> list[GEMM]:
    """The GEMMs of one forward pass.

    ``prefill``: ``batch`` sequences of ``seq`` tokens (causal attention is counted as the full
    ``seq x seq`` product, what a dense kernel computes). ``decode``: one new token for each of
    ``batch`` sequences attending to ``kv_len`` cached positions (default ``seq``).
    ``layers`` limits the decoder layers counted (default: all); ``lm_head`` adds the output
    projection. ``per_layer`` lists every layer's weight GEMMs separately (count 1, full module
    names ``model.layers.{i}.<weight>``) so that each can be fed its own mask.
    With grouped-query attention the query heads that share a KV head form one GEMM (m grows by
    the group size), so K and V are read once per group.
    """
    a = get_arch(arch)
    if phase not in PHASES:
        raise ValueError(f"unknown phase '{phase}': choose one of {', '.join(PHASES)}")
    _positive("seq", seq)
    _positive("batch", batch)
    n_layers = a.layers if layers is None else _positive("layers", layers)
    if n_layers > a.layers:
        raise ValueError(f"layers={n_layers} exceeds {a.name}'s {a.layers} layers")
    if phase == "prefill":
        tokens_per_seq, context = seq, seq
    else:
        tokens_per_seq, context = 1, _positive("kv_len", seq if kv_len is None else kv_len)
    tokens = batch * tokens_per_seq
    group = a.heads // a.kv_heads
    out: list[GEMM] = []
    layer_ids = range(n_layers) if per_layer else [None]
    count = 1 if per_layer else n_layers
    for layer in layer_ids:
        prefix = "" if layer is None else f"model.layers.{layer}."
        tag = "" if layer is None else f"layers.{layer}."
        for weight in LAYER_WEIGHTS:
            n_out, k = a.weight_shape(weight)
            out.append(GEMM(f"{tag}{weight.split('.')[-1]}", tokens, n_out, k, count,
                            prefix + weight))
        heads = batch * a.kv_heads  # independent (sequence, KV head) products of one layer
        out.append(GEMM(f"{tag}attn_scores", group * tokens_per_seq, context, a.head_dim,
                        count * heads, None, heads))
        out.append(GEMM(f"{tag}attn_context", group * tokens_per_seq, a.head_dim, context,
                        count * heads, None, heads))
    if lm_head:
        n_out, k = a.weight_shape("lm_head")
        out.append(GEMM("lm_head", tokens, n_out, k, 1, "lm_head"))
    return out


@dataclass(frozen=True)
class Elementwise:
    """A non-GEMM kernel of a forward pass (a norm, rotary embedding, softmax, KV-cache write,
    activation, residual add): ``bytes_moved`` read + written per run, ``count`` runs."""

    name: str
    bytes_moved: int
    count: int = 1


def elementwise_ops(arch: str | ModelArch, phase: str, seq: int = 2048, batch: int = 1,
                    kv_len: int | None = None, layers: int | None = None,
                    value_bytes: int = 2) -> list[Elementwise]:
    """The non-GEMM kernels of one forward pass, one kernel each, unfused (as eager PyTorch
    runs a HF ``LlamaDecoderLayer``): per layer two RMSNorms, rotary embedding of q and k, the
    KV-cache write, the attention softmax, SiLU(gate) x up and two residual adds; then the
    final norm and the sampling read of the logits. Bytes are the tensors read and written at
    ``value_bytes`` per value (norm weights and rotary tables included)."""
    a = get_arch(arch)
    gemm_list = gemms(a, phase, seq=seq, batch=batch, kv_len=kv_len, layers=layers,
                      lm_head=False)  # validates the arguments the same way
    n_layers = gemm_list[0].count
    tokens = gemm_list[0].m
    context = next(g.n for g in gemm_list if g.name == "attn_scores")
    queries = tokens * a.heads
    h, kv, inter, v = a.hidden, a.kv_heads * a.head_dim, a.intermediate, value_bytes
    per_layer = {
        "input_norm": (2 * tokens * h + h) * v,
        "rotary": (2 * tokens * (h + kv) + 2 * tokens * a.head_dim) * v,
        "kv_cache_write": 2 * tokens * 2 * kv * v,
        "softmax": 2 * queries * context * v,
        "attn_residual": 3 * tokens * h * v,
        "post_attention_norm": (2 * tokens * h + h) * v,
        "silu_mul": 3 * tokens * inter * v,
        "mlp_residual": 3 * tokens * h * v,
    }
    out = [Elementwise(name, nbytes, n_layers) for name, nbytes in per_layer.items()]
    out.append(Elementwise("final_norm", (2 * tokens * h + h) * v, 1))
    out.append(Elementwise("sampling", tokens * a.vocab * v, 1))
    return out
