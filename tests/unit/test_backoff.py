"""Back-off of background loops: the traceback once, one line per later failure with the count, waits doubling to a cap."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from web.backoff import Backoff, one_line

log = logging.getLogger("tests.backoff")


def fail(backoff: Backoff, exc: Exception) -> float:
    try:
        raise exc
    except Exception:
        return backoff.failed()


def test_waits_double_from_first_up_to_the_cap(caplog):
    backoff = Backoff("polling", log, first=0.5, cap=5.0)
    with caplog.at_level(logging.INFO, logger="tests.backoff"):
        waits = [fail(backoff, RuntimeError("down")) for _ in range(7)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_first_failure_has_the_traceback_and_later_ones_a_line_with_the_count(caplog):
    backoff = Backoff("polling", log, first=1.0, cap=30.0)
    with caplog.at_level(logging.INFO, logger="tests.backoff"):
        for _ in range(3):
            fail(backoff, RuntimeError("the queue\nis gone"))
    first, *later = caplog.records
    assert first.levelno == logging.ERROR and first.exc_info is not None
    assert first.getMessage() == "polling failed; trying again in 1 s"
    assert [r.getMessage() for r in later] == [
        "polling failed again (2 times in a row): RuntimeError: the queue is gone; trying again in 2 s",
        "polling failed again (3 times in a row): RuntimeError: the queue is gone; trying again in 4 s",
    ]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in later)


def test_a_success_resets_the_count_and_the_next_failure_is_logged_in_full_again(caplog):
    backoff = Backoff("polling", log, first=1.0, cap=30.0)
    with caplog.at_level(logging.INFO, logger="tests.backoff"):
        fail(backoff, RuntimeError("a"))
        fail(backoff, RuntimeError("b"))
        backoff.succeeded()
        backoff.succeeded()  # nothing to say the second time
        assert fail(backoff, RuntimeError("c")) == 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert messages[2] == "polling works again after 2 failure(s) in a row"
    assert len(messages) == 4 and caplog.records[3].exc_info is not None


def test_a_very_long_run_of_failures_keeps_the_cap():
    backoff = Backoff("polling", log, first=1.0, cap=30.0)
    backoff.failures = 5000
    assert backoff.delay() == 30.0


def test_one_line_uses_the_drivers_message_without_the_statement(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(OperationalError) as caught:
        with engine.connect() as conn:
            conn.execute(text("SELECT secret_column FROM no_such_table WHERE x = 'value'"))
    assert one_line(caught.value) == "OperationalError: no such table: no_such_table"
    assert one_line(RuntimeError("x" * 1000)).endswith("...") and len(one_line(RuntimeError("x" * 1000))) == 300
