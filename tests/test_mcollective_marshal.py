"""The restricted Ruby Marshal codec and the psk envelope: unit tests, plus Ruby itself.

The decoder must never build anything but plain data and never fail with anything but
``MarshalError``; the encoder's output must be what Ruby's ``Marshal.load`` reads back.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gearshift.errors import BadMessage, ConfigError
from gearshift.observe.mcollective.marshal import (
    MAX_DEPTH,
    MarshalError,
    Symbol,
    dumps,
    loads,
)
from gearshift.observe.mcollective.psk import (
    IdentityFilter,
    decode_reply,
    digest,
    encode_request,
    make_filter,
)
from gearshift.settings import McollectiveSettings

PSK = b"secret"

scalars = (st.none() | st.booleans() | st.integers(-(2**120), 2**120)
           | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
           | st.text(max_size=10).map(Symbol))
keys = st.none() | st.integers(-1000, 1000) | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(keys, inner, max_size=5), max_leaves=30)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                     math.copysign(1, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(values)
def test_round_trip(value: object) -> None:
    assert _same(loads(dumps(value)), value)


@given(st.binary(max_size=200))
@settings(max_examples=400)
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        loads(b"\x04\x08" + data)
    except MarshalError as exc:
        assert exc.reason


@given(values, st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_payloads_never_crash(value: object, data: st.DataObject) -> None:
    raw = bytearray(dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            loads(candidate)
        except MarshalError:
            pass


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\x04\x08o:\x0bObject\x00", "refused_type"),          # an arbitrary object
    (b"\x04\x08u:\x09Time\x06x", "refused_type"),           # _dump / _load
    (b"\x04\x08U:\x09Date[\x00", "refused_type"),           # marshal_load
    (b"\x04\x08S:\x09Strt\x00", "refused_type"),            # a Struct
    (b"\x04\x08e:\x09Kern[\x00", "refused_type"),           # extended by a module
    (b"\x04\x08C:\x09MyHs{\x00", "refused_type"),           # a user subclass of Hash
    (b"\x04\x08c\x0bObject", "refused_type"),               # a class
    (b"\x04\x08}\x00i\x06", "refused_type"),                # a Hash with a default
    (b"\x04\x08I[\x00\x06:\x06@xT", "refused_ivar"),         # ivars on an array
    (b'\x04\x08I"\x06a\x06:\x07@xT', "refused_ivar"),        # an ivar that is not E
    (b"\x04\x07i\x06", "bad_version"),
    (b"\x04\x08[\x7f", "bad_length"),                        # 122 elements announced, none there
    (b"\x04\x08l+\x7f" + b"\x00" * 244, "bignum_too_large"),
    (b"\x04\x08[\x06@\x00", "cyclic"),                       # an array holding itself
    (b"\x04\x08@\x06", "bad_link"),
    (b"\x04\x08;\x00", "bad_link"),
    (b"\x04\x08i\x06i\x06", "trailing_bytes"),
    (b"\x04\x08f\x08abc", "bad_float"),
    (b"\x04\x08{\x07:\x06aT\"\x06aF" .replace(b'"\x06a', b'I"\x06a\x06:\x06ET'),
     "duplicate_key"),                                       # :a and "a" in one hash
])
def test_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(MarshalError) as caught:
        loads(payload)
    assert caught.value.reason == reason


def test_depth_and_size_limits() -> None:
    deep = b"\x04\x08" + b"[\x06" * (MAX_DEPTH + 5) + b"0"
    with pytest.raises(MarshalError, match="too_deep"):
        loads(deep)
    with pytest.raises(MarshalError, match="too_large"):
        loads(dumps(b"x" * 2000), max_size=1000)
    many = b"\x04\x08" + b"[\x02\xa0\x0f" + b"[\x02\xa0\x0f" + b"0" * 4000
    with pytest.raises(MarshalError):
        loads(many)


def test_links_and_encodings_as_ruby_writes_them() -> None:
    # Marshal.dump({:a=>"x", "b"=>[1, -200, 2**30, -2**40, "bin".b, :a, 1.5]}) in Ruby 3.1
    payload = (b'\x04\x08{\x07:\x06aI"\x06x\x06:\x06ETI"\x06b\x06;\x06T[\x0ci\x06i\xff8'
               b"l+\x07\x00\x00\x00@l-\x08\x00\x00\x00\x00\x00\x01\"\x08bin;\x00f\x081.5")
    assert loads(payload) == {"a": "x", "b": [1, -200, 2**30, -(2**40), b"bin", "a", 1.5]}
    latin = b'\x04\x08I"\x06\xe9\x06:\rencoding"\x0fISO-8859-1'
    assert loads(latin) == "é"
    assert loads(b"\x04\x08[\x07I\"\x06x\x06:\x06ET@\x06") == ["x", "x"]  # object link


@pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby (apt-get install ruby)")
def test_ruby_reads_what_we_write() -> None:
    value = {Symbol("msgtime"): 1_796_400_000, "list": [1, -5, 2**40, None, True, 1.25, b"\xff",
                                                      "é", Symbol("a"), Symbol("a")]}
    out = subprocess.run(["ruby", "-e", "p Marshal.load(STDIN.read)"], input=dumps(value),
                         capture_output=True, check=True).stdout
    assert out == (b'{:msgtime=>1796400000, "list"=>[1, -5, 1099511627776, nil, true, 1.25, '
                   b'"\\xFF", "\xc3\xa9", :a, :a]}\n')


def _reply(**overrides: object) -> bytes:
    body = overrides.pop("body_raw", dumps({Symbol("statuscode"): 0, Symbol("data"): {}}))
    assert isinstance(body, bytes)
    envelope: dict[object, object] = {
        Symbol("senderid"): "node1", Symbol("requestid"): "r1",
        Symbol("senderagent"): "rpcutil", Symbol("msgtime"): 1000, Symbol("body"): body,
        Symbol("hash"): digest(body, PSK)}
    envelope.update({Symbol(k): v for k, v in overrides.items()})
    return dumps(envelope)


@pytest.mark.parametrize(("overrides", "asked", "now", "reason"), [
    ({}, {"r2": None}, 1000.0, "unknown_request"),
    ({"hash": "0" * 32}, {"r1": None}, 1000.0, "bad_digest"),
    ({}, {"r1": {"node2"}}, 1000.0, "identity_not_asked"),
    ({}, {"r1": None}, 1061.0, "expired"),
    ({}, {"r1": None}, 900.0, "clock_skew"),
    ({"msgtime": "soon"}, {"r1": None}, 1000.0, "bad_envelope"),
    ({"body_raw": b"\x04\x08o:\x0bObject\x00"}, {"r1": None}, 1000.0, "marshal_refused_type"),
])
def test_reply_refusals(overrides: dict[str, object], asked: dict[str, object], now: float,
                        reason: str) -> None:
    with pytest.raises(BadMessage) as caught:
        decode_reply(_reply(**overrides), psk=PSK, now=now, ttl=60, asked=asked,
                     max_size=1 << 16)
    assert caught.value.reason == reason


def test_reply_accepted_and_oversized_refused() -> None:
    reply = decode_reply(_reply(), psk=PSK, now=1010.0, ttl=60, asked={"r1": {"node1"}},
                         max_size=1 << 16)
    assert (reply.sender, reply.request_id, reply.body) == ("node1", "r1",
                                                            {"statuscode": 0, "data": {}})
    with pytest.raises(BadMessage, match="too_large"):
        decode_reply(_reply(), psk=PSK, now=1010.0, ttl=60, asked={"r1": None}, max_size=64)


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_decode_reply_never_crashes(data: bytes) -> None:
    try:
        decode_reply(b"\x04\x08" + data, psk=PSK, now=0.0, ttl=60, asked={}, max_size=4096)
    except BadMessage as exc:
        assert exc.reason


def test_request_digest_is_over_the_body() -> None:
    payload = encode_request(dumps("ping"), psk=PSK, sender="gs", request_id="r", now=5.0,
                             filter_=make_filter(facts={"node_profile": "small"}),
                             collective="mcollective", agent="discovery", caller="gearshift=gs",
                             ttl=60)
    request = loads(payload)
    assert isinstance(request, dict)
    assert request["hash"] == digest(request["body"], PSK)  # type: ignore[arg-type]
    filter_ = request["filter"]
    assert isinstance(filter_, dict)
    assert filter_["fact"] == [
        {"fact": "node_profile", "value": "small", "operator": "=="}]


def test_settings_keep_the_psk_secret_and_check_it(tmp_path: Path) -> None:
    psk_file = tmp_path / "psk"
    psk_file.write_text("s3cr3t-value\n")
    settings = McollectiveSettings.model_validate({"enabled": True, "psk_file": str(psk_file)})
    assert settings.secret_psk().get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings.model_dump())
    with pytest.raises(ValidationError, match="enabled needs psk_file"):
        McollectiveSettings.model_validate({"enabled": True})
    with pytest.raises(ValidationError, match="not a regex"):
        McollectiveSettings.model_validate({"psk": "x", "identities": ["/node-(/"]})
    with pytest.raises(ValidationError):
        McollectiveSettings.model_validate({"psk": "x", "brokers": ["no-port"]})
    missing = McollectiveSettings.model_validate({"enabled": True,
                                                  "psk_file": str(tmp_path / "nope")})
    with pytest.raises(ConfigError) as caught:
        missing.secret_psk()
    assert "nope" in caught.value.problems[0]
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        McollectiveSettings.model_validate({"psk_file": str(tmp_path / "empty")}).secret_psk()
    assert McollectiveSettings.model_validate(
        {"brokers": ["mq1:61613", "mq2.example:61614"]}).servers() == [
        ("mq1", 61613), ("mq2.example", 61614)]


def test_identity_filters_match_like_mco() -> None:
    allowed = IdentityFilter(["node-01.example.com", "/^web-\\d+$/"])
    assert "node-01.example.com" in allowed and "web-12" in allowed
    assert "node-02.example.com" not in allowed and "web-x" not in allowed
