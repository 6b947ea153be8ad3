"""Checking a live `forward_event` before anything of it is stored.

A notification is not a listforwards page: nothing pages it again to correct it, and a
wrong amount would sit in the flow rollups. So every field the database keeps is checked
here, and an event with one bad field is refused whole, naming that field. Pure: the
service logs the refusal.

Core Lightning sends one event per status change: `offered` (with created_index),
then `settled` or `failed` (with updated_index, resolved_time, no created_index), or
`local_failed` (refused here: failcode, no out_msat).
"""
import math
from typing import Any, NamedTuple, Optional, Union

from modules.models import Forward
from modules.rpc_params import SCID_PATTERN, clip

STATUSES = ("offered", "settled", "local_failed", "failed")


class Rejected(NamedTuple):
    """Why an event was refused: the field and what is wrong with it."""
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field} {self.problem}"


class _Bad(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(field, problem)
        self.rejected = Rejected(field, problem)


def check_forward_event(payload: Any) -> Union[Forward, Rejected]:
    """The Forward of a well-formed event (any of CLN's statuses), or the bad field."""
    if not isinstance(payload, dict):
        return Rejected("forward_event", f"is not an object: {clip(payload)}")
    try:
        return _forward(payload)
    except _Bad as bad:
        return bad.rejected


def _forward(event: dict) -> Forward:
    status = event.get("status")
    if status not in STATUSES:
        raise _Bad("status", "is missing" if status is None else f"is unknown: {clip(status)}")
    settled = status == "settled"
    in_msat = _msat(event, "in_msat", required=True)
    out_msat = _msat(event, "out_msat", required=settled)
    fee_msat = _msat(event, "fee_msat", required=False)
    if out_msat is not None:
        if out_msat > in_msat:
            raise _Bad("out_msat", f"exceeds in_msat ({out_msat} > {in_msat})")
        if fee_msat is not None and fee_msat != in_msat - out_msat:
            raise _Bad("fee_msat", f"is not in_msat - out_msat ({fee_msat} != {in_msat - out_msat})")
        fee_msat = in_msat - out_msat
    received_time = _time(event, "received_time", required=True)
    resolved_time = _time(event, "resolved_time", required=False)
    return Forward(
        _scid(event, "in_channel", required=True),
        _count(event, "in_htlc_id", required=True),
        _scid(event, "out_channel", required=settled),
        in_msat, out_msat or 0, fee_msat or 0, status,
        received_time, resolved_time,
        _count(event, "created_index", required=False),
        _count(event, "updated_index", required=False),
        _count(event, "failcode", required=status == "local_failed"))


def _present(event: dict, field: str, required: bool) -> Any:
    value = event.get(field)
    if value is None and required:
        raise _Bad(field, "is missing")
    return value


def _msat(event: dict, field: str, required: bool) -> Optional[int]:
    """A non-negative whole msat: a JSON integer, or "<n>msat" as nodes before v23.05 send."""
    value = _present(event, field, required)
    if value is None:
        return None
    if isinstance(value, str) and value.endswith("msat") and value[:-4].isascii() and value[:-4].isdigit():
        value = int(value[:-4])
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(field, f"is not a whole number of msat: {clip(value)}")
    if value < 0:
        raise _Bad(field, f"is negative: {clip(value)}")
    return value


def _count(event: dict, field: str, required: bool) -> Optional[int]:
    """An htlc id or index: a non-negative JSON integer."""
    value = _present(event, field, required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(field, f"is not a whole number: {clip(value)}")
    if value < 0:
        raise _Bad(field, f"is negative: {clip(value)}")
    return value


def _time(event: dict, field: str, required: bool) -> Optional[float]:
    value = _present(event, field, required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _Bad(field, f"is not a unix time: {clip(value)}")
    return float(value)


def _scid(event: dict, field: str, required: bool) -> Optional[str]:
    value = _present(event, field, required)
    if value is None:
        return None
    if not isinstance(value, str) or not SCID_PATTERN.fullmatch(value):
        raise _Bad(field, f"is not a short channel id: {clip(value)}")
    return value
