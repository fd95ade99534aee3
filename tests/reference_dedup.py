"""The earlier service's near-duplicate loop, kept as the specification of
``data.tweets.near_duplicate_mask``.

Not part of the package: the tests compare the package's blocked version with it (BENCHMARKS.md has
the two timed).
"""

from __future__ import annotations

import numpy as np


def reference_near_duplicate_mask(texts: list[str], threshold: float = 80.0) -> np.ndarray:
    """Keep a text only if its ``fuzz.ratio`` to every earlier kept text is at most ``threshold``.

    Every row is compared with every row kept so far, one ``fuzz.ratio`` call at a time.
    """
    from rapidfuzz import fuzz

    kept: list[str] = []
    mask = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if all(fuzz.ratio(text, other) <= threshold for other in kept):
            kept.append(text)
            mask[i] = True
    return mask
