"""Configuration of the feature-store stage."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FeaturesConfig(BaseModel):
    """How item and user features are computed and served by Feast."""

    history_length: int = Field(20, ge=1, description="Items kept in a user's recent history feature.")
    repo_path: str | None = Field(
        None, description="Feast repo to use; default: feature_store/feature_repo copied into the run dir."
    )
