"""Sweep axes derived from the registries: `metadata: all` and `encoding: all`."""

import textwrap

from accel_sim.decoders import DECODER_MODELS
from accel_sim.sweep.spec import parse_spec
from compression.formats import ENCODING_REGISTRY

SPEC = textwrap.dedent("""\
    name: registry
    hardware: a100-like
    workloads: [smollm2-135m]
    phases:
      decode: {batch: 1, kv_len: 64}
    axes:
      pattern: [2:4]
      {axis}: all
    skip_invalid: true
    """)


def test_metadata_all_is_every_registered_encoding_decoder_pair():
    spec = parse_spec(SPEC.replace("{axis}", "metadata"))
    pairs = {(v["encoding"], v["decoder"]) for v in spec.axes["metadata"]}
    assert pairs == {(model.encoding, kind) for kind, model in DECODER_MODELS.items()}
    # every pair is a valid design at 2:4 (nothing skipped): each decoder reads its encoding
    assert not spec.skipped


def test_encoding_all_is_every_registered_encoding():
    # the preset names a decoder (direct): "auto" lets each encoding take its own
    spec = parse_spec(SPEC.replace("{axis}: all", "encoding: all\n  decoder: [auto]"))
    assert set(spec.axes["encoding"]) == set(ENCODING_REGISTRY)
