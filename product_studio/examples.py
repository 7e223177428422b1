"""Example product photos: real photographs that scikit-image ships, so demos need no downloads."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

# (name, skimage.data function): a cup on a saucer, a rocket on its pad, a motorbike.
EXAMPLES = (("coffee", "coffee"), ("rocket", "rocket"), ("motorcycle", "stereo_motorcycle"))


def write_examples(folder: Path) -> list[Path]:
    from skimage import data  # heavy import, only for demos

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in EXAMPLES:
        path = folder / f"{name}.jpg"
        if not path.exists():
            pixels = getattr(data, fn)()
            pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo pairs: the left view
            Image.fromarray(pixels).convert("RGB").save(path, quality=95)
        paths.append(path)
    return paths
