"""Seeds derived from names and numbers, the same in every process (unlike ``hash()``)."""

from __future__ import annotations

import hashlib


def mix_seed(*parts: object) -> int:
    """A stable 63-bit seed from a tuple of ints/strings (unlike hash(), the same in every process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
