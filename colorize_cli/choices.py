"""The recipe choices the command line offers (`--space`, `--optimizer`, `--gan-loss`), in a
module without torch so that the command line can list them without loading torch (as
`device.Device` does for `--device`); `color`, `model` and `train` implement them."""

from typing import Literal

Space = Literal["lab", "rgb"]  # what the networks read and predict (color.encode_input/target)
Optimizer = Literal["adam", "sgd"]
GanLoss = Literal["lsgan", "vanilla"]  # least squares (the original) or logistic
