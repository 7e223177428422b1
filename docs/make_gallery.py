"""Render docs/gallery.jpg: one real photo (scikit-image's coffee) in every offline studio scene.

    python docs/make_gallery.py [--out docs/gallery.jpg]

Uses the project's own pipeline: cut-out, layout, scene, composite, for the `lifestyle` target.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from product_studio.pipeline.cutout import cut_out
from product_studio.pipeline.plan import render_variant
from product_studio.presets import TARGETS
from product_studio.scenes import SCENES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("gallery.jpg"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    from skimage import data

    cutout = cut_out(data.coffee())
    tiles = []
    for preset in SCENES.values():
        if preset.backend != "studio":
            continue
        tile = cv2.resize(render_variant(cutout, TARGETS["lifestyle"], preset, args.seed).pixels, (324, 405),
                          interpolation=cv2.INTER_AREA)
        cv2.putText(tile, preset.name, (10, 392), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.full_like(tiles[0], 255))
    grid = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(args.out, f"{args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
