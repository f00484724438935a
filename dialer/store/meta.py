"""What both stores derive from their `meta` table alone: the headers, whether the leads
were imported, and the import's signature."""

from __future__ import annotations

import json
from typing import Any


class MetaReads:
    """Mixed into a store that has `get_meta(key) -> str | None`."""

    def get_meta(self, key: str) -> str | None:
        raise NotImplementedError

    @property
    def headers(self) -> list[str]:
        raw = self.get_meta("headers")
        return [] if raw is None else list(json.loads(raw))

    @property
    def is_imported(self) -> bool:
        return self.get_meta("signature") is not None

    def signature(self) -> dict[str, Any] | None:
        raw = self.get_meta("signature")
        return None if raw is None else dict(json.loads(raw))
