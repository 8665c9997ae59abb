"""The settings tree: profiles, YAML files, overrides, errors."""

from __future__ import annotations

import pytest

from gr2.config import ConfigError, available_profiles, load_config


def test_profiles_exist_and_load() -> None:
    assert {"smoke", "default"} <= set(available_profiles())
    for name in ("smoke", "default"):
        assert load_config(name).profile == name


def test_yaml_file_and_overrides_apply_in_order(tmp_path) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text("seed: 3\ndata:\n  min_history: 2\n")
    cfg = load_config("smoke", user, ["seed=9"])
    assert cfg.seed == 9 and cfg.data.min_history == 2
    assert cfg.features.history_length == load_config("smoke").features.history_length


@pytest.mark.parametrize("override, message", [
    ("nonsense", "section.field=value"),
    ("data.no_such_field=1", "no_such_field"),
    ("data.min_history=zero", "min_history"),
])
def test_bad_overrides_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", overrides=[override])


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(ConfigError, match="smoke"):
        load_config("nope")
