"""Configuration of the re-ranking task (filled in by the rerank stage)."""

from __future__ import annotations

from pydantic import BaseModel


class RerankConfig(BaseModel):
    """Legacy pre-ranker, samples, prompt format and evaluation settings."""
