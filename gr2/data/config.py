"""Configuration of the data stage: fetch, validate, split."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DataConfig(BaseModel):
    """Where the catalog comes from and how it is checked and split.

    NOTE: defaults are for MovieLens 100K; any catalog in the canonical schema works
    (``gr2 data import`` with a column mapping).
    """

    # Parameters that control where data comes from
    dataset: str = Field("movielens-100k", description="Named dataset for `gr2 data fetch`.")
    source_path: str | None = Field(
        None, description="Existing local copy to read first (GroupLens or RecBole layout)."
    )
    # Parameters that control validation
    min_history: int = Field(5, ge=1, description="Minimum interactions per user (items).")
    rating_min: float = Field(0.0, description="Lowest plausible rating when ratings are present.")
    rating_max: float = Field(5.0, description="Highest plausible rating when ratings are present.")
    timestamp_min: int = Field(
        631152000, description="Earliest plausible timestamp (unix seconds; 1990-01-01)."
    )
    timestamp_max: int = Field(
        4102444800, description="Latest plausible timestamp (unix seconds; 2100-01-01)."
    )
    year_min: int = Field(1800, description="Earliest plausible item year (when the catalog has years).")
    year_max: int = Field(2100, description="Latest plausible item year.")
    # Parameters that control the split
    kcore: int = Field(0, ge=0, description="k-core filter before splitting (0 = off).")
    max_users: int | None = Field(
        None, ge=1, description="Keep only the first N users by id (smoke runs); None = all."
    )
