"""Errors of the SID stage: each names the offending items so that the catalog can be fixed."""

from __future__ import annotations

from collections.abc import Iterable


class SIDError(ValueError):
    """Base class of SID-stage input errors."""


class EmptyCatalogError(SIDError):
    """The catalog (or the embeddings given for it) holds no item."""


class EmptyTextError(SIDError):
    """Some items have no text to encode."""

    def __init__(self, item_ids: Iterable[int]):
        self.item_ids = [int(i) for i in item_ids]
        shown = ", ".join(map(str, self.item_ids[:20])) + (" ..." if len(self.item_ids) > 20 else "")
        super().__init__(
            f"{len(self.item_ids)} item(s) have no text (title, categories, year and text all empty): "
            f"item_id {shown}; fix the catalog or set sid.allow_empty_text=true to encode them as 'item <id>'")


class BadEmbeddingsError(SIDError):
    """Embeddings that are NaN/inf, mis-shaped or do not match the catalog."""

    def __init__(self, message: str, item_ids: Iterable[int] = ()):
        self.item_ids = [int(i) for i in item_ids]
        if self.item_ids:
            shown = ", ".join(map(str, self.item_ids[:20])) + (" ..." if len(self.item_ids) > 20 else "")
            message = f"{message}: item_id {shown}"
        super().__init__(message)


def format_ids(ids: Iterable[int], limit: int = 20) -> str:
    """``1, 2, 3 ...`` for error messages."""
    ids = [int(i) for i in ids]
    return ", ".join(map(str, ids[:limit])) + (" ..." if len(ids) > limit else "")
