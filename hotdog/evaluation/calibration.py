"""Calibration: how well a model's confidence matches how often it is right, in equal-width
confidence bins. The evaluate stage reports the expected calibration error from them, and
the report draws them as a reliability diagram; both read them here, without torch."""

from __future__ import annotations

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. (2017) report ECE


def calibration_bins(confidence: list[float], correct: list[bool], bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins: each one's count, mean confidence and accuracy (None
    when empty)."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0)]
        out.append({"lower": lo, "upper": hi, "count": len(inside),
                    "confidence": sum(confidence[i] for i in inside) / len(inside) if inside else None,
                    "accuracy": sum(correct[i] for i in inside) / len(inside) if inside else None})
    return out


def expected_calibration_error(confidence: list[float], correct: list[bool], bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over the bins."""
    total = len(confidence)
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
               for b in calibration_bins(confidence, correct, bins) if b["count"])
