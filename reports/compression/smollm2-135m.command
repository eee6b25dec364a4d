PYTHONPATH=. python -m compression.experiment --eval-windows 6 --calib-samples 4 --threads 1
