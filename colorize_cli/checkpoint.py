"""The checkpoint format: safetensors + JSON, never pickle.

A checkpoint holds the networks' tensors under `generator.` and `discriminator.` (and what
`colorize train --resume` needs besides); its metadata holds the model config as JSON
(`format`: "colorize", `config`, optional `extra`), so a lone .safetensors file can always be
rebuilt into the networks it was written from. Loading refuses pickles unread, names the file
on any mismatch, and rejects NaN or infinite weights.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from colorize_cli.errors import UserError
from colorize_cli.files import atomic_path
from colorize_cli.model import ModelConfig, UNet


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], cfg: ModelConfig,
                    extra: dict | None = None) -> None:
    """Write tensors atomically as safetensors; the model config (and `extra`, JSON-able)
    travel in the file's metadata so a lone .safetensors file can always be rebuilt."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = {"format": "colorize", "config": json.dumps(cfg.to_dict())}
    if extra is not None:
        meta["extra"] = json.dumps(extra)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as e:
            # The Rust writer reports a failed write (a full disk: "os error 28") as its own
            # error; as an OSError it becomes atomic_path's one-line "cannot write" message.
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(tmp)) from None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelConfig, dict]:
    """Read a safetensors checkpoint: (tensors, model config, extra). Anything else, pickles
    included, is refused with a clear error and never executed."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header. That length may
    # well start with byte 0x80 (1 file in 256), so only a file without the "{" is a pickle.
    if head[8:9] != b"{" and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise UserError(f"{path}: is a pickle/torch.save file; only safetensors checkpoints are loaded (nothing in it was run)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a valid safetensors checkpoint ({e})") from None
    if "config" not in meta:
        raise UserError(f"{path}: safetensors file without a colorize model config")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
        extra = json.loads(meta.get("extra", "{}"))
    except (json.JSONDecodeError, TypeError) as e:
        raise UserError(f"{path}: unreadable model config ({e})") from None
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    # A run that diverged, or a damaged file, would otherwise colorize everything gray.
    broken = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if broken:
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise UserError(f"{path}: checkpoint holds NaN or infinite weights ({broken[0]}{more})")
    return tensors, cfg, extra


def load_state(net: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: str | os.PathLike) -> None:
    """Load `prefix.*` tensors into `net`; a mismatch is a clear error, not a shape traceback."""
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    bad = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or bad:
        what = f"missing {missing[:3]}" if missing else f"shape of {bad[0]} is {tuple(state[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}"
        raise UserError(f"{source}: checkpoint does not match the network its config describes ({what})")
    net.load_state_dict({k: state[k].to(own[k].dtype) for k in own})


def load_generator(path: str | os.PathLike) -> tuple[UNet, ModelConfig]:
    """The eval-mode generator from a checkpoint file (weights under `generator.`)."""
    tensors, cfg, _ = load_checkpoint(path)
    g = UNet(cfg)
    load_state(g, tensors, "generator", path)
    return g.eval(), cfg
