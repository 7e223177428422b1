"""A setting that cannot have an effect is refused, not silently ignored (issue 17, item 3).

PRODUCT_STUDIO_DIFFUSION_VARIANTS was documented as "images per call" but every door makes one
generated image per target and seed, so it did nothing. It is retired: 1 (or unset) is accepted,
anything else stops the start with a message saying what to do instead, and it is in no dump
(so in no content key: a value that changes nothing cannot cause work to be done twice).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from product_studio.config import Settings


def test_diffusion_variants_other_than_one_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("PRODUCT_STUDIO_DIFFUSION_VARIANTS", "4")
    with pytest.raises(ValidationError, match="PRODUCT_STUDIO_DIFFUSION_VARIANTS is retired.*seed"):
        Settings(_env_file=None)


def test_diffusion_variants_from_a_dotenv_file_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.delenv("PRODUCT_STUDIO_DIFFUSION_VARIANTS", raising=False)
    env = tmp_path / ".env"
    env.write_text("PRODUCT_STUDIO_DIFFUSION_VARIANTS=2\n")
    with pytest.raises(ValidationError, match="retired"):
        Settings(_env_file=env)


def test_diffusion_variants_one_or_unset_is_accepted_and_in_no_dump(monkeypatch):
    monkeypatch.delenv("PRODUCT_STUDIO_DIFFUSION_VARIANTS", raising=False)
    assert "diffusion_variants" not in Settings(_env_file=None).model_dump()
    monkeypatch.setenv("PRODUCT_STUDIO_DIFFUSION_VARIANTS", "1")  # what it always did: harmless
    assert "diffusion_variants" not in Settings(_env_file=None).model_dump()
