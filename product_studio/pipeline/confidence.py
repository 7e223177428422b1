"""How far to trust a cut-out: a score in [0, 1] from signals the cut-out stage already has.

Three signals, each higher when the cut-out is more likely wrong, all measured at the cut-out's
working size (cutout.WORK_SIDE) from the passes it already ran, so they cost about 2 ms:

- `unsure`: pixels the models leave between 0.1 and 0.9, per product pixel;
- `refine_change`: 1 - IoU between the models' own mask (p >= 0.5) and the refined one: how much
  the refinement had to change;
- `disagreement`: mean |p1 - p2| of two models, per product pixel (0 with a single model).

Each is log-transformed and standardised with its mean and spread on the ECSSD tuning set (199
single objects with human masks), summed, and mapped through a logistic fitted on that set to
P(IoU >= 0.8). So the score reads as "the chance that this cut-out overlaps the true object by at
least 80%", as measured there; `bench/cutout_quality.py` prints how well it ranks photos (AUROC).
Coverage is checked apart: a cut-out that keeps almost nothing or almost the whole frame (an
image with no background to remove) gets a low score and says why.

The calibration holds for what it was fitted on: the default "u2netp+u2net", refined. With one
model the disagreement term is left out, with more it is their mean pairwise difference, and
without refinement `refine_change` is 0: the score still ranks photos, but reads less exactly
as a probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# log(x + 0.01) of each signal on ECSSD with the default ensemble (u2netp+u2net, refined): mean, sd.
_STATS = {"unsure": (-1.7518, 0.8158), "refine_change": (-2.9047, 0.7508), "disagreement": (-2.6661, 0.9974)}
# Logistic fit of IoU >= 0.8 against the summed z-scores on ECSSD: P = 1 / (1 + exp(-(A + B * z))).
_A, _B = 2.9605, -0.4424
# Coverage outside these shares of the frame is not a product photo's cut-out.
MIN_COVERAGE, MAX_COVERAGE = 0.005, 0.97
_COVERAGE_SCORE = 0.05  # the score such a cut-out gets
_WHY = {"unsure": "uncertain edges over much of the product",
        "refine_change": "the refinement had to change much of the models' mask",
        "disagreement": "the two models disagree on much of the product"}


@dataclass(frozen=True)
class CutoutQuality:
    """A cut-out's confidence (0-1, calibrated P(IoU >= 0.8)), why it is low, and the signals."""

    score: float
    reasons: tuple[str, ...] = ()
    signals: dict[str, float] = field(default_factory=dict)

    def needs_review(self, threshold: float) -> bool:
        """True when the score is below `threshold` (settings.cutout_review_below)."""
        return self.score < threshold

    def review_reason(self, threshold: float) -> str | None:
        """One line for people when the cut-out needs review, else None."""
        if not self.needs_review(threshold):
            return None
        why = "; ".join(self.reasons) or "low confidence"
        return f"confidence {self.score:.2f}: {why}"

    def as_dict(self) -> dict:
        return {"score": self.score, "reasons": list(self.reasons),
                "signals": {k: round(v, 5) for k, v in self.signals.items()}}

    @classmethod
    def from_dict(cls, doc: dict) -> CutoutQuality:
        return cls(float(doc["score"]), tuple(doc.get("reasons", ())), dict(doc.get("signals", {})))


# An alpha the photo brought with it was made by whoever made the photo: nothing to doubt but
# its coverage (a photo with rounded transparent corners keeps its whole backdrop).
GIVEN_ALPHA = CutoutQuality(1.0, ("the photo's own transparency was used",))


def _coverage_reason(coverage: float) -> str | None:
    if coverage < MIN_COVERAGE:
        return f"the cut-out keeps only {coverage:.1%} of the photo"
    if coverage > MAX_COVERAGE:
        return f"the cut-out keeps {coverage:.0%} of the photo: is there a background to remove?"
    return None


def given_alpha(alpha: np.ndarray, trusted: CutoutQuality = GIVEN_ALPHA) -> CutoutQuality:
    """The quality of a cut-out whose (H, W) uint8 alpha a person made (the photo's own, or an
    admin's mask): `trusted`, unless it keeps almost nothing or almost the whole frame."""
    coverage = float(np.count_nonzero(alpha >= 128) / alpha.size)
    reason = _coverage_reason(coverage)
    if reason is None:
        return trusted
    return CutoutQuality(_COVERAGE_SCORE, (reason,), {"coverage": coverage})


def chosen_mask(alpha: np.ndarray) -> CutoutQuality:
    """The quality of a cut-out made from an admin's mask (touch-up): they looked at it."""
    return given_alpha(alpha, CutoutQuality(1.0, ("an admin's mask was used",)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def assess(probs: list[np.ndarray], mask: np.ndarray) -> CutoutQuality:
    """Score a cut-out from its models' probabilities (each HxW float32 in [0, 1], at the working
    size) and the final binary product mask (HxW bool, same size)."""
    product = max(int(np.count_nonzero(mask)), 1)
    mean = probs[0] if len(probs) == 1 else np.mean(probs, axis=0)
    signals = {
        "unsure": float(np.count_nonzero((mean > 0.1) & (mean < 0.9)) / product),
        "refine_change": float(1.0 - _iou(mean >= 0.5, mask)),
        # Mean over the pairs of models: with the default two, |p1 - p2|.
        "disagreement": float(np.mean([np.abs(a - b).sum() for i, a in enumerate(probs) for b in probs[i + 1:]])
                              / product) if len(probs) > 1 else 0.0,
    }
    zs = {k: (math.log(signals[k] + 0.01) - mu) / sd for k, (mu, sd) in _STATS.items()
          if k != "disagreement" or len(probs) > 1}
    z = sum(zs.values())
    score = 1.0 / (1.0 + math.exp(-(_A + _B * z)))
    reasons = [_WHY[k] for k, v in sorted(zs.items(), key=lambda kv: -kv[1]) if v > 1.0]
    coverage = float(np.count_nonzero(mask) / mask.size)
    signals["coverage"] = coverage
    if (reason := _coverage_reason(coverage)) is not None:
        score = min(score, _COVERAGE_SCORE)
        reasons.insert(0, reason)
    return CutoutQuality(round(score, 4), tuple(reasons), signals)  # 4 decimals: what is stored
