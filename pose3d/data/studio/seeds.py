"""One stable seed for everything the studio draws at random."""

from __future__ import annotations

import hashlib


def stable_seed(*parts) -> int:
    """A 32-bit seed from the parts' text, ``"p0:p1:..."`` (the same on every machine and Python
    run, unlike ``hash()``): subjects, takes, rigs and renders each draw from their own stream."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")
