"""The CI guard against quiet skips (tests/conftest.py): which skip reasons it lets pass."""

from __future__ import annotations

from types import SimpleNamespace

from conftest import unexpected_skips


def _skip(nodeid: str, reason: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, longrepr=("f.py", 1, f"Skipped: {reason}"))


def test_only_the_machine_s_capabilities_may_skip_in_ci() -> None:
    reports = [
        _skip("a", "cannot mount a tmpfs here (no CAP_SYS_ADMIN)"),
        _skip("b", "disk full needs root to mount a small tmpfs"),
        _skip("c", "could not import 'librosa': No module named 'librosa'"),
        _skip("d", "PostgreSQL tests need AUTOPLAT_TEST_PG=..."),
        SimpleNamespace(nodeid="e", longrepr=None, wasxfail="known"),
    ]
    assert unexpected_skips(reports) == [
        "c: could not import 'librosa': No module named 'librosa'",
        "d: PostgreSQL tests need AUTOPLAT_TEST_PG=...",
    ]
