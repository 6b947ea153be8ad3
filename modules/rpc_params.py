"""The parameters of our RPC methods, checked before any work is done.

pyln-client binds a call's params to the method's Python signature; an unknown keyword
or one positional too many fails inside pyln and is answered -32600 "Invalid Request"
with a Python traceback. Our methods therefore also accept `*extra, **unknown` (so pyln's
binding never fails) and hand them to `check_binding`, which answers -32602 naming the
parameter. Each parameter's JSON type is then checked here; the errors echo at most a
short prefix of what was sent.
"""
import re
from typing import Any, Dict, Optional, Sequence, Tuple

from modules.errors import UserError

# BOLT 7: block height and transaction index are 3 bytes (at most 8 digits), the output
# index 2 bytes (at most 5). Matched in full: "103x1x0\n" is not a short channel id.
SCID_PATTERN = re.compile(r"[0-9]{1,8}x[0-9]{1,8}x[0-9]{1,5}")
# A node id: a compressed public key, 33 bytes in hex (ASCII classes: no other digits match).
PEER_ID_PATTERN = re.compile(r"0[23][0-9a-fA-F]{64}")
MAX_SATS = 21_000_000 * 100_000_000   # every bitcoin there will ever be
ECHO_CHARS = 40


def clip(value: Any) -> str:
    """A value as an error message shows it: its repr, cut to a short prefix."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # printing a huge integer in full takes time quadratic in its digits: say its size
        return f"{'a negative' if value < 0 else 'a'} number of {value.bit_length()} bits"
    text = repr(value)
    if len(text) <= ECHO_CHARS:
        return text
    return f"{text[:ECHO_CHARS]}... ({len(text)} characters)"


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages that say what was sent."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_binding(method: str, names: Sequence[str], extra: Sequence[Any], unknown: Dict[str, Any]) -> None:
    """Refuses positional params beyond `names` and keywords not among them."""
    takes = ", ".join(names) if names else "no parameters"
    if unknown:
        listed = ", ".join(clip(k) for k in sorted(unknown))
        noun = "parameter" if len(unknown) == 1 else "parameters"
        raise UserError(f"unknown {noun} {listed}: {method} takes {takes}")
    if extra:
        given = len(names) + len(extra)
        if not names:
            raise UserError(f"too many parameters: {method} takes no parameters, got {given}")
        raise UserError(f"too many parameters: {method} takes at most {len(names)} ({takes}), got {given}")


def scid_param(value: Any, name: str = "scid") -> Optional[str]:
    """An optional short channel id (None when not given)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{name} must be a short channel id string like 103x1x0, got {json_type(value)}")
    if not SCID_PATTERN.fullmatch(value):
        raise UserError(f"malformed short channel id {clip(value)}: {name} must be "
                        f"BLOCKxTXxOUTPUT like 103x1x0")
    return value


def sats_param(value: Any, name: str, max_sats: int = MAX_SATS, max_option: str = "") -> Optional[int]:
    """An optional whole number of sats from 1 to max_sats (None when not given)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number of sats, got {json_type(value)} {clip(value)}")
    if not 0 < value <= max_sats:
        source = f" ({max_option})" if max_option else ""
        raise UserError(f"{name} must be between 1 and {max_sats}{source}, got {clip(value)}")
    return value


def bool_param(value: Any, name: str, default: bool) -> bool:
    """An optional true/false (the default when not given)."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {json_type(value)} {clip(value)}")
    return value


def whole_param(value: Any, name: str, low: int, high: int, default: Optional[int],
                meaning: str = "") -> Optional[int]:
    """An optional whole number from low to high (the default when not given); `meaning`
    says what a special value means, e.g. "0: the whole history"."""
    if value is None:
        return default
    extra = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number from {low} to {high}{extra},"
                        f" got {json_type(value)} {clip(value)}")
    if not low <= value <= high:
        raise UserError(f"{name} must be between {low} and {high}{extra}, got {clip(value)}")
    return value


def choice_param(value: Any, name: str, choices: Sequence[str], default: str) -> str:
    """An optional word among `choices` (the default when not given)."""
    if value is None:
        return default
    listed = ", ".join(choices)
    if not isinstance(value, str):
        raise UserError(f"{name} must be one of {listed}, got {json_type(value)} {clip(value)}")
    if value not in choices:
        raise UserError(f"{name} must be one of {listed}, got {clip(value)}")
    return value


def peer_or_scid_param(value: Any, name: str = "id") -> Optional[Tuple[str, str]]:
    """An optional peer id or short channel id: ("peer", lowercase id) or ("channel", scid)."""
    if value is None:
        return None
    accepts = "a peer id (66 hex characters starting 02 or 03) or a short channel id like 103x1x0"
    if not isinstance(value, str):
        raise UserError(f"{name} must be {accepts}, got {json_type(value)}")
    if SCID_PATTERN.fullmatch(value):
        return ("channel", value)
    if PEER_ID_PATTERN.fullmatch(value):
        return ("peer", value.lower())
    raise UserError(f"malformed id {clip(value)}: {name} must be {accepts}")
