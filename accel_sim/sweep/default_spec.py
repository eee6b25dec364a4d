"""The embedded default sweep (what `nmsim sweep` runs with no arguments).

It asks the method's question - what accuracy does each N:M design buy per mm2, per watt and per
second - on the flexible-nm grid (A100-like: 108 cores of 16x8x8 fp16 MACs, 2039 GB/s HBM2e):

* fixed 2:4 and fixed 8:16 datapaths, each with and without 128 salient lanes per core running a
  structured 16:256 side-car (the lanes a 16:256 list needs at 8:16: 2048 dense-equivalent MACs
  per cycle / 16), and a flexible 2:4/4:8/8:16/16:32 datapath running 2:4 and 8:16;
* every metadata encoding and decoder of the registries (``metadata: all``): index (direct),
  bitmask (prefix popcount), rank (pipelined compare-subtract, ROM where C(M,N) fits one, serial
  compare-subtract), rle (Kogge-Stone prefix sum);
* 1, 2 or 8 decoders per core, so that the decoders bind on some designs;
* sorted (M-N+1):1 operand muxes throughout (the preset's; reports/area compares mux styles).

Workloads: SmolLM2-135M, the model whose perplexity the compression report measured on the whole
WikiText-2 test split (joined per pattern and side-car), and LLaMa-2 7B/13B shapes (hardware
figures only: their perplexity is n/a, no checkpoint is reachable here); prefill of 2048 tokens
and decode of 16 sequences at KV length 2048. Every point also runs its dense twin.
"""

from pathlib import Path

# The accuracy the default sweep joins: the committed whole-split compression report, found from
# the package (not the current folder), so `nmsim sweep` joins it from anywhere.
DEFAULT_ACCURACY_REPORT = Path(__file__).resolve().parents[2] / "reports" / "compression" \
    / "smollm2-135m.csv"

DEFAULT_SPEC_YAML = """\
name: default
hardware: flexible-nm
workloads: [llama2-7b, llama2-13b, smollm2-135m]
phases:
  prefill: {seq: 2048, batch: 1}
  decode: {batch: 16, kv_len: 2048}
axes:
  nm:
    - {pattern: 2:4, supported_patterns: [2:4], salient_lanes: 0}
    - {pattern: 2:4, supported_patterns: [2:4], salient_lanes: 128, salient: 16:256}
    - {pattern: 8:16, supported_patterns: [8:16], salient_lanes: 0}
    - {pattern: 8:16, supported_patterns: [8:16], salient_lanes: 128, salient: 16:256}
    - {pattern: 2:4, supported_patterns: [2:4, 4:8, 8:16, 16:32], salient_lanes: 0}
    - {pattern: 8:16, supported_patterns: [2:4, 4:8, 8:16, 16:32], salient_lanes: 0}
  metadata: all
  num_decoders: [1, 2, 8]
# A rank ROM cannot hold 16:32 (C(32,16) entries), so the flexible datapath has no ROM variant.
skip_invalid: true
baseline: {pattern: dense, supported_patterns: [], encoding: index, decoder: auto,
           mux_style: sorted, num_decoders: 0, salient_lanes: 0}
"""
