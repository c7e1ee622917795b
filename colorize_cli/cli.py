"""The `colorize` command line: option parsing only; each stage's work lives in its module.

Every command builds its stage's config dataclass from the options (whose defaults are the
dataclass's own), calls the stage (`run`, or survey's `build_study` and `serve`) with the
command's arguments, the config and, where the stage shows progress or notes, the console;
hands the report it returns to the stage's `render`; and sets the exit code. The stages are
imported here for their configs: none of them loads torch before it has work to do.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape

from colorize_cli import __version__, crawl, demo, evaluate, infer, prep, survey
from colorize_cli import app as webapp  # `app` here is the command line itself
from colorize_cli.bundled import BUNDLED, DEFAULT
from colorize_cli.choices import GanLoss, Optimizer, Space
from colorize_cli.device import Device
from colorize_cli.errors import UserError, one_line
from colorize_cli.fetch import Limits
from colorize_cli.pairs import Fit, PrepConfig
from colorize_cli.terminal import parse_duration

console = Console(stderr=True, highlight=False)  # progress, notes, warnings, errors
stdout = Console(highlight=False)  # results: tables and reports
MODEL_HELP = ("A bundled model by name, " + " or ".join(f"{b.name} (the default)" if b is DEFAULT else b.name for b in BUNDLED)
              + " (`colorize models` says what each was trained on and how it scores), a `colorize train` run "
              "folder (its best.safetensors is used) or a .safetensors checkpoint file of your own.")


def unwrap_help(text: str | None) -> str | None:
    """Help text as paragraphs of one line each, for rich to wrap at the terminal's width.

    Docstrings wrap at the source's width; Typer keeps those line breaks in the list of
    commands and after a command's first paragraph, so at 80 or 100 columns a sentence would
    break early and leave a word alone on a line. A paragraph that starts with click's \\b
    mark keeps its lines (a table).
    """
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p.removeprefix("\b\n") if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


class HelpGroup(typer.core.TyperGroup):
    """A command group whose own help and its commands' help are unwrapped (see unwrap_help)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - click's signature
        super().__init__(*args, **kwargs)
        self.help = unwrap_help(self.help)
        for command in self.commands.values():
            command.help = unwrap_help(command.help)


