"""workloads.models: architectures against published parameter counts, GEMM lists against
closed-form FLOP counts."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.models import ARCHITECTURES, GEMM, LAYER_WEIGHTS, gemms

# Published totals (Hugging Face model cards / safetensors index totals), including the RMSNorm
# weights (2 per layer + 1 final, `hidden` each); SmolLM2 ties its input and output embeddings.
PUBLISHED_PARAMETERS = {
    "llama2-7b": (6_738_415_616, False),
    "llama2-13b": (13_015_864_320, False),
    "llama2-70b": (68_976_648_192, False),
    "llama3-8b": (8_030_261_248, False),  # Meta-Llama-3-8B safetensors index total
    "smollm2-135m": (134_515_008, True),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_architectures_reproduce_published_parameter_counts(name):
    arch = ARCHITECTURES[name]
    published, tied = PUBLISHED_PARAMETERS[name]
    norms = (2 * arch.layers + 1) * arch.hidden
    total = arch.parameters + norms - (arch.vocab * arch.hidden if tied else 0)
    assert total == published


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(ARCHITECTURES)), seq=st.integers(1, 4096),
       batch=st.integers(1, 8))
def test_prefill_flops_match_the_closed_form(name, seq, batch):
    arch = ARCHITECTURES[name]
    gs = gemms(name, "prefill", seq=seq, batch=batch)
    tokens = batch * seq
    linear = sum(g.flops for g in gs if g.weight_name and g.weight_name != "lm_head")
    per_layer_weights = sum(n * k for n, k in map(arch.weight_shape, LAYER_WEIGHTS))
    assert linear == 2 * tokens * arch.layers * per_layer_weights
    attention = sum(g.flops for g in gs if g.weight_name is None)
    # scores and context: 2 x (2 * seq * seq * hidden) FLOPs per layer and sequence.
    assert attention == arch.layers * batch * 4 * seq * seq * arch.hidden
    head = [g for g in gs if g.weight_name == "lm_head"]
    assert head[0].flops == 2 * tokens * arch.vocab * arch.hidden


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(ARCHITECTURES)), kv=st.integers(1, 8192),
       batch=st.integers(1, 64))
def test_decode_gemms_have_one_token_per_sequence(name, kv, batch):
    arch = ARCHITECTURES[name]
    gs = gemms(name, "decode", batch=batch, kv_len=kv)
    for g in gs:
        if g.weight_name:
            assert g.m == batch
    scores = next(g for g in gs if g.name == "attn_scores")
    assert (scores.m, scores.n, scores.k) == (arch.heads // arch.kv_heads, kv, arch.head_dim)
    assert scores.count == arch.layers * batch * arch.kv_heads


def test_per_layer_list_names_every_module_and_matches_the_aggregate():
    per_layer = gemms("smollm2-135m", "prefill", seq=16, per_layer=True, lm_head=False)
    aggregate = gemms("smollm2-135m", "prefill", seq=16, lm_head=False)
    names = {g.weight_name for g in per_layer if g.weight_name}
    assert "model.layers.29.mlp.down_proj" in names and len(names) == 30 * 7
    assert sum(g.flops for g in per_layer) == sum(g.flops for g in aggregate)


@pytest.mark.parametrize("kwargs, field", [
    ({"seq": 0}, "seq"), ({"batch": -1}, "batch"), ({"layers": 0}, "layers"),
    ({"phase": "train"}, "phase"), ({"arch": "gpt-5"}, "workload")])
def test_bad_workload_arguments_name_the_field(kwargs, field):
    args = {"arch": "llama2-7b", "phase": "prefill", **kwargs}
    with pytest.raises(ValueError, match=field):
        gemms(args.pop("arch"), args.pop("phase"), **args)


def test_gemm_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="k must be"):
        GEMM("x", 1, 2, 0)
