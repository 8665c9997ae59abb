"""Configuration of the semantic-ID tokenizer (filled in by the SID stage)."""

from __future__ import annotations

from pydantic import BaseModel


class SIDConfig(BaseModel):
    """RQ-VAE semantic-ID tokenizer settings."""
