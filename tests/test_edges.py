"""Control images: the product's edges only, on the canvas, from controlnet-aux detectors (canny
and lineart_standard: our own copies, the same pixels without importing controlnet-aux or torch)."""

import json
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from product_studio.config import Settings
from product_studio.errors import ModelUnavailable, UnknownName
from product_studio.pipeline import edges
from product_studio.pipeline.edges import control_image
from product_studio.pipeline.layout import place
from product_studio.presets import TARGETS


def striped_photo_with_product(h=300, w=400):
    """A busy striped background (full of edges) and a flat-coloured box product with a known alpha."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, ::6] = 255  # stripes: strong background edges everywhere
    alpha = np.zeros((h, w), np.uint8)
    cv2.rectangle(alpha, (120, 80), (300, 250), 255, -1)
    rgb[alpha > 0] = (200, 60, 40)
    cv2.circle(rgb, (210, 165), 40, (25, 25, 30), -1)  # a dark logo on the product
    return np.dstack([rgb, alpha])


@pytest.fixture(scope="module")
def settings():
    return Settings()


@pytest.mark.parametrize("detector", ["canny", "lineart_standard"])
def test_edges_come_from_the_product_only_in_canvas_coordinates(detector, settings):
    target = TARGETS["lifestyle"]
    placement = place(striped_photo_with_product(), target)
    control = control_image(placement, detector, settings)
    assert control.shape == (target.height, target.width, 3) and control.dtype == np.uint8

    on = control.max(axis=2) > 16
    near_product = cv2.dilate((placement.canvas_alpha > 0.02).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert on.sum() > 500
    assert not (on & ~near_product).any(), "an edge outside the product: the old background leaked in"

    # The silhouette is drawn where the product is: its outline sits on the alpha boundary.
    x0, y0, x1, y1 = placement.box
    assert on[y0:y1, x0:x0 + 4].any() and on[y0:y1, x1 - 4:x1].any()
    # The logo inside the product (radius 40 source px) is an edge too.
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    r = int(45 * placement.scale)
    assert on[cy - r:cy + r, cx - r:cx + r].any()


def test_unknown_detector_names_the_choices(settings):
    with pytest.raises(UnknownName, match="canny"):
        control_image(place(striped_photo_with_product(), TARGETS["lifestyle"]), "sobel", settings)


def test_detector_without_weights_fails_clearly(tmp_path):
    settings = Settings(annotators_repo=str(tmp_path / "no-such-weights"))
    with pytest.raises(ModelUnavailable, match="PRODUCT_STUDIO_ANNOTATORS_REPO"):
        control_image(place(striped_photo_with_product(), TARGETS["lifestyle"]), "hed", settings)


def coffee_with_alpha(rgb):
    """scikit-image's coffee photo with an alpha: the cup and saucer (an ellipse), soft-edged."""
    h, w = rgb.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2, h // 2), (int(w * 0.42), int(h * 0.45)), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (7, 7), 0)
    return np.dstack([rgb, alpha])


@pytest.fixture(scope="module")
def controlnet_aux():
    with warnings.catch_warnings():  # its timm registrations warn on every import
        warnings.simplefilter("ignore")
        import controlnet_aux

    return controlnet_aux


@pytest.mark.parametrize("detector", ["canny", "lineart_standard"])
@pytest.mark.parametrize("target", ["lifestyle", "shopify-square"])
def test_weightless_detectors_match_controlnet_aux_pixel_for_pixel(detector, target, coffee_rgb, settings,
                                                                   controlnet_aux, monkeypatch):
    placement = place(coffee_with_alpha(coffee_rgb), TARGETS[target])
    ours = control_image(placement, detector, settings)
    theirs_cls = getattr(controlnet_aux, edges.DETECTORS[detector].cls)
    # The same control_image, its detector swapped for controlnet-aux's own: the exact call we make.
    monkeypatch.setattr(edges, "get_detector", lambda name, settings=None: theirs_cls())
    theirs = control_image(placement, detector, settings)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert (ours > 0).sum() > 1000  # the comparison is about real edges, not two blank images
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("kwargs", [{}, {"detect_resolution": 256}, {"detect_resolution": 384, "image_resolution": 640},
                                    {"low_threshold": 50, "high_threshold": 120, "output_type": "np"}])
def test_canny_matches_controlnet_aux_with_its_own_resizing(kwargs, coffee_rgb, controlnet_aux):
    """Other sizes than control_image's (which keeps scale 1): controlnet-aux's rounding to
    multiples of 64 and its LANCZOS / AREA resizing, on RGB, RGBA and PIL input."""
    from PIL import Image

    rgba = coffee_with_alpha(coffee_rgb)
    theirs = controlnet_aux.CannyDetector()
    for image in (coffee_rgb, rgba, Image.fromarray(coffee_rgb)):
        a, b = edges.CannyDetector()(image, **kwargs), theirs(image, **kwargs)
        assert type(a) is type(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_lineart_standard_matches_controlnet_aux_with_its_own_resizing(coffee_rgb, controlnet_aux):
    theirs = controlnet_aux.LineartStandardDetector()
    for kwargs in ({"output_type": "np"}, {"detect_resolution": 320, "output_type": "np"}, {}):
        a, b = edges.LineartStandardDetector()(coffee_rgb, **kwargs), theirs(coffee_rgb, **kwargs)
        assert type(a) is type(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_process_with_canny_imports_neither_torch_nor_controlnet_aux(tmp_path, coffee_rgb):
    """A fresh `product-studio process` for a scene target (control.png drawn with canny)."""
    from PIL import Image

    photo = tmp_path / "coffee.jpg"
    Image.fromarray(coffee_rgb).save(photo, quality=95)
    out = tmp_path / "out"
    script = f"""
import json, sys
sys.argv = ["product-studio", "process", {str(photo)!r}, "-t", "lifestyle", "--out", {str(out)!r}]
from product_studio.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": sorted(m for m in ("torch", "controlnet_aux") if m in sys.modules)}}))
"""
    env = {**os.environ, "PRODUCT_STUDIO_EDGE_DETECTOR": "canny", "COLUMNS": "200"}
    env.setdefault("PRODUCT_STUDIO_CUTOUT_MODEL", "u2netp")  # the model the other tests need: the same imports
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, run.stdout[-3000:]
    assert (out / "coffee" / "control.png").is_file() and list((out / "coffee").glob("lifestyle.*"))
    assert report["heavy"] == []


def test_the_registry_names_every_detector_edges_builds():
    from product_studio.backends.registry import EDGE_DETECTORS
    from product_studio.pipeline.edges import DETECTORS

    assert tuple(DETECTORS) == EDGE_DETECTORS
