"""Under CI=true a skip for something missing fails the run; a declared host condition stays a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = """
import pytest

def test_needs_a_missing_extra():
    pytest.importorskip("edgeproof_no_such_extra")

def test_needs_a_missing_tool():
    pytest.skip("chromium is not installed")

@pytest.mark.skipif(True, reason="this host exposes powercap")
def test_declares_a_host_condition():
    pass

@pytest.mark.xfail(reason="known gap", strict=True)
def test_known_gap():
    assert False

def test_runs():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A copy of our conftest beside a small test file that skips in every way the suite could."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_skips=TESTS)
    return pytester


def test_without_ci_a_missing_extra_is_a_skip(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest()
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_under_ci_a_missing_extra_or_tool_fails(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=1, failed=2, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*CI=true: this test would have been skipped (*could not import 'edgeproof_no_such_extra'*",
            "*CI=true: this test would have been skipped (Skipped: chromium is not installed)*",
            "SKIPPED*this host exposes powercap",
        ]
    )


def test_under_ci_a_module_skipped_for_a_missing_import_fails(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_optional='import pytest\n\npytest.importorskip("edgeproof_no_such_extra")\n\n\ndef test_x():\n    pass\n')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*CI=true: this module would have been skipped*edgeproof_no_such_extra*"])
