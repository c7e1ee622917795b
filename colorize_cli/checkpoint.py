"""The checkpoint format: safetensors + JSON, never pickle.

A checkpoint holds the networks' tensors under `generator.` and `discriminator.` (and what
`colorize train --resume` needs besides); its metadata holds the model config as JSON
(`format`: "colorize", `config`, optional `extra`), so a lone .safetensors file can always be
rebuilt into the networks it was written from. Loading refuses pickles unread, names the file
on any mismatch, and rejects NaN or infinite weights.

A training run's checkpoints (RUN/last.safetensors, RUN/best.safetensors) carry everything
`--resume` needs to go on bit for bit: besides both networks, the optimizers' state
(`optimizer_g.*`, `optimizer_d.*` tensors, the rest in `extra`), every process's random
generators (`rng.{cpu,cuda,mps}.RANK`), the epoch's loss sums so far (`loss_sums`), and in
`extra` where the run stands (RunState: the learning rate follows from it) and its whole config. `Checkpointer`
decides when they are written.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn

from colorize_cli.errors import UserError
from colorize_cli.files import atomic_path
from colorize_cli.model import MAX_GAIN, ModelConfig, UNet
from colorize_cli.processes import Dist


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
    """The eval-mode generator from a checkpoint file (weights under `generator.`), with the
    chroma gain its training calibrated (`extra["chroma_gain"]`; 1 in files from before that)."""
    tensors, cfg, extra = load_checkpoint(path)
    g = UNet(cfg)
    load_state(g, tensors, "generator", path)
    gain = (extra or {}).get("chroma_gain", 1.0)
    if type(gain) not in (int, float) or not 0 < gain <= MAX_GAIN:
        raise UserError(f"{path}: chroma_gain {gain!r} in its metadata is not a number in (0, {MAX_GAIN:g}]")
    g.chroma_gain = float(gain)
    return g.eval(), cfg


# --- training checkpoints ----------------------------------------------------------------

State = tuple[dict[str, torch.Tensor], dict]  # a training checkpoint's tensors and its `extra` metadata


class Networks(Protocol):
    """What a training checkpoint holds of the training (train.Nets): both networks and their
    optimizers."""

    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


@dataclass
class RunState:
    """Where a run stands, as its checkpoints record it next to the tensors."""

    loss_sums: torch.Tensor  # d_loss, g_adv, g_l1 summed over this epoch's steps so far
    epoch: int = 0  # complete epochs
    step: int = 0  # steps done of the next epoch (a run stopped within it)
    best_score: float = math.inf  # the lowest scoring.selection_score so far (inf: none yet); rank 0's
    best_shares: torch.Tensor | None = None  # its per-photo shares (scoring.Pick); rank 0's
    best_epoch: int = 0  # the best epoch (scoring.Pick), not always the lowest-scoring one
    seconds: float = 0.0  # spent training (steps, evaluations, checkpoints), over all sessions
    chroma_gain: float = 1.0  # the generator's calibrated gain after the last evaluation (UNet)


def _optimizer_state(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as named tensors plus a JSON part (no pickling)."""
    sd = opt.state_dict()
    tensors, other = {}, {}
    for i, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{i}.{k}"] = v
            else:
                other[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "state": other}


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in [(k[len(prefix) + 1:], v) for k, v in tensors.items() if k.startswith(prefix + ".")] + \
            list(meta["state"].items()):
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_states(d: Dist, device: torch.device) -> dict[str, torch.Tensor]:
    """Every process's torch generator states (CPU, and CUDA or MPS), as uint8 tensors."""
    local = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        local["mps"] = torch.mps.get_rng_state()
    return {f"rng.{k}.{rank}": part for k, v in local.items() for rank, part in enumerate(d.gather(v))}


def _restore_rng(tensors: dict[str, torch.Tensor], d: Dist, device: torch.device) -> None:
    """Put this process's generators back (the CUDA or MPS one where it was saved too)."""
    torch.set_rng_state(tensors[f"rng.cpu.{d.rank}"])
    if device.type == "cuda" and f"rng.cuda.{d.rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{d.rank}"], device)
    elif device.type == "mps" and f"rng.mps.{d.rank}" in tensors:
        torch.mps.set_rng_state(tensors[f"rng.mps.{d.rank}"])


