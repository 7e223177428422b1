"""Control images: the product's edges only, on the canvas, from controlnet-aux detectors."""

import cv2
import numpy as np
import pytest

from product_studio.config import Settings
from product_studio.errors import ModelUnavailable, UnknownName
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
