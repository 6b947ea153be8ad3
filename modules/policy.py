"""Per-peer policies (`revenue-policy`): what the operator decided for one peer's channels.

Pure: the checks of a `revenue-policy set` request, the policy as data, and what it means
for the fee decision and the rebalancer; no RPC, no SQL, `now` passed in.

* strategy `dynamic` (the default): the plugin prices the peer's channels, inside the
  policy's [min_fee_ppm, max_fee_ppm] when given;
* `static`: the peer's channels keep `fee_ppm`; set at once when they differ, then held;
* `passive`: the plugin changes nothing on the peer's channels and never rebalances them;
* `rebalance`: `allow` (the default), `never`, `source-only` (never filled) or
  `destination-only` (never drawn from);
* `expires_at`: after it the policy is ignored by both loops and shown as expired, until
  it is set again or deleted.
"""
import dataclasses
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from modules.errors import UserError
from modules.rpc_params import PEER_ID_PATTERN, clip, json_type

DYNAMIC, STATIC, PASSIVE = "dynamic", "static", "passive"
STRATEGIES = (DYNAMIC, STATIC, PASSIVE)
ALLOW, NEVER, SOURCE_ONLY, DESTINATION_ONLY = "allow", "never", "source-only", "destination-only"
REBALANCE_MODES = (ALLOW, NEVER, SOURCE_ONLY, DESTINATION_ONLY)
MAX_FEE_PPM = 100_000               # the largest revenue-ops-max-fee-ppm accepts
MAX_EXPIRES_HOURS = 10 * 365 * 24   # ten years: beyond that, leave it without expiry
# A channel in one of these states is closing or closed: it makes no peer known.
CLOSING_STATES = ("CHANNELD_SHUTTING_DOWN", "CLOSINGD_SIGEXCHANGE", "CLOSINGD_COMPLETE",
                  "AWAITING_UNILATERAL", "FUNDING_SPEND_SEEN", "ONCHAIN", "CLOSED")


@dataclasses.dataclass(frozen=True)
class PeerPolicy:
    peer_id: str
    strategy: str = DYNAMIC
    fee_ppm: Optional[int] = None        # static only
    min_fee_ppm: Optional[int] = None    # dynamic only
    max_fee_ppm: Optional[int] = None    # dynamic only
    rebalance: str = ALLOW
    expires_at: Optional[float] = None
    updated_at: float = 0.0

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    @property
    def may_be_source(self) -> bool:
        return self.strategy != PASSIVE and self.rebalance in (ALLOW, SOURCE_ONLY)

    @property
    def may_be_destination(self) -> bool:
        return self.strategy != PASSIVE and self.rebalance in (ALLOW, DESTINATION_ONLY)

    def fee_text(self) -> str:
        """The fee part, as decisions name it: "peer policy: ..."."""
        if self.strategy == PASSIVE:
            return "peer policy: passive: the plugin leaves this peer's channels alone"
        if self.strategy == STATIC:
            return f"peer policy: static {self.fee_ppm} ppm"
        bounds = [f"min {self.min_fee_ppm} ppm" if self.min_fee_ppm is not None else "",
                  f"max {self.max_fee_ppm} ppm" if self.max_fee_ppm is not None else ""]
        return "peer policy: " + (", ".join(b for b in bounds if b) or "dynamic")

    def rebalance_text(self, role: str) -> str:
        """Why the channel may not take `role` ("source" or "destination")."""
        if self.strategy == PASSIVE:
            return "peer policy: passive: never rebalanced"
        if self.rebalance == NEVER:
            return "peer policy: rebalance never"
        return f"peer policy: rebalance {self.rebalance}: never a {role}"

    def to_dict(self, now: float) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["expired"] = not self.active(now)
        return d


def check_peer_id(value: Any, name: str = "peer_id") -> str:
    if not isinstance(value, str):
        raise UserError(f"{name} must be a node id string (66 hex characters), got {json_type(value)}"
                        + ("" if value is None else f" {clip(value)}"))
    if not PEER_ID_PATTERN.fullmatch(value):
        raise UserError(f"malformed node id {clip(value)}: {name} must be 66 hex characters "
                        f"starting 02 or 03")
    return value.lower()


