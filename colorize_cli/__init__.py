"""colorize: teach a computer to colorize grayscale photographs (pix2pix cGAN toolkit)."""

__version__ = "0.1.0"
