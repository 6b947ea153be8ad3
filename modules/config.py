"""Options table and the frozen Config built from it.

One table drives three things: the options the plugin registers with lightningd,
the validation of the values lightningd hands back in `init` (and in `setconfig`, for
the options that may change while the plugin runs), and the README's options list. An
option `revenue-ops-foo-bar` becomes the field `Config.foo_bar`.
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

PREFIX = "revenue-ops-"
DEFAULT_DB_FILENAME = "revenue_ops.db"
MIN_METRICS_PORT = 1024   # below it a port needs root: 0 means off, 1..1023 are refused


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    name: str                 # without the prefix
    default: Any
    kind: str                 # "int", "float", "bool" or "str"
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    # `lightning-cli setconfig` may change it while the plugin runs (the loops take the new
    # value at their next cycle); False for what is only read at start-up
    dynamic: bool = True

    @property
    def full_name(self) -> str:
        return PREFIX + self.name

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")

    @property
    def cln_type(self) -> str:
        # Every option travels as a string and is checked here. lightningd checks an "int" or
        # "bool" option itself, and a value it cannot parse (`=abc`) makes lightningd refuse
        # to start at all (seen on v26.06.6): the node would stay down for a plugin typo.
        return "string"

    def default_text(self) -> str:
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)

    def range_text(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "text"
        if self.minimum is None and self.maximum is None:
            return "any " + self.kind
        return f"{self.kind} from {_fmt(self.minimum)} to {_fmt(self.maximum)}"


def _fmt(bound: Optional[float]) -> str:
    if bound is None:
        return "unbounded"
    return str(int(bound)) if float(bound).is_integer() else str(bound)


OPTIONS: Tuple[OptionSpec, ...] = (
    # --- general -----------------------------------------------------------
    OptionSpec("db-path", "", "str",
               "SQLite database file; empty means <lightning-dir>/revenue_ops.db", dynamic=False),
    OptionSpec("dry-run", False, "bool",
               "decide and record everything, but never set fees or start sling jobs"),
    OptionSpec("rpc-timeout-seconds", 60, "int",
               "give up on a node RPC call that has not answered after this long", 1, 3600),
    OptionSpec("hydration-page-size", 10000, "int",
               "forwards read per listforwards page (bounds memory on any history size)",
               100, 100000),
    OptionSpec("metrics-port", 0, "int",
               "TCP port of the Prometheus metrics endpoint, on 127.0.0.1 only; 0 turns it off, "
               "otherwise 1024 to 65535 (needs the prometheus-client package)", 0, 65535,
               dynamic=False),   # the endpoint is opened once, at start-up
    # --- loops -------------------------------------------------------------
    OptionSpec("flow-interval-seconds", 900, "int",
               "how often the flow analysis runs", 10, 86400),
    OptionSpec("fee-interval-seconds", 1800, "int",
               "how often the fee controller runs", 10, 86400),
    OptionSpec("rebalance-interval-seconds", 3600, "int",
               "how often the rebalancer runs", 10, 86400),
    OptionSpec("loop-jitter-percent", 10, "int",
               "random spread added to each loop interval, in percent", 0, 50),
    # --- flow analysis -----------------------------------------------------
    OptionSpec("flow-window-days", 7, "int",
               "days of forwarding history the flow analysis looks at", 1, 365),
    OptionSpec("flow-ratio-threshold", 0.3, "float",
               "flow ratio above which a channel is SOURCE (below its negative: SINK)",
               0.01, 1.0),
    OptionSpec("idle-daily-volume-sats", 1000, "int",
               "a channel moving less than this per day (in + out) is IDLE", 0, 10**9),
    OptionSpec("flow-ema-alpha", 0.5, "float",
               "weight of the newest cycle in the smoothed daily volume and flow ratio",
               0.01, 1.0),
    # --- fees --------------------------------------------------------------
    OptionSpec("min-fee-ppm", 1, "int", "lowest fee rate the plugin sets", 0, 100000),
    OptionSpec("max-fee-ppm", 2500, "int", "highest fee rate the plugin sets", 1, 100000),
    OptionSpec("fee-base-msat", 0, "int", "base fee set with every fee change", 0, 100000),
    OptionSpec("demand-lookback-days", 14, "int",
               "days of forwarding history (settled and refused for lack of balance) each "
               "channel's demand is learnt from", 1, 365),
    OptionSpec("demand-half-life-hours", 72.0, "float",
               "age at which a forward counts half as much as a new one when learning demand "
               "(shorter follows demand shifts sooner, longer is steadier)", 6, 8760),
    OptionSpec("htlc-congestion-threshold", 0.8, "float",
               "share of HTLC slots in use at which a channel is priced at the ceiling",
               0.05, 1.0),
    OptionSpec("fee-change-min-percent", 5.0, "float",
               "smallest fee change worth a gossip broadcast, in percent", 0, 100),
    OptionSpec("fee-broadcast-min-interval-seconds", 21600, "int",
               "shortest time between two fee broadcasts of one channel", 0, 7 * 86400),
    OptionSpec("manage-htlc-max", False, "bool",
               "set each channel's htlc_maximum_msat from its spendable balance, in coarse bands, "
               "so senders are not offered amounts it cannot forward (sent with fee changes, in "
               "the same gossip budget)"),
    # --- rebalancing -------------------------------------------------------
    OptionSpec("rebalance-floor-sats", 500000, "int",
               "smallest liquidity target of a channel", 0, 10**10),
    OptionSpec("rebalance-target-ratio", 0.5, "float",
               "largest liquidity target as a share of capacity", 0.05, 0.95),
    OptionSpec("rebalance-target-days", 3.0, "float",
               "days of outbound volume a channel's target holds", 0.1, 90),
    OptionSpec("rebalance-horizon-days", 7.0, "float",
               "days over which moved liquidity is expected to earn", 0.5, 90),
    OptionSpec("rebalance-min-profit-sats", 10, "int",
               "expected profit a rebalance must reach to start", 0, 10**8),
    OptionSpec("rebalance-max-amount-sats", 5000000, "int",
               "largest amount one rebalance job may move", 1000, 10**10),
    OptionSpec("rebalance-chunk-sats", 100000, "int",
               "amount sling tries per payment", 1000, 10**9),
    OptionSpec("rebalance-watch-interval-seconds", 15, "int",
               "how often running sling jobs are checked against their amount, budget and timeout",
               2, 3600),
    OptionSpec("rebalance-job-timeout-minutes", 120, "int",
               "a sling job that has not reached its target by then is stopped", 1, 10080),
    OptionSpec("daily-budget-sats", 5000, "int",
               "most rebalance fees paid (and reserved) in any 24 hours", 0, 10**9),
    OptionSpec("min-wallet-reserve-sats", 1000000, "int",
               "no rebalancing while on-chain plus channel funds are below this", 0, 10**12),
    OptionSpec("futility-max-failures", 10, "int",
               "failures after which a destination is skipped", 1, 10000),
    OptionSpec("futility-cooldown-hours", 48.0, "float",
               "how long the futility breaker skips a destination", 0.1, 8760),
)

OPTIONS_BY_NAME: Dict[str, OptionSpec] = {o.full_name: o for o in OPTIONS}


class ConfigError(ValueError):
    """An option value the plugin cannot run with; the message names the option."""


Config = dataclasses.make_dataclass(
    "Config",
    [(o.field, Any) for o in OPTIONS],
    frozen=True,
    namespace={"__doc__": "Validated plugin settings; see modules.config.OPTIONS."},
)


def parse_value(spec: OptionSpec, raw: Any) -> Any:
    """Turns what lightningd sent (typed, or a string for floats) into a checked value."""
    if raw is None:
        raw = spec.default
    try:
        if spec.kind == "bool":
            value = _parse_bool(raw)
        elif spec.kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        elif spec.kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{spec.full_name}: {raw!r} is not valid; expected {spec.range_text()}")
    if spec.kind in ("int", "float"):
        too_low = spec.minimum is not None and value < spec.minimum
        too_high = spec.maximum is not None and value > spec.maximum
        if too_low or too_high:
            raise ConfigError(f"{spec.full_name}: {value} is out of range; expected {spec.range_text()}")
    return value


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def build_config(raw_options: Dict[str, Any], lightning_dir: str) -> "Config":
    """Validates every option; raises ConfigError naming the first bad one."""
    unknown = [name for name in raw_options if name.startswith(PREFIX) and name not in OPTIONS_BY_NAME]
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]}")
    values = {o.field: parse_value(o, raw_options.get(o.full_name)) for o in OPTIONS}
    if values["min_fee_ppm"] > values["max_fee_ppm"]:
        raise ConfigError(
            f"revenue-ops-min-fee-ppm ({values['min_fee_ppm']}) must not exceed "
            f"revenue-ops-max-fee-ppm ({values['max_fee_ppm']})")
    if values["rebalance_chunk_sats"] > values["rebalance_max_amount_sats"]:
        raise ConfigError(
            "revenue-ops-rebalance-chunk-sats must not exceed revenue-ops-rebalance-max-amount-sats")
    if 0 < values["metrics_port"] < MIN_METRICS_PORT:
        raise ConfigError(f"revenue-ops-metrics-port: {values['metrics_port']} is a privileged port; "
                          f"expected 0 (off) or an int from {MIN_METRICS_PORT} to 65535")
    if not values["db_path"]:
        values["db_path"] = os.path.join(lightning_dir, DEFAULT_DB_FILENAME)
    return Config(**values)


def config_with(config: "Config", name: str, raw: Any) -> "Config":
    """`config` with one option changed at runtime (`setconfig`), checked as at start-up:
    the value alone and with the others. Raises ConfigError naming the option, its allowed
    range and the value that stays."""
    spec = OPTIONS_BY_NAME.get(name)
    if spec is None:
        raise ConfigError(f"unknown option {name}")
    old = getattr(config, spec.field)
    if not spec.dynamic:
        raise ConfigError(f"{name} is read only at start-up; it stays {_shown(old)} until a restart")
    if raw is None:   # lightningd always sends one; None would mean the default here
        raise ConfigError(f"{name} needs a value ({spec.range_text()}); it stays {_shown(old)}")
    raw_options = {o.full_name: getattr(config, o.field) for o in OPTIONS}
    raw_options[name] = raw
    try:
        return build_config(raw_options, os.path.dirname(config.db_path))
    except ConfigError as e:
        raise ConfigError(f"{e}; {name} stays {_shown(old)}")


def option_values(config: "Config") -> Dict[str, Any]:
    """The options in force, by their names."""
    return {o.full_name: getattr(config, o.field) for o in OPTIONS}


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def default_config(lightning_dir: str = ".", **overrides: Any) -> "Config":
    """A Config of defaults with fields replaced; for tests, benches and the simulator."""
    return dataclasses.replace(build_config({}, lightning_dir), **overrides)


def manifest_options() -> List[Dict[str, Any]]:
    """(name, default, description, cln type) for Plugin.add_option."""
    result = []
    for o in OPTIONS:
        result.append({"name": o.full_name, "default": o.default_text(),
                       "description": f"{o.description} ({o.range_text()})",
                       "opt_type": o.cln_type, "dynamic": o.dynamic})
    return result


def options_markdown() -> str:
    """The README's options table: `python -m modules.config`."""
    lines = ["| option | default | allowed | at runtime | what it does |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        default = o.default_text()
        shown = f"`{default}`" if default != "" else "(empty)"
        runtime = "setconfig" if o.dynamic else "restart"
        lines.append(f"| `{o.full_name}` | {shown} | {o.range_text()} | {runtime} | {o.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_markdown())
