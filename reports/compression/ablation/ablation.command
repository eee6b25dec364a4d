PYTHONPATH=. nice -n 19 python -m compression.ablation run --worker I/2 --threads 1   # I = 0, 1 (two processes)
PYTHONPATH=. python -m compression.ablation report
