#!/usr/bin/env bash
# Rebuild the bundled beach model (colorize_cli/weights/beach.safetensors) from the shared
# beach photos, exactly as it was made. Run from the repository root: ./setup.sh examples/make_bundled_model.sh
# Arguments: PHOTOS (default ../shared/data/beach-photos), L1 weight (default 25), epochs (default 8).
set -euo pipefail
photos=${1:-../shared/data/beach-photos}
l1=${2:-25}
epochs=${3:-8}
work=${WORK:-bundle-work}

colorize prep "$photos" "$work/data" --size 256
colorize train "$work/data" --size 256 --width 16 --epochs "$epochs" --batch-size 16 \
    --l1-weight "$l1" --out "$work/run"
# Keep only the generator of the best epoch (the file also holds D and optimizer state).
python - "$work/run/best.safetensors" colorize_cli/weights/beach.safetensors <<'PY'
import sys
from colorize_cli.checkpoint import load_checkpoint, save_checkpoint
tensors, cfg, extra = load_checkpoint(sys.argv[1])
gen = {k: v for k, v in tensors.items() if k.startswith("generator.")}
save_checkpoint(sys.argv[2], gen, cfg, {"epoch": extra["epoch"], "train_config": extra["train_config"]})
print(f"wrote {sys.argv[2]}: generator of epoch {extra['epoch']}, {sum(v.numel() for v in gen.values())} parameters")
PY
colorize evaluate "$work/data/test"
