"""The parameter checks of the RPC methods (the plugin-process tests are in test_plugin_errors.py)."""
import pytest

from modules.errors import UserError
from modules.rpc_params import bool_param, check_binding, clip, sats_param, scid_param


@pytest.mark.parametrize("scid", ["103x1x0", "16777215x16777215x65535", "0x0x0"])
def test_a_short_channel_id_passes_as_given(scid):
    assert scid_param(scid) == scid


@pytest.mark.parametrize("scid", ["103x1x0\n", "103x1x0 ", " 103x1x0", "103x1", "103x1x0x2", "103:1:0",
                                  "\u0661\u0660\u0663x1x0", "123456789x1x0", "1x1x123456", ""])
def test_anything_else_is_malformed(scid):
    with pytest.raises(UserError, match="malformed short channel id .*: scid must be BLOCKxTXxOUTPUT") as err:
        scid_param(scid)
    assert err.value.code == -32602


@pytest.mark.parametrize("value,kind", [(["1x1x1"], "an array"), ({}, "an object"), (5, "a number"),
                                        (True, "a boolean")])
def test_a_scid_of_another_type_says_which(value, kind):
    with pytest.raises(UserError, match=f"scid must be a short channel id string like 103x1x0, got {kind}$"):
        scid_param(value)


def test_clip_cuts_a_long_value_and_says_how_long_it_was():
    assert clip("abc") == "'abc'"
    clipped = clip("y" * 100_000)
    assert clipped.startswith("'yyyy") and clipped.endswith("... (100002 characters)") and len(clipped) < 80


def test_sats_and_bool():
    assert sats_param(None, "amount_sats") is None
    assert sats_param(5, "amount_sats", 10) == 5
    with pytest.raises(UserError, match=r"amount_sats must be between 1 and 10 \(opt\), got 11"):
        sats_param(11, "amount_sats", 10, "opt")
    with pytest.raises(UserError, match="whole number of sats, got a number 2.5"):
        sats_param(2.5, "amount_sats")
    assert bool_param(None, "force", False) is False and bool_param(True, "force", False) is True
    with pytest.raises(UserError, match="force must be true or false, got a number 1"):
        bool_param(1, "force", False)


def test_binding_names_the_stray_parameter():
    check_binding("m", ("scid",), (), {})
    with pytest.raises(UserError, match="unknown parameters 'a', 'b': m takes scid"):
        check_binding("m", ("scid",), (), {"b": 1, "a": 2})
    with pytest.raises(UserError, match=r"too many parameters: m takes at most 1 \(scid\), got 3"):
        check_binding("m", ("scid",), (1, 2), {})


def test_a_huge_integer_is_described_not_printed():
    assert clip(10 ** 38) == "100000000000000000000000000000000000000"
    assert clip(2 ** 20000) == "a number of 20001 bits"
    assert clip(-(2 ** 20000)) == "a negative number of 20001 bits"
