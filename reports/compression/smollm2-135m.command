PYTHONPATH=. python -m compression.experiment --calib-samples 128 --threads 1 --finetune-steps 50
