#!/usr/bin/env bash
# The GPU checks of the project, in one short script (run on a machine with an NVIDIA GPU):
# sync-free MoT / MoE forward+backward under torch.cuda.set_sync_debug_mode("error"), the model
# tests on CUDA, and step time / memory / MFU ratios to dense in bf16 at d_model 512, 8 layers, seq 1024.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src:.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'grouped_mm', hasattr(torch, '_grouped_mm'))"
python3 -m pytest -q -p no:cacheprovider tests/models/test_sync_free.py tests/models/test_moe.py tests/models/test_transformer.py -k "cuda or top1 or expert or reference" 2>&1 | grep -E "passed|failed|Error|error|^E " | head -30
python3 benchmarks/step_time.py --device cuda --precision bf16 --sizes d512 --batch 16 --steps 20 --repeats 2 --threads 8
python3 benchmarks/step_time.py --device cuda --precision bf16 --sizes d512 --batch 64 --steps 10 --repeats 1 --threads 8 --archs dense mot
