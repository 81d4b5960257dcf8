"""Libraries' standard-library logging goes through the same structlog chain as ours.

botocore, asyncpg, paho and aiohttp log with ``logging``; without routing, their lines
skipped the secret masking and came out in another format.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gearshift.logs import configure


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_library_warning_is_masked_and_in_our_json_format() -> None:
    stream = io.StringIO()
    configure(level="info", fmt="json", stream=stream)
    logging.getLogger("botocore").warning(
        "endpoint https://admin:hunter2@ec2.example.invalid/ failed for %s", "pool-a")
    structlog.get_logger(component="test").warning("ours", reason="x")
    theirs, ours = (json.loads(line) for line in stream.getvalue().splitlines()[-2:])
    assert "hunter2" not in stream.getvalue()
    assert theirs["event"] == "endpoint https://***@ec2.example.invalid/ failed for pool-a"
    assert theirs["component"] == "botocore" and theirs["level"] == "warning"
    assert set(ours) - {"reason"} == set(theirs) == {"event", "component", "level", "timestamp"}


def test_a_library_traceback_is_masked_too() -> None:
    stream = io.StringIO()
    configure(level="info", fmt="json", stream=stream)
    try:
        raise ConnectionError("cannot reach postgres://gearshift:S3cret@db/gearshift")
    except ConnectionError:
        logging.getLogger("asyncpg").exception("connection lost")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["level"] == "error" and "ConnectionError" in line["exception"]
    assert "S3cret" not in stream.getvalue()


def test_library_debug_and_info_stay_out_and_reconfiguring_does_not_duplicate() -> None:
    stream = io.StringIO()
    configure(level="debug", fmt="json", stream=stream)
    configure(level="debug", fmt="json", stream=stream)
    logging.getLogger("botocore").debug("request dump")
    logging.getLogger("paho").info("connected")
    logging.getLogger("aiohttp.client").warning("slow answer")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["slow answer"]


def test_a_stricter_configured_level_holds_for_libraries() -> None:
    stream = io.StringIO()
    configure(level="error", fmt="json", stream=stream)
    logging.getLogger("botocore").warning("not shown")
    assert stream.getvalue() == ""
