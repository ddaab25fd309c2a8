"""The marker guard (tests/conftest.py): an unmarked test that starts a process or Ray
fails with the fix; a test marked slow may."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray  # noqa: F401  (imported here so pytester's module snapshot keeps it)

CONFTEST = Path(__file__).with_name("conftest.py")
INI = """
[pytest]
markers =
    slow: starts Ray or a subprocess
asyncio_default_fixture_loop_scope = function
"""
HINT = "*mark this test @pytest.mark.slow: it {}*"


@pytest.fixture
def suite(pytester: pytest.Pytester):
    """A pytester folder with this suite's conftest; returns a runner of test source."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(INI)

    def run(source: str) -> pytest.RunResult:
        pytester.makepyfile(test_inner=source)
        return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:textual-snapshot")

    return run


def test_an_unmarked_subprocess_fails_with_the_fix(suite) -> None:
    result = suite(
        """
        import os, subprocess

        def test_runs_one():
            subprocess.run(["true"], check=True)

        def test_swallows_the_refusal():
            try:
                os.system("true")
            except RuntimeError:
                pass
        """
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([HINT.format("spawns a subprocess (true)")])
    result.stdout.fnmatch_lines([HINT.format("starts a process (os.system)")])


def test_unmarked_ray_fails_with_the_fix(suite) -> None:
    result = suite(
        """
        import ray

        def test_starts_ray():
            ray.init(address="local")

        def test_joins_the_session_ray(ray_address):
            pass
        """
    )
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([HINT.format("uses Ray (ray.init)")])
    result.stdout.fnmatch_lines([HINT.format("uses the ray_address fixture")])


@pytest.mark.slow
def test_a_marked_subprocess_runs(suite) -> None:
    result = suite(
        """
        import subprocess, pytest

        @pytest.mark.slow
        def test_runs_one():
            subprocess.run(["true"], check=True)

        def test_after_it_the_guard_is_back():
            subprocess.run(["true"], check=True)
        """
    )
    result.assert_outcomes(passed=1, failed=1)
