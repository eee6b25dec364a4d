PYTHONPATH=. python -m compression.experiment --out reports/compression/screen --eval-windows 6 --calib-samples 4 --threads 1 --finetune-steps 50
