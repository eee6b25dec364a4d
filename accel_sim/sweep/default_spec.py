"""The embedded default sweep (what `nmsim sweep` runs with no arguments)."""

DEFAULT_SPEC_YAML = """\
name: default
hardware: flexible-nm
workloads: [llama2-7b, llama2-13b]
phases:
  prefill: {seq: 2048, batch: 1}
  decode: {batch: 16, kv_len: 2048}
axes:
  pattern: [2:4, 4:8, 8:16, 16:32]
"""
