"""One settings tree for every stage, with named profiles and per-field overrides.

A profile is a YAML file in ``gr2/configs/`` (``smoke`` for tests, ``default`` for the demo). A user
YAML file may override any subset of it, and ``--set section.field=value`` overrides single fields:

>>> cfg = load_config("smoke", overrides=["seed=7", "data.min_history=3"])
>>> cfg.seed, cfg.data.min_history
(7, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gr2.data.config import DataConfig
from gr2.features.config import FeaturesConfig
from gr2.models.serve_config import ServeConfig
from gr2.rerank.config import RerankConfig
from gr2.sid.config import SIDConfig
from gr2.train.config import TrainConfig

PROFILES_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A profile, YAML file or override that does not fit the settings tree."""


class GR2Config(BaseModel):
    """The whole settings tree; each section belongs to one stage."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field("default", description="Name of the profile this config was built from.")
    run_dir: str = Field("runs/default", description="Where every stage writes its artefacts.")
    seed: int = Field(42, description="Seed shared by every stage.")
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    sid: SIDConfig = Field(default_factory=SIDConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)


def available_profiles() -> list[str]:
    """Names of the bundled profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"a.b=3"`` into ``{"a": {"b": 3}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _unknown_keys(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names in ``data`` that ``model`` has no field for (nested sections included)."""
    unknown = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown.append(prefix + key)
            continue
        sub = field.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            unknown += _unknown_keys(value, sub, f"{prefix}{key}.")
    return unknown


def load_config(
    profile: str = "default",
    path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> GR2Config:
    """Build the settings tree: profile, then an optional YAML file, then ``key=value`` overrides."""
    profile_file = PROFILES_DIR / f"{profile}.yaml"
    if not profile_file.exists():
        raise ConfigError(f"unknown profile {profile!r}; choose one of {available_profiles()}")
    data = _deep_merge({"profile": profile}, _read_yaml(profile_file))
    if path is not None:
        data = _deep_merge(data, _read_yaml(Path(path)))
    for override in overrides or []:
        data = _deep_merge(data, parse_override(override))
    unknown = _unknown_keys(data, GR2Config)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; see `gr2 <stage> --help` or gr2/configs/*.yaml")
    try:
        return GR2Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid configuration: {err}") from err
