"""Configuration of the training stages (filled in by the training stages)."""

from __future__ import annotations

from pydantic import BaseModel


class TrainConfig(BaseModel):
    """Model factory and staged-training settings."""
