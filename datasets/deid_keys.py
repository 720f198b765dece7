"""Keyed pseudonyms, UIDs and date shifts: HMAC-SHA256 with the site key.

Each use has its own label in the message, so a UID hash can never be replayed
as a pseudonym or a date shift. The results are stable for one key (re-ingest
gives the same values) and cannot be reversed or recomputed without it.
"""

from __future__ import annotations

import hashlib
import hmac

from insitu.errors import ConfigError

# Dates move back by 1 to 10 years (whole days), never 0: a shifted date always
# differs from the original, and one subject's dates all move by the same amount.
SHIFT_MIN_DAYS = 365
SHIFT_MAX_DAYS = 3650
MIN_KEY_BYTES = 16
_UID_CACHE_SIZE = 100_000


class KeyedHasher:
    """Derives every replacement value from one site key."""

    def __init__(self, site_key: bytes) -> None:
        if not isinstance(site_key, bytes) or len(site_key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the de-identification site key must be at least {MIN_KEY_BYTES} random bytes "
                "(the node's private/ site secret); got "
                f"{len(site_key) if isinstance(site_key, bytes) else type(site_key).__name__}"
            )
        self._key = site_key
        self._uids: dict[str, str] = {}

    def digest(self, label: str, value: str) -> bytes:
        """HMAC-SHA256 of ``label NUL value``."""
        msg = label.encode("ascii") + b"\0" + value.encode("utf-8")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.<128-bit int>``: a valid UID (at most 44 characters) for the original."""
        original = str(original).strip(" \0")
        new = self._uids.get(original)
        if new is None:
            new = "2.25." + str(int.from_bytes(self.digest("uid", original)[:16], "big"))
            if len(self._uids) >= _UID_CACHE_SIZE:
                self._uids.clear()
            self._uids[original] = new
        return new

    def pseudonym(self, subject_key: str) -> str:
        """``sub-`` and 12 hex digits (48 bits) for a patient."""
        return "sub-" + self.digest("subject", subject_key.strip()).hex()[:12]

    def shift_days(self, subject_key: str) -> int:
        """The subject's date shift in days: negative, between the two limits."""
        n = int.from_bytes(self.digest("date-shift", subject_key.strip())[:8], "big")
        return -(SHIFT_MIN_DAYS + n % (SHIFT_MAX_DAYS - SHIFT_MIN_DAYS + 1))
