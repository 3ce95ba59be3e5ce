"""A pytest plugin for the GPU check's tests stage: ``-p benchmarks.pytest_budget --budget-s S``.

A test that would start more than S seconds after collection ended is skipped with the reason
BUDGET_SPENT, so pytest still ends on its own, with its summary and junit XML, instead of being
killed; the stage counts those skips as tests the budget left out.
"""
import time

import pytest

BUDGET_SPENT = "GPU check: time budget spent"
_START = [time.monotonic()]


def pytest_addoption(parser):
    parser.addoption("--budget-s", type=float, default=None,
                     help="skip the tests that would start after this many seconds")


def pytest_collection_finish(session):
    _START[0] = time.monotonic()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    budget = item.config.getoption("budget_s")
    if budget is not None and time.monotonic() - _START[0] > budget:
        pytest.skip(BUDGET_SPENT)
