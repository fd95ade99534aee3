"""What the live process and its shadow's process say to each other, and the comparison itself.

Messages are pickles over an ``AF_UNIX`` ``SOCK_SEQPACKET`` pair, one message a datagram, so a send
either delivers a whole request or fails at once (the live side then drops it and counts it):

- live -> shadow: ``(number, texts, live_probabilities, live_labels)``;
- shadow -> live: first ``("ready", version, labels)``, or ``("failed", None, reason)`` and it exits;
  then per request ``("compared", number, rows)``, each row a :data:`Compared`, or ``("failed",
  number, reason)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# the largest message either side reads; a request that pickles to more is not shadowed (the live
# side counts it as dropped): 4 MiB holds hundreds of tweets at their longest
MAX_MESSAGE = 4 << 20
# (agreed, live label, shadow label, largest |difference| of one label's probability)
Compared = tuple[bool, str, str, float]


def compare_rows(
    live: np.ndarray, live_labels: Sequence[str], shadow: np.ndarray, shadow_labels: Sequence[str]
) -> list[Compared]:
    """Per text: whether both models chose the same label, the two labels, and the largest difference
    of one label's probability (a label only one model has counts as probability 0 in the other)."""
    rows: list[Compared] = []
    for ours, theirs in zip(live.tolist(), shadow.tolist(), strict=True):
        live_p = dict(zip(live_labels, ours, strict=True))
        shadow_p = dict(zip(shadow_labels, theirs, strict=True))
        live_label = max(live_p, key=live_p.__getitem__)
        shadow_label = max(shadow_p, key=shadow_p.__getitem__)
        diff = max(abs(live_p.get(label, 0.0) - shadow_p.get(label, 0.0)) for label in {*live_p, *shadow_p})
        rows.append((live_label == shadow_label, live_label, shadow_label, diff))
    return rows
