"""`--workload PATH/config.json`: LLaMa-family shapes from a Hugging Face config, checked against
the model transformers builds from the same file; bad configs are one line naming file and field."""

import json

import pytest

from accel_sim.sweep.spec import SpecError, parse_spec, point_key
from nmsim.cli import main
from workloads.hf_config import load_hf_config
from workloads.models import LAYER_WEIGHTS, gemms

# Small hand-written configs with each family's structure (the keys their config.json uses).
CONFIGS = {
    "llama2": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
               "intermediate_size": 172, "num_attention_heads": 4, "num_key_value_heads": 4,
               "num_hidden_layers": 2, "vocab_size": 128, "rms_norm_eps": 1e-5,
               "tie_word_embeddings": False},
    "llama3-gqa": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 224,
                   "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 3,
                   "vocab_size": 256, "rope_theta": 500000.0, "tie_word_embeddings": False},
    "llama-mha-default": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 96,
                          "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 64},
    "mistral-head-dim": {"model_type": "mistral", "hidden_size": 96, "intermediate_size": 256,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                         "num_hidden_layers": 2, "vocab_size": 160, "sliding_window": 4096,
                         "tie_word_embeddings": False},
    "qwen2-tied": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 160,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                   "vocab_size": 192, "tie_word_embeddings": True, "use_sliding_window": False},
}


def write_config(folder, name, config):
    path = folder / name / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_shapes_match_the_model_transformers_builds(tmp_path, family):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = write_config(tmp_path, family, CONFIGS[family])
    arch = load_hf_config(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path.parent))
    layer = model.model.layers[0]
    for name in LAYER_WEIGHTS:
        assert tuple(layer.get_submodule(name).weight.shape) == arch.weight_shape(name), name
    assert tuple(model.lm_head.weight.shape) == arch.weight_shape("lm_head")
    # Independent count: every weight matrix of the built model (norms and biases aside); a
    # tied lm_head shares the embedding's parameters, which transformers lists once.
    counted = sum(p.numel() for n, p in model.named_parameters()
                  if "norm" not in n and not n.endswith(".bias"))
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    assert arch.parameters - (arch.vocab * arch.hidden if tied else 0) == counted
    assert arch.layers == len(model.model.layers)


def test_gqa_attention_gemms_follow_the_kv_heads(tmp_path):
    arch = load_hf_config(write_config(tmp_path, "g", CONFIGS["llama3-gqa"]))
    scores = next(g for g in gemms(arch, "decode", batch=3, kv_len=40) if g.name == "attn_scores")
    # 8 query heads share 2 KV heads: each (sequence, KV head) product carries 4 query rows.
    assert (scores.m, scores.n, scores.k, scores.count) == (4, 40, 8, 3 * 3 * 2)


def test_simulate_runs_a_config_json(tmp_path, capsys):
    path = write_config(tmp_path, "Mistral-tiny", CONFIGS["mistral-head-dim"])
    assert main(["simulate", "--json", "--workload", str(path), "--phase", "prefill",
                 "--seq", "32"]) == 0
    record = json.loads(capsys.readouterr().out)
    expected = {g.name: (g.m, g.n, g.k, g.count)
                for g in gemms(load_hf_config(path), "prefill", seq=32)}
    assert {g["name"]: (g["m"], g["n"], g["k"], g["count"]) for g in record["gemms"]} == expected
    assert record["workload"] == str(path)


@pytest.mark.parametrize("change, field", [
    ({"model_type": "gpt2"}, "model_type"),
    ({"model_type": "mixtral"}, "model_type"),
    ({"intermediate_size": None}, "intermediate_size"),
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"vocab_size": "many"}, "vocab_size"),
])
def test_bad_config_is_one_line_naming_file_and_field(tmp_path, capsys, change, field):
    config = {**CONFIGS["llama2"], **change}
    config = {k: v for k, v in config.items() if v is not None}
    path = write_config(tmp_path, "bad", config)
    assert main(["simulate", "--workload", str(path), "--layers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and field in err[0]


def test_not_json_and_missing_file_are_refused(tmp_path, capsys):
    broken = tmp_path / "config.json"
    broken.write_text("{not json")
    for path in (broken, tmp_path / "absent" / "config.json"):
        assert main(["simulate", "--workload", str(path)]) == 2
        assert str(path) in capsys.readouterr().err


def test_sweep_spec_takes_a_config_json(tmp_path):
    path = write_config(tmp_path, "Qwen2-tiny", CONFIGS["qwen2-tied"])
    spec_text = (f"hardware: flexible-nm\nworkloads: [smollm2-135m, {path}]\n"
                 "phases: {decode: {batch: 1, kv_len: 16}}\naxes: {pattern: [2:4]}\n")
    points = parse_spec(spec_text).points()
    mine = [p for p in points if p["workload"] == str(path)]
    assert len(mine) == 1 and "workload" in mine[0]["inputs"]
    before = point_key(mine[0])
    path.write_text(json.dumps({**CONFIGS["qwen2-tied"], "num_hidden_layers": 3}))
    again = [p for p in parse_spec(spec_text).points() if p["workload"] == str(path)]
    assert point_key(again[0]) != before  # contents, not names, key the stored result


def test_sweep_spec_names_the_bad_field(tmp_path):
    path = write_config(tmp_path, "bad", {**CONFIGS["llama2"], "model_type": "gpt2"})
    with pytest.raises(SpecError) as err:
        parse_spec(f"hardware: flexible-nm\nworkloads: [{path}]\nphases: {{decode: {{}}}}\n"
                   "axes: {pattern: [2:4]}\n")
    assert "workloads[0]" in str(err.value) and str(path) in str(err.value) \
        and "model_type" in str(err.value)
