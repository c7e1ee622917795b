#!/usr/bin/env bash
# Rebuild the bundled general model (colorize_cli/weights/general.safetensors) from ../shared/data
# alone, with the recipe it was made with (docs/bundled-models.md), then score it.
# Run from the repository root:  ./setup.sh examples/make_general_model.sh [END ...]
# Each END (default: 2h) is where a cycle of the learning rate ends, in training time: the first
# cycle starts the run, each later one resumes it with the larger budget (the rate starts again
# and falls to 0 with the clock once more). Stopped or killed (Ctrl-C, a lost session)? Run the
# same command again: it resumes the run where its last checkpoint left it (`colorize train
# --resume`), skips cycles already done, and only starts over where WORK holds no run.
# WORK (default general-work) holds the data sets and the run; SHARED (default ../shared/data)
# the photos. Nothing of them enters the repository.
set -euo pipefail
[ "$#" -gt 0 ] || set -- 2h
shared=${SHARED:-../shared/data}
work=${WORK:-general-work}
run="$work/run"

# Pairs at 320 px leave room for the random crops (trained at 192 px). general-photos (ImageNet
# samples: animals, food, objects, vehicles, rooms, streets) are what people bring; the outdoor
# sets add sky, sea, snow and foliage. The 256 px prep of general-photos (the same split: it is
# drawn from the files' hashes) is the test split as evaluate scores it.
for set in general beach web-beach mountain landscape; do
    colorize prep "$shared/$set-photos" "$work/$set" --size 320
done
colorize prep "$shared/general-photos" "$work/general-256" --size 256

# The seconds a run has trained (0 before its first checkpoint).
trained() { python -c 'import sys; from colorize_cli.checkpoint import load_checkpoint as l; print(l(sys.argv[1])[2]["seconds"])' \
    "$run/last.safetensors" 2>/dev/null || echo 0; }
seconds() { python -c 'import sys; from colorize_cli.terminal import parse_duration; print(parse_duration(sys.argv[1]))' "$1"; }

ends=()
for end in "$@"; do ends+=("$(seconds "$end")"); done  # a malformed END stops the script here

# 60% of every epoch from general-photos, 10% from each outdoor set. The chroma gain aims at half
# the truth's colourfulness (docs/bundled-models.md), not the beach model's 0.8.
for i in "${!ends[@]}"; do
    end=$1; shift
    if [ ! -f "$run/config.json" ]; then
        colorize train "$work/general" --also "$work/beach" --also "$work/web-beach" --also "$work/mountain" \
            --also "$work/landscape" --mix 6,1,1,1,1 --size 192 --width 32 --colorfulness 0.5 \
            --time "$end" --device cpu --out "$run"
    elif python -c 'import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))' "$(trained)" "${ends[$i]}"; then
        colorize train --resume "$run" --time "$end"
    fi
done

# The last epoch, whatever best.safetensors holds: the learning rate has fallen to 0 with the clock.
# Its chroma gain: 1.1, not the 1.75 the run calibrated (0.5 of the truth's colourfulness plus two
# standard errors). On the run's 64 validation photos every step of gain cost colour error
# (CIEDE2000 10.82, 10.90, 11.05, 11.33, 11.65 at gains 1, 1.1, 1.25, 1.5, 1.75; gray 10.90):
# 1.1 is the most colour this network gives without a larger colour error than the gray photo's
# (docs/bundled-models.md). GAIN overrides it for a retrained network.
python examples/export_generator.py "$run/last.safetensors" colorize_cli/weights/general.safetensors "${GAIN:-1.1}"
colorize evaluate "$work/general-256/test" --model general
