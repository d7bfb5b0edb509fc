"""The native JSON codec agrees with the standard library on every JSON-native value."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tideflow import CodecError, _core

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_round_trip_matches_the_standard_library(value: object) -> None:
    encoded = _core.encode_json(value)
    assert json.loads(encoded) == value
    assert _core.decode_json(encoded) == value
    assert _core.decode_json(json.dumps(value).encode()) == value


def test_escapes_and_surrogate_pairs() -> None:
    text = '"a\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/"'
    assert _core.decode_json(text.encode()) == json.loads(text)
    assert _core.decode_json(b'{"b": 1, "a": 2}') == {"b": 1, "a": 2}
    assert list(_core.decode_json(b'{"b": 1, "a": 2}')) == ["b", "a"]


@pytest.mark.parametrize(
    "bad", [b"", b"{", b"[1,]", b'{"a" 1}', b"nul", b'"\\ud800"', b"1 2", b"01x", b'"\x01"']
)
def test_malformed_payloads_are_codec_errors(bad: bytes) -> None:
    with pytest.raises(CodecError, match="not valid JSON"):
        _core.decode_json(bad)


def test_non_finite_floats_and_foreign_keys_are_refused() -> None:
    for v in (math.nan, math.inf, {1: "x"}, object()):
        with pytest.raises(CodecError):
            _core.encode_json(v)
