"""The alerts bench's count of what its log received."""

from __future__ import annotations

from bench._alert_lines import AlertLines, count_alert_lines
from bench.alerts import _check_lines, _Scenario


def test_only_transcription_alert_lines_count_with_their_keys() -> None:
    lines = [
        b'{"event":"transcription_alert","alert_key":"a1","level":"error"}',
        b'{"event":"transcription_alert_summary","summary_key":"s","count":3}',
        b'{"event":"transcription_alert_silenced","alert_key":"a2"}',
        b'{"level":"info","event":"transcription_alert","alert_key":"a1"}',
        b'{"event":"worker_started","note":"\\"event\\":\\"transcription_alert\\""}',
    ]
    assert count_alert_lines(lines) == AlertLines(2, frozenset({"a1"}))


def test_the_alerts_bench_fails_when_a_line_is_missing_or_doubled() -> None:
    mix, storm = _Scenario(frozenset({"a1", "a2"}), []), _Scenario(frozenset({"b"}), [])
    results = {"mix": mix, "storm": storm}
    assert _check_lines(results, 2, AlertLines(6, frozenset({"a1", "a2", "b"})))
    assert not _check_lines(results, 2, AlertLines(5, frozenset({"a1", "a2", "b"})))
    assert not _check_lines(results, 2, AlertLines(6, frozenset({"a1", "b"})))