def training_state(nets: Networks, run: RunState, train_config: dict, d: Dist, device: torch.device,
                   keep: bool = False) -> State | None:
    """Everything --resume needs: rank 0's (None on the others, which still take part in
    gathering the generators). `keep`: copies, for a best epoch whose file is written later."""
    rng = _rng_states(d, device)
    if not d.main:
        return None
    tg, meta_g = _optimizer_state("optimizer_g", nets.opt_g)
    td, meta_d = _optimizer_state("optimizer_d", nets.opt_d)
    tensors = {**{f"generator.{k}": v for k, v in nets.g.state_dict().items()},
               **{f"discriminator.{k}": v for k, v in nets.d.state_dict().items()},
               **tg, **td, **rng, "loss_sums": run.loss_sums,
               **({} if run.best_shares is None else {"best_shares": run.best_shares})}
    if keep:
        tensors = {k: v.detach().clone() for k, v in tensors.items()}
    extra = {"epoch": run.epoch, "step": run.step, "optimizer_g": meta_g, "optimizer_d": meta_d,
             "best_score": run.best_score if math.isfinite(run.best_score) else None, "best_epoch": run.best_epoch,
             "seconds": run.seconds, "chroma_gain": run.chroma_gain, "world_size": d.world,
             "train_config": train_config}
    return tensors, extra


def load_training(nets: Networks, state: State, d: Dist, device: torch.device, source: Path) -> RunState:
    """Put a training checkpoint back into `nets` and the random generators; where the run stands.
    Saved by another number of processes, which shards an epoch differently, the epoch it
    stopped in starts over and the generators keep their fresh seeds."""
    tensors, extra = state
    load_state(nets.g, tensors, "generator", source)
    load_state(nets.d, tensors, "discriminator", source)
    _load_optimizer(nets.opt_g, "optimizer_g", tensors, extra["optimizer_g"])
    _load_optimizer(nets.opt_d, "optimizer_d", tensors, extra["optimizer_d"])
    same_world = extra["world_size"] == d.world
    step = extra["step"] if same_world else 0
    # A checkpoint from before the selection score (its best chosen by test L1) has no score to
    # beat: the next epoch is compared with nothing.
    best = extra.get("best_score")
    run = RunState(tensors["loss_sums"].to(device) if step and d.main else torch.zeros(3, device=device),
                   extra["epoch"], step, best if best is not None else math.inf, tensors.get("best_shares"),
                   extra["best_epoch"], extra.get("seconds", 0.0), extra.get("chroma_gain", 1.0))
    if same_world:
        _restore_rng(tensors, d, device)
    return run


class Checkpointer:
    """Writes a run's last.safetensors, and best.safetensors when the state written or one kept
    since is the best, atomically. At the end of an epoch only every `every` seconds (a fast GPU
    epoch would otherwise spend longer writing hundreds of MB than training) or when the run is
    leaving; a best epoch in between is kept in memory until the next write. Every process takes
    part (the generators are gathered); rank 0 writes."""

    def __init__(self, out: Path, nets: Networks, mcfg: ModelConfig, train_config: dict, d: Dist,
                 device: torch.device, every: float, saved: tuple[int, int] | None) -> None:
        self.out, self.nets, self.mcfg, self.train_config = out, nets, mcfg, train_config
        self.d, self.device, self.every = d, device, every
        self.saved = saved  # (epoch, step) last.safetensors holds; None: no checkpoint yet
        self.kept: State | None = None  # a best epoch not yet in best.safetensors
        self.last_write = time.perf_counter()

    def save(self, run: RunState, best_now: bool) -> None:
        """last.safetensors, and best.safetensors when this state (`best_now`) or a kept one is the best."""
        state = training_state(self.nets, run, self.train_config, self.d, self.device)
        if state is not None:
            save_checkpoint(self.out / "last.safetensors", state[0], self.mcfg, state[1])
            best = state if best_now else self.kept
            if best is not None:
                save_checkpoint(self.out / "best.safetensors", best[0], self.mcfg, best[1])
        self.kept, self.last_write, self.saved = None, time.perf_counter(), (run.epoch, run.step)

    def end_epoch(self, run: RunState, best: bool, leaving: bool) -> None:
        """Save when due (or `leaving`); else keep a `best` epoch's state for the next write."""
        if self.d.agree(leaving or time.perf_counter() - self.last_write >= self.every):
            self.save(run, best_now=best)
        elif best:
            self.kept = training_state(self.nets, run, self.train_config, self.d, self.device, keep=True)

    def holds(self) -> str:
        """What last.safetensors holds, for a run that cannot go on."""
        if self.saved is None:
            return "no checkpoint was saved"
        epoch, step = self.saved
        return (f"{self.out / 'last.safetensors'} holds the last finite state "
                f"(epoch {epoch}{f', step {step}' if step else ''})")
