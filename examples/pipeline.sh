#!/usr/bin/env bash
# The whole colorize pipeline as a user runs it, at a small scale (a few minutes on a laptop CPU):
#
#   photos (your folder, or `colorize crawl --engine urls` on your list of URLs)
#     -> colorize prep      aligned color|gray pairs, split into train/ and test/
#     -> colorize train     a small pix2pix model (RUN/best.safetensors)
#     -> colorize infer     the held-out test photos, colorized at full resolution
#     -> colorize evaluate  scores next to the gray baseline
#
# Usage (from the repository root; setup.sh puts the project's .venv on PATH):
#   ./setup.sh examples/pipeline.sh PHOTOS_DIR   # your own color photos: nothing is downloaded
#   ./setup.sh examples/pipeline.sh URLS.txt     # download the images listed, one URL a line
#
# Offline by default: with a folder nothing touches the network; with a URLs file only those
# URLs are fetched (`--engine urls`), never a search engine. To crawl a search engine instead,
# run e.g. `colorize crawl "beach" --engine bing --num 200` yourself and pass its folder here.
#
# Settings (environment variables): WORK (output folder, default pipeline-work), SIZE (training
# size in px, default 64), WIDTH (first-layer channels, default 16), EPOCHS (default 5), NUM
# (photos to download from URLS.txt, default 100). The real recipe is --size 256, --width 64 or
# 32 and 100+ epochs on a GPU; these defaults only show that every stage fits together.
# Re-running is safe: prep keeps the pairs already made, an existing run is reused, and infer
# replaces only its own outputs in WORK.
set -euo pipefail

if [ $# -ne 1 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
SOURCE=$1
WORK=${WORK:-pipeline-work}
SIZE=${SIZE:-64}
WIDTH=${WIDTH:-16}
EPOCHS=${EPOCHS:-5}
NUM=${NUM:-100}

# 1. Photos. A folder is used as is; a file is a list of URLs for `crawl --engine urls`, which
#    keeps only usable color photos (decodable, at least --min-size px, not grayscale, no
#    duplicates) in WORK/raw/my-photos/, with WORK/raw/my-photos/manifest.csv saying why each URL
#    was kept or not. Re-running tops the folder up to NUM.
if [ -d "$SOURCE" ]; then
  PHOTOS=$SOURCE
elif [ -f "$SOURCE" ]; then
  colorize crawl "my photos" --engine urls --urls "$SOURCE" --num "$NUM" --min-size "$SIZE" --out "$WORK/raw"
  PHOTOS=$WORK/raw/my-photos
else
  echo "pipeline.sh: $SOURCE is neither a folder of photos nor a file of URLs" >&2
  exit 2
fi

# 2. Pairs: every photo center-cropped to SIZE x SIZE, color left and gray right, 20% held out
#    in WORK/data/test (the same photos on every run, by the fixed seed).
colorize prep "$PHOTOS" "$WORK/data" --size "$SIZE"

# 3. Train: WORK/run gets best.safetensors (lowest test L1), metrics.csv, curves.png, samples/.
#    A run folder from an earlier pass is used as it is: delete it to train afresh, or go on
#    with `colorize train --resume WORK/run --epochs N` (also after Ctrl-C).
if [ -f "$WORK/run/best.safetensors" ]; then
  echo "pipeline.sh: using the existing run $WORK/run (delete it to train again)" >&2
else
  colorize train "$WORK/data" --out "$WORK/run" --epochs "$EPOCHS" --width "$WIDTH" --batch-size 8
fi

# 4. Colorize the held-out test photos (the originals, at their own size) with the new model.
#    prep.csv says which photos went to test; they are copied to WORK/test-photos.
python - "$WORK/data/prep.csv" "$WORK/test-photos" <<'EOF'
import csv, shutil, sys
from pathlib import Path

out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with open(sys.argv[1], newline="") as f:
    for row in csv.DictReader(f):
        if row["status"] == "kept" and row["split"] == "test" and Path(row["source"]).is_file():
            shutil.copy2(row["source"], out / Path(row["output"]).with_suffix(Path(row["source"]).suffix).name)
EOF
# A photo that cannot be read is skipped with its reason and infer exits 1; go on regardless.
colorize infer "$WORK/test-photos" "$WORK/colorized" --model "$WORK/run" --overwrite ||
  echo "pipeline.sh: some photos were skipped (reasons above)" >&2
colorize infer "$WORK/test-photos" "$WORK/compare" --model "$WORK/run" --overwrite --side-by-side ||
  echo "pipeline.sh: some photos were skipped (reasons above)" >&2

# 5. Scores: the full-resolution outputs against the originals, and the test pairs at SIZE px
#    straight through the model; each next to the gray baseline (the gray photo as the guess).
colorize evaluate "$WORK/colorized" --truth "$WORK/test-photos" --csv "$WORK/scores.csv"
colorize evaluate "$WORK/data/test" --model "$WORK/run"

echo "done: $WORK/compare/ shows gray | colorized | original for every test photo;"
echo "      $WORK/run/curves.png the training curves; $WORK/scores.csv the per-photo scores."
