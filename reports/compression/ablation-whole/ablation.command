PYTHONPATH=. python -m compression.ablation run --out reports/compression/ablation-whole --eval-windows 595 --threads 2 --only "8:16 full (SparseGPT" dense   # 2026-12-03 17:11-18:10 UTC: the dense model and its fine-tune control
PYTHONPATH=. python -m compression.ablation run --out reports/compression/ablation-whole --eval-windows 595 --threads 2 --only "8:16 full, no FT"   # 18:11 UTC on
PYTHONPATH=. python -m compression.ablation report --out reports/compression/ablation-whole --eval-windows 595
