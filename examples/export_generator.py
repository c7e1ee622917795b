"""Keep only the generator of a run's checkpoint and its chroma gain (the file also holds D and
the optimizers' state), in float16: half the bytes; loading casts it back to float32.

    python examples/export_generator.py RUN/last.safetensors colorize_cli/weights/NAME.safetensors [GAIN]

GAIN, if given, replaces the gain the run calibrated (a bundled model's script says why).
"""

import sys

from colorize_cli.checkpoint import load_checkpoint, save_checkpoint

tensors, cfg, extra = load_checkpoint(sys.argv[1])
gen = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith("generator.")}
keep = {k: extra[k] for k in ("epoch", "seconds", "chroma_gain", "train_config")}
if len(sys.argv) > 3:
    keep["chroma_gain"] = float(sys.argv[3])
save_checkpoint(sys.argv[2], gen, cfg, keep)
print(f"wrote {sys.argv[2]}: generator of epoch {extra['epoch']} (chroma gain {keep['chroma_gain']:.3f}), "
      f"{sum(v.numel() for v in gen.values())} parameters")
