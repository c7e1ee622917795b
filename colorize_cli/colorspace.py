"""The colour spaces the networks can work in: the choice `--space` offers (`color` does the
maths). A module of its own, without torch, so that the command line can offer the choice
without loading torch, as `device.Device` does for `--device`."""

from typing import Literal

Space = Literal["lab", "rgb"]
