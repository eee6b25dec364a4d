"""The embedded default sweep (what `nmsim sweep` runs with no arguments).

80 N:M designs on the flexible-nm grid (A100-like: 108 cores of 16x8x8 fp16 MACs, 2039 GB/s):
fixed 2:4, fixed 8:16, and a flexible 2:4/4:8/8:16/16:32 datapath running each of its patterns;
each with index, bitmask or rank metadata (pipelined compare-subtract decoder, or a ROM where
C(M,N) fits one), full M:1 or sorted (M-N+1):1 operand muxes, and 8 or 32 decoders per core;
no salient lanes (nothing in a uniform sweep would use them; sweep them with real masks).
Workloads: LLaMa-2-7B and 13B, prefill of 2048 tokens and decode of 16 sequences at KV length
2048, plus SmolLM2-135M (the model the compression report measured) for the accuracy join.
Every point also runs its dense twin (the same grid without sparse support) for speedups.
"""

DEFAULT_SPEC_YAML = """\
name: default
hardware: flexible-nm
workloads: [llama2-7b, llama2-13b, smollm2-135m]
phases:
  prefill: {seq: 2048, batch: 1}
  decode: {batch: 16, kv_len: 2048}
axes:
  nm:
    - {pattern: 2:4, supported_patterns: [2:4]}
    - {pattern: 8:16, supported_patterns: [8:16]}
    - {pattern: 2:4, supported_patterns: [2:4, 4:8, 8:16, 16:32]}
    - {pattern: 4:8, supported_patterns: [2:4, 4:8, 8:16, 16:32]}
    - {pattern: 8:16, supported_patterns: [2:4, 4:8, 8:16, 16:32]}
    - {pattern: 16:32, supported_patterns: [2:4, 4:8, 8:16, 16:32]}
  metadata:
    - {encoding: index, decoder: direct}
    - {encoding: bitmask, decoder: popcount}
    - {encoding: rank, decoder: rank_pipeline}
    - {encoding: rank, decoder: rank_rom}
  mux_style: [full, sorted]
  num_decoders: [8, 32]
  # No salient side-car runs in a uniform sweep: its lanes would be idle area here.
  salient_lanes: [0]
# A rank ROM cannot hold 16:32 (C(32,16) entries): those combinations are dropped.
skip_invalid: true
baseline: {pattern: dense, supported_patterns: [], encoding: index, decoder: auto,
           mux_style: full, num_decoders: 0, salient_lanes: 0}
compression: [reports/compression/screen/smollm2-135m.csv]
"""