app = typer.Typer(
    name="colorize",
    cls=HelpGroup,
    help="Teach a computer to colorize grayscale photographs: crawl the web for photos, prep them into pairs, "
         "train a model, infer (colorize) new photos, evaluate the results and survey people on them; "
         "demo shows a bundled model at work, models lists them; app colorizes photos in the browser, guided by "
         "your colour hints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"colorize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """colorize: a pix2pix colorizer toolkit (see `colorize COMMAND --help`)."""


# --- commands: one function per subcommand, each delegating to its stage module ----------


@app.command("crawl")
def crawl_command(
    keyword: Annotated[str, typer.Argument(metavar="KEYWORD", help="What to search for; also names the folder "
                                                                  "(OUT/<keyword-slug>/).")],
    num: Annotated[int, typer.Option("-n", "--num", min=1, help="Usable images wanted in the folder (re-runs top up to it).")] = crawl.CrawlConfig.num,
    out: Annotated[Path, typer.Option("--out", metavar="OUT", help="Parent folder; images go to OUT/<keyword-slug>/.")] = crawl.CrawlConfig.out,
    engine: Annotated[Optional[crawl.Engine], typer.Option(
        "--engine", metavar="ENGINE", help="Where the image URLs come from: bing, baidu, google, flickr or urls "
                                           f"\\[default: {crawl.CrawlConfig.engine.value}, or urls when --urls is given].")] = None,
    urls: Annotated[Optional[Path], typer.Option("--urls", metavar="FILE", help="Text file, one image URL a line (--engine urls).")] = crawl.CrawlConfig.urls_file,
    min_size: Annotated[int, typer.Option("--min-size", min=1, help="Smallest accepted short side, in pixels.")] = crawl.CrawlConfig.min_size,
    threads: Annotated[int, typer.Option("--threads", min=1, max=64, help="Parallel downloads.")] = crawl.CrawlConfig.threads,
    license_: Annotated[crawl.License, typer.Option(
        "--license", metavar="RIGHTS", help="Usage rights asked of the engine (bing, google, flickr): any, cc, "
                                            "public-domain, commercial or commercial-modify.")] = crawl.CrawlConfig.license,
    photos_only: Annotated[bool, typer.Option("--photos-only/--any-type",
                                              help="Ask the engine for photos only (no clip art, drawings, animations).")] = crawl.CrawlConfig.photos_only,
    max_bytes: Annotated[str, typer.Option("--max-bytes", metavar="SIZE", help="Largest download, e.g. 500K, 20M.")] = crawl.format_size(Limits.max_bytes),
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per download, redirects and retries included.")] = Limits.timeout,
    flickr_key: Annotated[Optional[str], typer.Option("--flickr-key", envvar="FLICKR_APIKEY", show_envvar=True,
                                                      help="Flickr API key (--engine flickr).")] = crawl.CrawlConfig.flickr_key,
) -> None:
    """Download N usable color photos of KEYWORD into OUT/<keyword-slug>/.

    It asks the engine until the folder holds N or the engine runs dry; re-runs top up.
    manifest.csv there lists every URL tried: kept, or the reason it was rejected.

    \b
    Rejected, counted by reason (manifest status):
    download-failed  HTTP error, redirect off http(s), no connection
    timeout          slower than --timeout
    too-many-bytes   larger than --max-bytes
    not-decodable    truncated, not an image, HTML served as .jpg
    too-many-pixels  past Pillow's decompression-bomb limit
    too-small        short side under --min-size
    grayscale        colorfulness (Hasler-Suesstrunk, 0-255) under 8
    duplicate        same sha256 as a kept image
    near-duplicate   DCT perceptual hash within 8 of 63 bits of a kept one

    Exit code 0 when the folder holds at least one usable image, 1 when none."""
    limits = Limits(timeout=timeout, max_bytes=crawl.parse_size(max_bytes))
    cfg = crawl.CrawlConfig(num=num, out=out, engine=engine or (crawl.Engine.URLS if urls else crawl.CrawlConfig.engine),
                            urls_file=urls, min_size=min_size, threads=threads, license=license_,
                            photos_only=photos_only, limits=limits, flickr_key=flickr_key)
    report = crawl.run(keyword, cfg, console)
    crawl.render(report, stdout, console)
    if report.kept_total == 0:
        raise UserError(report.no_network or f"no usable images for {keyword!r}: {crawl.shortfall(report)}")


@app.command("evaluate")
def evaluate_command(
    target: Annotated[Path, typer.Argument(metavar="TARGET", help="A folder of predictions (with --truth), a folder of "
                                                "A|B test pairs or of colour photos (run through --model), or a .csv/.tsv "
                                                "file of votes.")],
    truth: Annotated[Optional[Path], typer.Option("--truth", metavar="TRUTH", help="The real photos, matched to "
                                                  "TARGET's by file name.")] = evaluate.EvaluateConfig.truth,
    model: Annotated[Optional[str], typer.Option("--model", metavar="MODEL", help=MODEL_HELP)] = evaluate.EvaluateConfig.model,
    device: Annotated[Device, typer.Option("--device", help="Where the model runs.")] = evaluate.EvaluateConfig.device,
    hints: Annotated[Optional[int], typer.Option(
        "--hints", metavar="N", min=1, help="The hint curve: scores of the model given 0 to N colour hints a photo, "
                                            "simulated from the truth (Zhang et al.'s counts up to N, and N), next to "
                                            "the hints alone (inverse-distance a*b*, no network) and gray.")] = evaluate.EvaluateConfig.hints,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Where the simulated hints fall (--hints); the same "
                                                            "seed gives the same figures.")] = evaluate.EvaluateConfig.seed,
    plot: Annotated[Optional[Path], typer.Option("--plot", metavar="FILE.png", help="Draw the hint curve (PSNR and "
                                                 "CIEDE2000 by number of hints) to this PNG.")] = evaluate.EvaluateConfig.plot,
    csv: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", help="Write the per-image scores to this CSV file "
                                                "(with --hints: a row per image and hint count).")] = evaluate.EvaluateConfig.csv,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Let --csv and --plot replace an old file.")] = evaluate.EvaluateConfig.overwrite,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary (JSON) to stdout.")] = evaluate.EvaluateConfig.as_json,
    top: Annotated[int, typer.Option("--top", min=1, help="Votes: how many of the most fooling images to list.")] = evaluate.EvaluateConfig.top,
) -> None:
    """Score colorized photos against the real ones, next to the gray baseline; with --hints, as
    a curve by number of colour hints; or summarise the votes of a real-or-fake perceptual study:
    fooling rate, confidence interval, binomial test, Fleiss' kappa."""
    cfg = evaluate.EvaluateConfig(truth=truth, model=model, device=device, csv=csv, overwrite=overwrite,
                                  as_json=as_json, top=top, hints=hints, seed=seed, plot=plot)
    evaluate.render(evaluate.run(target, cfg, console), cfg, stdout)


