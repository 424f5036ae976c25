"""Draw the sample silhouette masks in data/samples/ (white subject on black, 256 x 256 PNG).

Usage: python scripts/make_samples.py [OUT_DIR]   (default: data/samples next to this script's repo)

The shapes are plain PIL ellipses, polygons and thick lines, drawn at 4x and downsampled then
thresholded, so the edges are smooth and the mask is strictly two-valued (0 and 255). The output is
deterministic: running the script again re-creates the same files. Our own drawings, public domain (CC0).
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
SCALE = 4  # supersampling factor: draw at 1024 px, downsample, threshold
Point = tuple[float, float]


class Pen:
    """PIL drawing in 256-pixel coordinates on a SCALE-times larger canvas."""

    def __init__(self) -> None:
        self.image = Image.new("L", (SIZE * SCALE, SIZE * SCALE), 0)
        self.draw = ImageDraw.Draw(self.image)

    def _p(self, points: Sequence[Point]) -> list[Point]:
        return [(x * SCALE, y * SCALE) for x, y in points]

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> None:
        """Filled ellipse centred at (cx, cy), radii rx, ry, rotated by `angle` degrees (clockwise)."""
        a = math.radians(angle)
        points = []
        for i in range(96):
            t = 2 * math.pi * i / 96
            x, y = rx * math.cos(t), ry * math.sin(t)
            points.append((cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)))
        self.polygon(points)

    def polygon(self, points: Sequence[Point]) -> None:
        """Filled polygon."""
        self.draw.polygon(self._p(points), fill=255)

    def line(self, points: Sequence[Point], width: float) -> None:
        """Thick polyline with round joints and round ends."""
        self.draw.line(self._p(points), fill=255, width=round(width * SCALE), joint="curve")
        for x, y in (points[0], points[-1]):
            self.ellipse(x, y, width / 2, width / 2)

    def tapered(self, points: Sequence[Point], start_width: float, end_width: float) -> None:
        """Polyline whose width goes linearly from `start_width` to `end_width` (legs, tails)."""
        n = len(points) - 1
        for i in range(n):
            w0 = start_width + (end_width - start_width) * i / n
            w1 = start_width + (end_width - start_width) * (i + 1) / n
            (x0, y0), (x1, y1) = points[i], points[i + 1]
            dx, dy = x1 - x0, y1 - y0
            length = math.hypot(dx, dy) or 1.0
            nx, ny = -dy / length, dx / length
            self.polygon(
                [
                    (x0 + nx * w0 / 2, y0 + ny * w0 / 2),
                    (x1 + nx * w1 / 2, y1 + ny * w1 / 2),
                    (x1 - nx * w1 / 2, y1 - ny * w1 / 2),
                    (x0 - nx * w0 / 2, y0 - ny * w0 / 2),
                ]
            )
            self.ellipse(x1, y1, w1 / 2, w1 / 2)
        self.ellipse(*points[0], start_width / 2, start_width / 2)

    def mask(self) -> Image.Image:
        """The 256 x 256 two-valued mask."""
        small = self.image.resize((SIZE, SIZE), Image.Resampling.BOX)
        return small.point(lambda v: 255 if v >= 128 else 0)


def bezier(points: Sequence[Point], n: int = 24) -> list[Point]:
    """`n + 1` points along the Bezier curve with control points `points` (smooth tails)."""
    out = []
    for i in range(n + 1):
        t = i / n
        pts = list(points)
        while len(pts) > 1:  # de Casteljau
            pts = [((1 - t) * a[0] + t * b[0], (1 - t) * a[1] + t * b[1]) for a, b in itertools.pairwise(pts)]
        out.append(pts[0])
    return out


def dog_standing(pen: Pen) -> None:
    """A Labrador-like dog in profile, facing left, tail up."""
    pen.ellipse(132, 112, 62, 30)  # torso
    pen.ellipse(84, 114, 30, 32)  # deep chest
    pen.ellipse(178, 112, 26, 28)  # rump
    pen.polygon([(64, 118), (92, 96), (84, 58), (52, 64)])  # neck
    pen.ellipse(62, 56, 24, 21)  # skull
    pen.polygon([(50, 42), (22, 54), (16, 64), (22, 76), (56, 80)])  # broad muzzle
    pen.ellipse(20, 60, 7, 6)  # nose
    pen.tapered([(74, 40), (88, 52), (90, 80)], 14, 12)  # floppy ear, hanging behind the skull
    pen.tapered([(78, 130), (76, 175), (74, 214)], 15, 11)  # front legs
    pen.tapered([(98, 132), (98, 176), (96, 214)], 15, 11)
    pen.ellipse(70, 215, 10, 5)  # front paws
    pen.ellipse(92, 215, 10, 5)
    pen.tapered([(176, 120), (186, 160), (176, 186), (178, 214)], 26, 11)  # hind legs with hocks
    pen.tapered([(160, 122), (166, 162), (156, 188), (158, 214)], 22, 11)
    pen.ellipse(173, 215, 10, 5)  # hind paws
    pen.ellipse(153, 215, 10, 5)
    pen.tapered(bezier([(196, 104), (222, 96), (226, 66), (234, 44)]), 11, 6)  # tail


def dog_sitting(pen: Pen) -> None:
    """A shepherd-like dog sitting in profile, facing left, ears up."""
    pen.ellipse(156, 180, 50, 44)  # haunch
    pen.polygon([(92, 104), (132, 96), (180, 150), (150, 214), (104, 200)])  # back and belly
    pen.ellipse(106, 130, 30, 40, angle=-15)  # upright chest
    pen.polygon([(88, 118), (134, 110), (130, 62), (88, 62)])  # neck
    pen.ellipse(108, 60, 26, 23)  # skull
    pen.polygon([(90, 46), (56, 58), (50, 68), (56, 82), (94, 82)])  # muzzle
    pen.ellipse(54, 64, 7, 6)  # nose
    pen.polygon([(110, 46), (122, 16), (134, 52)])  # erect ears
    pen.polygon([(98, 46), (104, 20), (116, 44)])
    pen.tapered([(96, 140), (92, 190), (90, 224)], 16, 12)  # front legs
    pen.tapered([(116, 146), (114, 192), (112, 224)], 16, 12)
    pen.ellipse(86, 225, 11, 5)  # front paws
    pen.ellipse(108, 225, 11, 5)
    pen.ellipse(136, 222, 22, 7)  # hind foot on the ground
    pen.tapered(bezier([(196, 210), (222, 226), (238, 222)]), 14, 8)  # tail lying on the ground


def cat_sitting(pen: Pen) -> None:
    """A cat sitting in profile, facing left: small round head, pointed ears, tail curled up at the tip."""
    pen.ellipse(146, 178, 46, 50)  # haunch
    pen.ellipse(118, 150, 26, 48, angle=-12)  # chest
    pen.ellipse(118, 104, 20, 22, angle=-20)  # neck
    pen.ellipse(112, 80, 26, 23)  # head
    pen.polygon([(96, 66), (84, 82), (86, 94), (102, 100)])  # short muzzle
    pen.polygon([(92, 70), (90, 34), (114, 60)])  # pointed ears
    pen.polygon([(112, 60), (128, 30), (134, 72)])
    pen.tapered([(106, 160), (104, 200), (102, 226)], 12, 10)  # thin front legs
    pen.tapered([(120, 164), (118, 202), (116, 226)], 12, 10)
    pen.ellipse(100, 226, 8, 4)
    pen.ellipse(114, 226, 8, 4)
    pen.ellipse(146, 224, 24, 6)  # hind foot
    pen.tapered(bezier([(184, 212), (236, 236), (240, 190), (220, 170), (238, 146)]), 12, 8)  # tail


def bird_perched(pen: Pen) -> None:
    """A songbird perched, facing left: round head, short beak, long tail pointing down-right."""
    pen.ellipse(130, 126, 52, 32, angle=32)  # body, tilted
    pen.ellipse(92, 84, 26, 24)  # head
    pen.polygon([(72, 76), (44, 86), (72, 96)])  # beak
    pen.polygon([(160, 150), (210, 206), (222, 196), (176, 138)])  # tail
    pen.ellipse(150, 120, 36, 18, angle=36)  # folded wing on the back
    pen.line([(122, 150), (118, 186)], 4)  # legs
    pen.line([(138, 152), (138, 186)], 4)
    pen.line([(108, 188), (126, 188)], 4)  # toes
    pen.line([(128, 188), (148, 188)], 4)


SAMPLES: dict[str, Callable[[Pen], None]] = {
    "dog/dog_sitting.png": dog_sitting,
    "dog/dog_standing.png": dog_standing,
    "cat/cat_sitting.png": cat_sitting,
    "bird/bird_perched.png": bird_perched,
}


def main(out_dir: Path) -> list[Path]:
    """Draw every sample into `out_dir` and return the written paths."""
    written = []
    for name, draw in SAMPLES.items():
        pen = Pen()
        draw(pen)
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pen.mask().save(path, format="PNG", optimize=True)
        written.append(path)
    return written


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "data" / "samples"
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else default):
        print(f"{p} ({p.stat().st_size} bytes)")
