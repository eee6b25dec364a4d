PYTHONPATH=. python -m compression.ablation run --out reports/compression/ablation-whole --eval-windows 595 --threads 2 --only "8:16 full (SparseGPT" dense   # 2026-12-03 17:11-18:10 UTC: the dense model and its fine-tune control
PYTHONPATH=. python -m compression.ablation run --out reports/compression/ablation-whole --eval-windows 595 --threads 2 --only "8:16 full, no FT"   # 18:11 UTC on
PYTHONPATH=. python -m compression.ablation report --out reports/compression/ablation-whole --eval-windows 595
# 2026-12-03 19:37 UTC on (session 5): rows run in this order, one at a time, exact labels
# (a driver calling compression.ablation.main with runs() filtered to the list; --only matches
# substrings, so "8:16 full, no EQ" would also start its fine-tuned run):
#   8:16 SparseGPT | 8:16 full, no EQ | 8:16 full, no VC | 8:16 full, no side-car |
#   8:16 full, Wanda for SparseGPT | 8:16 Wanda | 9:16 SparseGPT (iso-count) | 8:16 SparseGPT +side-car 16:256
# equivalent per row: PYTHONPATH=. python -m compression.ablation run --out reports/compression/ablation-whole --eval-windows 595 --threads 2 --only "<label>"
# 2026-12-03 22:13 UTC on (session 6): same driver, in this order:
#   8:16 full (SparseGPT +EQ +VC +side-car 16:256 +FT50) | 2:4 full (SparseGPT +EQ +VC +side-car 16:256 +FT50) |
#   2:4 full, no side-car | 2:4 full, no EQ | 2:4 full, no VC | 2:4 full, Wanda for SparseGPT |
#   8:16 Wanda | 8:16 Wanda, sequential propagation | 9:16 SparseGPT (iso-count) | 8:16 SparseGPT +side-car 16:256
# 2026-12-04 03:24 UTC on (session 7): same driver, in this order:
#   11:16 SparseGPT (iso-bits, fp32 side-car) | 10:16 SparseGPT (iso-bits, fp16 side-car) |
#   8:16 SparseGPT +side-car 16:256 fp16 | 8:16 full, no FT, side-car fp16 | 8:16 full, no FT, VC least-squares |
#   8:16 full, no FT, VC mean+var | 8:16 full, no FT, VC output projections only | 8:16 Wanda +VC |
#   8:16 Wanda +VC least-squares | 8:16 SparseGPT, sequential propagation | 8:16 full, no EQ +FT50 |
#   8:16 full, no VC +FT50 | 8:16 full, no side-car +FT50 | 8:16 full, Wanda for SparseGPT +FT50
# the driver above is now `run --label LABEL ...` (exact labels, run in the order given), e.g.
# PYTHONPATH=. python -m compression.ablation run --out reports/compression/ablation-whole --eval-windows 595 --threads 2 --label "2:4 SparseGPT" "10:16 SparseGPT (iso-bits, fp16 side-car)"