@app.command("prep")
def prep_command(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="Folder of color photos (JPEG, PNG, WebP, BMP, TIFF, GIF) "
                                                            "or one file.")],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Data set folder: DEST/train/*.png, DEST/test/*.png, "
                                                              "DEST/prep.csv.")],
    size: Annotated[int, typer.Option("--size", min=1, help="Side of each half of a pair, in pixels.")] = PrepConfig.size,
    fit: Annotated[Fit, typer.Option(
        "--fit", help="Making a square: crop the centre, pad with black bars, or stretch (distorts).")] = PrepConfig.fit,
    test_fraction: Annotated[float, typer.Option("--test-fraction", min=0.0, max=1.0,
                                                 help="Share of the photos held out in DEST/test.")] = PrepConfig.test_fraction,
    seed: Annotated[int, typer.Option("--seed", help="Which photos go to test (same seed, same split).")] = PrepConfig.seed,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Parallel threads (default: one per CPU).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Remake pairs that are already there (the split is kept).")] = PrepConfig.force,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also read photos in SRC's subfolders.")] = PrepConfig.recursive,
) -> None:
    """Make a pix2pix "aligned" data set: each photo becomes one 2*size x size PNG, color (A)
    left and BT.601 grayscale (B) right, split exactly and stably into train and test."""
    cfg = PrepConfig(size=size, fit=fit, test_fraction=test_fraction, seed=seed, force=force, recursive=recursive,
                     **({} if workers is None else {"workers": workers}))  # else PrepConfig's: one per CPU
    prep.render(prep.run(src, dest, cfg, console), stdout)


def _duration(value: str | None) -> float | None:
    """--time's text as seconds (a one-line error for anything else)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _shares(value: str | None) -> list[float] | None:
    """--mix's comma-separated numbers."""
    if value is None:
        return None
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a list of numbers such as 2,1,1") from None


class _TrainCommand(typer.core.TyperCommand):
    """`colorize train`, whose option help names its defaults as {fields}: filled in from the
    config dataclasses (train.help_defaults) when the help is shown, since reading them loads
    torch, which no other use of the command line should wait for."""

    def get_help(self, ctx: typer.Context) -> str:
        from colorize_cli.train import help_defaults

        defaults = help_defaults()
        for param in self.params:
            if getattr(param, "help", None):
                param.help = param.help.format_map(defaults)
        return super().get_help(ctx)


@app.command(cls=_TrainCommand)
def train(
    data: Annotated[Optional[Path], typer.Argument(metavar="DATA", help="A `colorize prep` output (DATA/train, DATA/test) or a folder of "
                                                        "color photos (split as prep would). Optional with --resume.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="RUN", help="Run folder \\[default: runs/<date-time>].")] = None,
    also: Annotated[Optional[list[Path]], typer.Option(
        "--also", metavar="DATA", help="Train on these photos too (a prep output or photo folder; repeat for more). "
                                       "Their test photos are never trained on; the run is scored on DATA's.")] = None,
    mix: Annotated[Optional[str], typer.Option(
        "--mix", metavar="SHARES", callback=_shares,
        help="Share of each epoch drawn from DATA, then from each --also, e.g. 2,1,1 \\[default: in proportion "
             "to their photos].")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Passes over the training photos "
                                                  "\\[default: {epochs} on a GPU; with --resume: the run's, or more to train on].")] = None,
    time: Annotated[Optional[str], typer.Option(
        "--time", metavar="DURATION", callback=_duration,
        help="Train for this long (e.g. 90s, 10m, 1h30m), evaluations included: the learning rate follows the "
             "clock, and the run ends when the time is spent \\[default on a CPU unless --epochs is given: "
             "{cpu_time}; with --resume: the run's, or more to train on].")] = None,
    crop_min: Annotated[Optional[float], typer.Option(
        "--crop-min", min=0.0, max=1.0, clamp=False,
        help="Random crops: each side a random share between this and 1 of the photo's (scale jitter); "
             "1: the whole photo \\[default: {crop_min:g}].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", min=1, help="Photos per step, per process \\[default: {batch_size}].")] = None,
    size: Annotated[Optional[int], typer.Option("--size", min=4, help="Training size in px, a multiple of 2^(U-Net levels) "
                                                "\\[default on a CPU: {cpu_size}; else the prep output's own, else {size}].")] = None,
    space: Annotated[Optional[Space], typer.Option(
        "--space", help="lab: predict a*b*, keep the photo's lightness; rgb: predict R, G, B (the original) "
                        "\\[default: {space}].")] = None,
    width: Annotated[Optional[int], typer.Option(
        "--width", min=1, help="Channels of the first layer (the original: 64) \\[default: {width} on a GPU, "
                               "{cpu_width} on a CPU].")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate \\[default: {lr:g} for adam, {sgd_lr:g} for sgd].")] = None,
    optimizer: Annotated[Optional[Optimizer], typer.Option(
        "--optimizer", help="adam (betas {beta1:g}, {beta2:g}) or plain sgd \\[default: {optimizer}].")] = None,
    gan_loss: Annotated[Optional[GanLoss], typer.Option(
        "--gan-loss", help="lsgan: least squares (the original); vanilla: logistic \\[default: {gan_loss}].")] = None,
    l1_weight: Annotated[Optional[float], typer.Option(
        "--l1-weight", min=0.0, help="Weight of L1 against the adversarial loss \\[default: {l1_weight:g}].")] = None,
    gan_weight: Annotated[Optional[float], typer.Option(
        "--gan-weight", min=0.0, help="Weight of the adversarial loss (pix2pix: 1); 0: L1 alone, no discriminator "
                                      "\\[default: {gan_weight:g}].")] = None,
    no_chroma_gain: Annotated[bool, typer.Option(
        "--no-chroma-gain", help="Keep the network's raw colours (default: scaled so its output on the validation photos "
                                 "reaches --colorfulness of theirs, by two standard errors; the gain is kept with the checkpoint).")] = False,
    colorfulness: Annotated[Optional[float], typer.Option(
        "--colorfulness", metavar="SHARE",
        help="The share of the truth's colourfulness the chroma gain aims at, below which the best epoch is charged "
             "for paleness: lower for photos whose colours are hard to predict \\[default: {colorfulness:g}].")] = None,
    val_photos: Annotated[Optional[int], typer.Option(
        "--val-photos", min=0, metavar="N",
        help="DATA's training photos held out (at most a fifth of them; none if that is under 32): they pick the best epoch and calibrate "
             "the chroma gain; 0: none, the test split picks \\[default: {val_photos}].")] = None,
    no_hints: Annotated[bool, typer.Option(
        "--no-hints", help="An automatic-only generator, without colour-hint inputs (default: trained with "
                           "simulated hints on half its photos, so it also follows --hint).")] = False,
    device: Annotated[Optional[Device], typer.Option(
        "--device", help="Where to train \\[default: {device}: cuda, else mps, else cpu].")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Initial weights, shuffling, flips, dropout \\[default: {seed}].")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", metavar="RUN", help="Go on with a stopped run, exactly where it stopped.")] = None,
    patience: Annotated[Optional[int], typer.Option(
        "--patience", min=0, help="Stop after N epochs without a new best epoch \\[default: {patience}: never].")] = None,
    preset: Annotated[Optional[Literal["seed"]], typer.Option(
        "--preset", help="seed: the original recipe ({preset[space]}, width {preset[width]}, batch size {preset[batch_size]}, GAN weight {preset[gan_weight]:g}, "
                         "{preset[gan_loss]} + {preset[l1_weight]:g} x L1, {preset[epochs]} epochs, no chroma gain, no hints, no validation photos); "
                         "options given too win.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="CPU threads per process \\[default: all CPUs / processes].")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the networks (slow start, faster steps on GPUs).")] = False,
    checkpoint_every: Annotated[Optional[float], typer.Option(
        "--checkpoint-every", min=0.0, metavar="SECONDS",
        help="Write checkpoints at most this often (always at the end and on Ctrl-C); 0: every epoch "
             "\\[default: {checkpoint_every:g}].")] = None,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="Under torchrun on GPUs: BatchNorm statistics over all processes.")] = False,
) -> None:
    """Train the U-Net colorizer on DATA (L1 with a calibrated chroma gain; --gan-weight 1: pix2pix's
    GAN with its PatchGAN): RUN/metrics.csv, samples/, curves.png,
    best.safetensors (the latest epoch whose CIEDE2000 on held-out training photos, counted up
    where its colours are paler than the truth's, is not clearly worse than the lowest) and
    last.safetensors. Ctrl-C saves and stops (exit code
    130); --resume RUN goes on. Under `torchrun --nproc-per-node=N -m colorize_cli train ...`
    it trains on N processes (GPUs: NCCL, CPUs: gloo)."""
    from colorize_cli.runlog import summary_table
    from colorize_cli.train import NO_DATA, configure
    from colorize_cli.train import train as run_train

    if data is None and resume is None:
        raise typer.BadParameter(NO_DATA, param_hint="'DATA'")
    given = dict(also=None if also is None else [str(a) for a in also], mix=mix, epochs=epochs, time=time,
                 crop_min=crop_min, batch_size=batch_size, size=size, space=space, width=width, lr=lr, optimizer=optimizer,
                 gan_loss=gan_loss, l1_weight=l1_weight, gan_weight=gan_weight,
                 chroma_gain=False if no_chroma_gain else None, colorfulness=colorfulness, val_photos=val_photos, hints=False if no_hints else None, device=device, seed=seed, patience=patience, threads=threads,
                 compile=compile_ or None, sync_bn=sync_bn or None, checkpoint_every=checkpoint_every)
    cfg = configure(None if data is None else str(data), None if out is None else str(out),
                    None if resume is None else str(resume), preset, {k: v for k, v in given.items() if v is not None})
    result = run_train(cfg, resume=resume is not None)
    if not result.main:
        return
    if result.interrupted:
        console.print(f"interrupted in epoch {result.epochs_done + 1} (after step {result.stopped_at}); saved "
                      f"{escape(str(result.out / 'last.safetensors'))}. Go on with: colorize train --resume "
                      f"{escape(str(result.out))}", soft_wrap=True)
        raise typer.Exit(130)
    stdout.print(summary_table(result))


@app.command("infer")
def infer_command(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(metavar="IN", help="A photo, or a folder of photos (JPEG, PNG, WebP, BMP, TIFF, GIF).")],
    dest: Annotated[Path, typer.Argument(metavar="OUT", help="Output folder mirroring IN's names (or, for one photo, "
                                                             "an output file name with an image suffix).")],
    model: Annotated[Optional[str], typer.Option("--model", metavar="MODEL", help=MODEL_HELP)] = infer.InferConfig.model,
    size: Annotated[Optional[int], typer.Option("--size", min=1, help="Working size: the long side the network sees "
                                                "(default: the model's training size). Output is always full size.")] = infer.InferConfig.size,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also colorize the photos in subfolders of IN.")] = infer.InferConfig.recursive,
    fmt: Annotated[infer.OutputFormat, typer.Option("--format", help="png: lossless, luma exact. keep: as the input.")] = infer.InferConfig.format,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = infer.InferConfig.overwrite,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Keep existing outputs as done "
                                                "(finishes an interrupted run).")] = infer.InferConfig.skip_existing,
    side: Annotated[bool, typer.Option("--side-by-side", help="Write gray | colorized (| original, for a color input) "
                                       "side by side.")] = infer.InferConfig.side_by_side,
    device: Annotated[Device, typer.Option("--device", help="Where the network runs.")] = infer.InferConfig.device,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Photos per network pass.")] = infer.InferConfig.batch_size,
    hint: Annotated[Optional[list[str]], typer.Option(
        "--hint", metavar="X,Y,COLOUR", help="A colour at one point of the photo: X,Y in pixels from the top-left "
        "corner of the upright photo (120,80,#d9342b), or as shares of its width and height, with a decimal point "
        "(0.5,0.1,skyblue; 1.0 is the far edge). COLOUR: #rrggbb, rgb(R,G,B) or a CSS name. Repeat for more points; "
        "IN must be one photo. Needs a model trained with hints.")] = None,
    hints_file: Annotated[Optional[Path], typer.Option(
        "--hints", metavar="FILE.json", help='Hints for many photos, as JSON: {"photo.jpg": ["X,Y,COLOUR", ...], ...}, '
        "each photo named by its path, its path relative to IN or its file name. Photos not named are colorized "
        "without hints; a photo whose hints do not fit it is skipped with the reason.")] = infer.InferConfig.hints_file,
) -> None:
    """Colorize photos at their full resolution (color photos are grayed first), following colour
    hints where given. Exit code 0 when every photo was written or kept (--skip-existing), 1 when
    any was skipped: each skipped photo is listed with the reason."""
    from colorize_cli.hints import parse_hint

    if overwrite and skip_existing:
        ctx.fail(infer.OVERWRITE_OR_SKIP)
    if hint and hints_file is not None:
        ctx.fail(infer.HINT_OR_HINTS)
    cfg = infer.InferConfig(model=model, size=size, recursive=recursive, format=fmt, overwrite=overwrite,
                            skip_existing=skip_existing, side_by_side=side, device=device, batch_size=batch_size,
                            hints=tuple(parse_hint(h) for h in hint or ()), hints_file=hints_file)
    report = infer.run(src, dest, cfg, console)
    infer.render(report, console)
    if report.failed:
        raise typer.Exit(1)


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", metavar="OUT", help="Folder for the results, made if needed; "
                                      "of its files, only those the demo wrote are replaced.")] = demo.DemoConfig.out,
    size: Annotated[Optional[int], typer.Option("--size", min=1, help="Working size (default: the model's).")] = demo.DemoConfig.size,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N sample photos.")] = demo.DemoConfig.limit,
    device: Annotated[Device, typer.Option("--device", help="Where the network runs.")] = demo.DemoConfig.device,
    model: Annotated[Optional[str], typer.Option("--model", metavar="MODEL", help=MODEL_HELP)] = demo.DemoConfig.model,
) -> None:
    """Colorize scikit-image's sample photos with a bundled model (offline): writes OUT/index.html,
    a contact sheet and the images, and prints PSNR, SSIM, CIEDE2000 and colorfulness next to gray."""
    report = demo.run(demo.DemoConfig(out=out, size=size, limit=limit, device=device, model=model))
    demo.render(report, stdout, console)


@app.command("models")
def models_command() -> None:
    """The bundled models, for --model NAME: what each was trained on, how it scores on photos it
    never saw, and the script that rebuilds it from ../shared/data."""
    for b in BUNDLED:
        stdout.print(f"[bold]{b.name}[/bold]{' (default)' if b is DEFAULT else ''}: {escape(str(b.path))}\n"
                     f"  trained on: {escape(b.trained_on)}\n  scores: {escape(b.scores)}\n  rebuilt by: {b.script}\n")


@app.command("app")
def app_command(
    model: Annotated[Optional[str], typer.Option("--model", metavar="MODEL", help=MODEL_HELP)] = webapp.AppConfig.model,
    device: Annotated[Device, typer.Option("--device", help="Where the network runs.")] = webapp.AppConfig.device,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free one).")] = webapp.AppConfig.port,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the page in the default web browser.")] = webapp.AppConfig.browser,
) -> None:
    """Colorize photos in the browser, guided by colour hints: open or drop photos, click on one to
    give a colour there, compare before and after, download the PNG and the hints (the file
    `colorize infer --hints` reads).

    Serves a page on 127.0.0.1 until Ctrl-C; offline, and photos stay in memory (nothing is
    written but your downloads). A model trained without hints still colorizes, without them."""
    webapp.serve(webapp.AppConfig(model=model, device=device, port=port, browser=browser), console)


class _BuildByDefault(HelpGroup):
    """`colorize survey DATA ...` is short for `colorize survey build DATA ...`: anything that
    is not a subcommand name (or --help) gets `build` put in front of it."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["build", *args]
        return super().parse_args(ctx, args)


survey_app = typer.Typer(
    cls=_BuildByDefault, no_args_is_help=True,
    help="Real-or-colorized perceptual study: `colorize survey DATA/test --out study/` builds it "
         "(same as `survey build`), `colorize survey serve study/` runs it and collects votes.csv.",
)
app.add_typer(survey_app, name="survey")


@survey_app.command("build")
def survey_build(
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Folder of A|B test pairs from `colorize prep` (DATA/test).")],
    out: Annotated[Path, typer.Option("--out", metavar="STUDY", help="New study folder (must not exist, or be empty).")],
    model: Annotated[Optional[str], typer.Option("--model", metavar="MODEL", help=MODEL_HELP)] = survey.SurveyConfig.model,
    n: Annotated[int, typer.Option("--n", min=1, help="Scored trials (test photos).")] = survey.SurveyConfig.n,
    exposure: Annotated[float, typer.Option("--exposure", help="Seconds both photos are shown.")] = survey.SurveyConfig.exposure,
    seed: Annotated[int, typer.Option("--seed", help="Photo choice, trial order and sides (recorded in study.json).")] = survey.SurveyConfig.seed,
    practice: Annotated[int, typer.Option("--practice", min=0, help="Practice trials first, with feedback, not recorded.")] = survey.SurveyConfig.practice,
    vigilance: Annotated[int, typer.Option("--vigilance", min=0, help="Trials with an obviously wrong (hue-flipped) "
                                                                      "photo, recorded in vigilance.csv.")] = survey.SurveyConfig.vigilance,
) -> None:
    """Build a study folder from N colorized test photos.

    The folder is self-contained (page, images, answer key; no network): each trial shows the
    colorized and the real photo side by side for EXPOSURE seconds, hides them and asks which
    was real."""
    cfg = survey.SurveyConfig(model=model, n=n, exposure=exposure, seed=seed, practice=practice, vigilance=vigilance)
    survey.render_build(survey.build_study(data, out, cfg, console), console)


@survey_app.command("serve")
def survey_serve(
    study: Annotated[Path, typer.Argument(metavar="STUDY", help="A folder built by `colorize survey`.")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free one).")] = survey.ServeConfig.port,
) -> None:
    """Serve a study on 127.0.0.1, appending answers to STUDY/votes.csv.

    votes.csv is the long format `colorize evaluate` reads; vigilance answers go to
    STUDY/vigilance.csv. One server per study at a time: a second is refused."""
    survey.render_serve(survey.serve(study, survey.ServeConfig(port=port), console), console)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; failures become one red line and exit 1 (the traceback only with --debug)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="colorize")  # exits itself (usage errors: exit 2)
    except Exception as e:  # noqa: BLE001 - the one place every failure is reported
        if "--debug" in args:
            raise
        msg = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e} (run with --debug for the traceback)"
        # One line always: control characters from file contents or names are shown escaped.
        msg = one_line(msg)
        console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)
        sys.exit(1)
