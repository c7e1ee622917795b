"""Line charts drawn with Pillow, so no plotting library is needed: the training curves
(`runlog.plot_curves`) and the hint curve (`colorize evaluate --hints N --plot FILE`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import ImageDraw, ImageFont

# A line of a chart: its legend, its colour and its (x, y) points; non-finite y are left out.
Series = tuple[str, str, Sequence[tuple[float, float]]]


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, series: Sequence[Series],
          x_label: str, x_ticks: Sequence[float]) -> None:
    """One line chart in `box` (x, y, width, height): title and legend on top, value range on
    the left, `x_ticks` marked below, the first and the last of them the ends of the x axis.
    The axis name sits between the end ticks, or under the ticks when more are marked."""
    x0, y0, w, h = box
    left, top, right, bottom = x0 + 58, y0 + 30, x0 + w - 15, y0 + h - 30
    big, small = font(14), font(11)
    draw.text((x0 + 48, y0 + 8), title, fill="black", font=big)
    draw.rectangle((left, top, right, bottom), outline="#444444")
    lines = [[(x, y) for x, y in points if math.isfinite(y)] for _, _, points in series]
    values = [v for line in lines for _, v in line]
    if not values:
        return
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    e0, e1 = x_ticks[0], x_ticks[-1]

    def xs(e: float) -> float:
        return left + (e - e0) / (e1 - e0) * (right - left)

    def ys(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    for v in (hi, (lo + hi) / 2, lo):
        draw.text((left - 4, ys(v)), f"{v:.3g}", fill="black", font=small, anchor="rm")
    for i, e in enumerate(x_ticks):
        anchor = "lt" if i == 0 else "rt" if i == len(x_ticks) - 1 else "mt"
        draw.text((xs(e), bottom + 4), f"{e}", fill="black", font=small, anchor=anchor)
    label_y = bottom + 4 if len(x_ticks) <= 2 else bottom + 16
    draw.text(((left + right) / 2, label_y), x_label, fill="#444444", font=small, anchor="mt")
    legend_x = right
    for (label, color, _), line in reversed(list(zip(series, lines))):
        pts = [(xs(e), ys(v)) for e, v in line]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for x, y in pts if len(pts) < 40 else pts[-1:]:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=color)
        draw.text((legend_x, y0 + 10), label, fill=color, font=small, anchor="ra")
        legend_x -= draw.textlength(label, font=small) + 14
