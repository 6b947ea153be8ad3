import dataclasses

import pytest

from modules.config import OPTIONS, ConfigError, build_config, manifest_options


def test_defaults_build_and_db_path_goes_inside_the_network_dir():
    config = build_config({}, "/home/op/.lightning/bitcoin")
    assert config.db_path == "/home/op/.lightning/bitcoin/revenue_ops.db"
    assert config.dry_run is False
    assert config.flow_window_days == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dry_run = True


def test_values_arrive_typed_or_as_strings_like_lightningd_sends_them():
    config = build_config({"revenue-ops-dry-run": True, "revenue-ops-max-fee-ppm": 900,
                           "revenue-ops-demand-half-life-hours": "48.5",
                           "revenue-ops-db-path": "/tmp/x.db"}, "/ld")
    assert config.dry_run is True and config.max_fee_ppm == 900
    assert config.demand_half_life_hours == 48.5 and config.db_path == "/tmp/x.db"


@pytest.mark.parametrize("name,value,expected", [
    ("revenue-ops-flow-window-days", 0, "revenue-ops-flow-window-days: 0 is out of range; expected int from 1 to 365"),
    ("revenue-ops-flow-ratio-threshold", "abc", "revenue-ops-flow-ratio-threshold: 'abc' is not valid; expected float from 0.01 to 1"),
    ("revenue-ops-max-fee-ppm", "12.5", "revenue-ops-max-fee-ppm: '12.5' is not valid"),
    ("revenue-ops-flow-ratio-threshold", "nan", "revenue-ops-flow-ratio-threshold: 'nan' is not valid"),
    ("revenue-ops-dry-run", "maybe", "revenue-ops-dry-run: 'maybe' is not valid; expected true or false"),
])
def test_a_bad_value_names_the_option_and_the_allowed_range(name, value, expected):
    with pytest.raises(ConfigError) as e:
        build_config({name: value}, "/ld")
    assert str(e.value).startswith(expected)


def test_min_fee_above_max_fee_is_refused():
    with pytest.raises(ConfigError, match="min-fee-ppm .*500.* must not exceed .*max-fee-ppm .*100"):
        build_config({"revenue-ops-min-fee-ppm": 500, "revenue-ops-max-fee-ppm": 100}, "/ld")


def test_every_option_is_registered_with_a_lightningd_type_and_a_valid_default():
    registered = {o["name"]: o for o in manifest_options()}
    assert len(registered) == len(OPTIONS)
    for name, option in registered.items():
        assert name.startswith("revenue-ops-")
        # strings only: lightningd would refuse to start on a typed option it cannot parse
        assert option["opt_type"] == "string" and isinstance(option["default"], str)
    build_config({name: o["default"] for name, o in registered.items()}, "/ld")