def _choice(value: Any, name: str, choices: Tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, got {json_type(value)} {clip(value)}")
    return value


def _ppm(value: Any, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number of ppm, got {json_type(value)} {clip(value)}")
    if not 0 <= value <= MAX_FEE_PPM:
        raise UserError(f"{name} must be between 0 and {MAX_FEE_PPM} ppm, got {clip(value)}")
    return value


def _hours(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number of hours, got {json_type(value)} {clip(value)}")
    if not (math.isfinite(value) and 0 < value <= MAX_EXPIRES_HOURS):
        raise UserError(f"{name} must be more than 0 and at most {MAX_EXPIRES_HOURS} hours "
                        f"(ten years), got {clip(value)}")
    return float(value)


def build_policy(peer_id: Any, strategy: Any, fee_ppm: Any, min_fee_ppm: Any, max_fee_ppm: Any,
                 rebalance: Any, expires_hours: Any, now: float) -> PeerPolicy:
    """A `revenue-policy set` request checked in full: a UserError naming the first bad
    parameter, or the policy to store. Whether the peer is known is the caller's check."""
    peer = check_peer_id(peer_id)
    strategy = _choice(strategy, "strategy", STRATEGIES, DYNAMIC)
    fee, low, high = _ppm(fee_ppm, "fee_ppm"), _ppm(min_fee_ppm, "min_fee_ppm"), _ppm(max_fee_ppm, "max_fee_ppm")
    mode = _choice(rebalance, "rebalance", REBALANCE_MODES, ALLOW)
    hours = _hours(expires_hours, "expires_hours")
    if strategy == STATIC and fee is None:
        raise UserError("strategy static needs fee_ppm: the fee the plugin keeps on this peer's channels")
    if strategy != STATIC and fee is not None:
        raise UserError(f"fee_ppm is for strategy static only (strategy {strategy}); a dynamic fee "
                        f"takes min_fee_ppm and max_fee_ppm")
    if strategy != DYNAMIC and (low is not None or high is not None):
        which = "min_fee_ppm" if low is not None else "max_fee_ppm"
        raise UserError(f"{which} is for strategy dynamic only (strategy {strategy} "
                        f"{'keeps fee_ppm' if strategy == STATIC else 'changes no fee'})")
    if low is not None and high is not None and low > high:
        raise UserError(f"min_fee_ppm ({low}) must not exceed max_fee_ppm ({high})")
    if strategy == PASSIVE:
        if rebalance is not None and mode != NEVER:
            raise UserError(f"rebalance {mode} does not go with strategy passive: a passive peer's "
                            f"channels are never rebalanced")
        mode = NEVER
    return PeerPolicy(peer, strategy, fee, low, high, mode,
                      None if hours is None else now + hours * 3600, now)


def known_peers(channels: Iterable[Any]) -> set:
    """Peers with at least one channel that is not closing or closed."""
    return {c.peer_id for c in channels if c.state not in CLOSING_STATES}


def active_policies(policies: Iterable[PeerPolicy], now: float) -> Dict[str, PeerPolicy]:
    """peer id -> its policy, the expired ones left out."""
    return {p.peer_id: p for p in policies if p.active(now)}


def fee_bounds(min_fee_ppm: int, max_fee_ppm: int, policy: Optional[PeerPolicy]
               ) -> Tuple[int, int, Optional[str]]:
    """(floor, ceiling, note) of a dynamic peer's fee: the tighter of the options' and the
    policy's; where the policy contradicts the options, the peer's own bound wins (it is the
    more specific wish) and the note says so. None: no policy bound."""
    if policy is None or policy.strategy != DYNAMIC or (policy.min_fee_ppm is None
                                                        and policy.max_fee_ppm is None):
        return min_fee_ppm, max_fee_ppm, None
    low = max(min_fee_ppm, policy.min_fee_ppm) if policy.min_fee_ppm is not None else min_fee_ppm
    high = min(max_fee_ppm, policy.max_fee_ppm) if policy.max_fee_ppm is not None else max_fee_ppm
    note = policy.fee_text()
    if low > high:
        if policy.min_fee_ppm is not None and policy.min_fee_ppm > max_fee_ppm:
            low = high = policy.min_fee_ppm
            note += f" (above max-fee-ppm {max_fee_ppm}: the policy wins)"
        else:
            low = high = policy.max_fee_ppm
            note += f" (below min-fee-ppm {min_fee_ppm}: the policy wins)"
    return low, high, note


def rebalance_exclusions(channels: Iterable[Any], policies: Mapping[str, PeerPolicy]
                         ) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(scid -> why it is no source, scid -> why it is no destination) under the peers'
    active policies."""
    no_source: Dict[str, str] = {}
    no_destination: Dict[str, str] = {}
    for c in channels:
        policy = policies.get(c.peer_id)
        if policy is None:
            continue
        if not policy.may_be_source:
            no_source[c.short_channel_id] = policy.rebalance_text("source")
        if not policy.may_be_destination:
            no_destination[c.short_channel_id] = policy.rebalance_text("destination")
    return no_source, no_destination


ACTIONS = ("set", "get", "list", "delete")


def check_action(action: Any, peer_id: Any, settings: Mapping[str, Any]) -> str:
    """The `revenue-policy` sub-command, and that it got what it takes: set <peer_id> and its
    settings, get <peer_id>, list, delete <peer_id>."""
    if action is None:
        raise UserError(f"action is missing: revenue-policy takes {', '.join(ACTIONS)}")
    if action not in ACTIONS:
        raise UserError(f"action must be one of {', '.join(ACTIONS)}, got {json_type(action)} {clip(action)}")
    if action == "list" and peer_id is not None:
        raise UserError("peer_id is not for list: it lists every peer's policy")
    if action != "list" and peer_id is None:
        raise UserError(f"peer_id is missing: revenue-policy {action} <peer_id>")
    if action != "set":
        given = [name for name, value in settings.items() if value is not None]
        if given:
            raise UserError(f"{given[0]} is for set only, not for {action}")
    return action
