"""The run's early time estimate: the duration wording (the log lines themselves are checked in a real run,
tests/run/test_output.py)."""

from silhouette_lightning.engine.estimate import duration


def test_durations_read_as_a_human_would_say_them():
    assert duration(0.4) == "0 s"
    assert duration(42.4) == "42 s"
    assert duration(725) == "12 min"
    assert duration(11100) == "3 h 05 min"
    assert duration(3 * 86400 + 9000) == "3.1 days"
