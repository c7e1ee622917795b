"""The models that come with the package, chosen by name (`--model general`, `--model beach`):
their files, what each was trained on and how it scores on photos it never saw, for
`colorize models` and the help. `general` is the default of every command that colorizes.

Plain data, without torch: the command line lists them without loading a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Bundled:
    """A model shipped in WEIGHTS as NAME.safetensors (a generator in float16 and its chroma gain)."""

    name: str
    trained_on: str
    scores: str  # on test photos never trained on, next to the gray photo's
    script: str  # the script in examples/ that rebuilds it from ../shared/data

    @property
    def path(self) -> Path:
        return WEIGHTS / f"{self.name}.safetensors"


GENERAL = Bundled(
    "general",
    "780 everyday photos (ImageNet samples: animals, food, objects, vehicles, rooms, streets; 60% of "
    "every epoch) and beach, web beach, mountain and landscape photos (10% each); simulated colour hints",
    "general-photos test split (154 photos): PSNR 23.13 dB (gray 22.39), CIEDE2000 10.91 (gray 11.35), "
    "colourfulness 0.37 of the truth's; 80 scene photos at full resolution: 23.53 dB (gray 22.01), "
    "CIEDE2000 10.22 (gray 11.67)",
    "examples/make_general_model.sh",
)
BEACH = Bundled(
    "beach",
    "600 Unsplash beach photos (50% of every epoch), web beach and mountain photos; simulated colour hints",
    "beach test split (120 photos): PSNR 23.54 dB (gray 21.90), CIEDE2000 9.39 (gray 11.13), "
    "colourfulness 0.82 of the truth's",
    "examples/make_beach_model.sh",
)
BUNDLED = (GENERAL, BEACH)
DEFAULT = GENERAL


def bundled(name: str) -> Bundled | None:
    """The bundled model of that name, if there is one."""
    return next((b for b in BUNDLED if b.name == name), None)
