"""Benchmark (not a test): `colorize train` on the shared beach photos, through the real CLI.

    .venv/bin/python bench/train_beach.py                          # 2 epochs, 128 px, width 16
    .venv/bin/python bench/train_beach.py --size 256 --width 32 --epochs 1 -- --device cuda

Prints the wall time, the per-epoch time and training speed (images/s), and the best epoch's
test L1, PSNR and SSIM next to the gray baseline's. Anything after `--` goes to
`colorize train` as it is. Exits 0 with a "skipped" line when the shared data is absent.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BEACH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "beach-photos"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=BEACH, help="photo folder or prep output [default: %(default)s]")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, help="run folder [default: a new temporary folder]")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if not args.data.is_dir():
        print(f"skipped: {args.data} not found (the shared beach photos are not on this machine)")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="train_beach_")) / "run"
    cmd = [sys.executable, "-m", "colorize_cli", "train", str(args.data), "--size", str(args.size),
           "--width", str(args.width), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--out", str(out), *extra]
    print("$ colorize " + " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        print(f"colorize train failed (exit code {rc})")
        return rc
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"\nwall time {wall:.1f} s for {len(rows)} epochs (start-up, data decoding, evaluation and checkpoints included)")
    print(f"{'epoch':>5} {'seconds':>8} {'img/s':>7} {'test L1':>8} {'PSNR':>6} {'SSIM':>6}")
    for r in rows:
        print(f"{r['epoch']:>5} {float(r['seconds']):8.1f} {float(r['images_per_s']):7.1f} {float(r['test_l1']):8.4f} "
              f"{float(r['test_psnr']):6.2f} {float(r['test_ssim']):6.3f}")
    best = min(rows, key=lambda r: float(r["test_l1"]))
    print(f"best epoch {best['epoch']}: test L1 {float(best['test_l1']):.4f}, PSNR {float(best['test_psnr']):.2f} dB, "
          f"SSIM {float(best['test_ssim']):.4f}")
    print(f"gray baseline:  test L1 {float(best['gray_l1']):.4f}, PSNR {float(best['gray_psnr']):.2f} dB, "
          f"SSIM {float(best['gray_ssim']):.4f}")
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
