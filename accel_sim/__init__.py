"""Cycle-approximate N:M sparse tensor-core simulator and area model.

Modules: :mod:`.config` (hardware description, presets), :mod:`.mapping` (tiles, waves, per-step
work), :mod:`.pipeline` (simpy DMA/decoder/select/MAC/write-back), :mod:`.simulate` (GEMM and
workload results), :mod:`.decoders` (metadata decoder models), :mod:`.functional` (decoded
matmul), :mod:`.area` (component area model), :mod:`.workload_io` (prune-folder masks),
:mod:`.bench` (reference figures). See docs/accel_sim.md.
"""
