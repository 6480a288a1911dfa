"""The chat agent's `calculate` tool: exact answers, and a quick error for results too large to compute.

A huge power used to block the event loop (big-integer arithmetic holds the GIL even in a worker
thread): `(((10**100)**100)**100)**10` took 7.6 s, one more level minutes. The work is now bounded
by the size of every intermediate result, checked before computing it.
"""

from __future__ import annotations

import time

import pytest

from luka_bot.services.agent_factory import TOO_LARGE, calculate


@pytest.mark.parametrize(("expression", "expected"), [
    ("(2+3)*4", "20"),
    ("2**100", str(2**100)),
    ("7 // 2 + 7 % 2 - -1", "5"),
    ("1/4", "0.25"),
    ("2**-2", "0.25"),
    ("(-1)**(10**100)", "1"),
    ("10**999", "1" + "0" * 999),
    ("10**2999", "1" + "0" * 2999),
    ("2**5000", str(2**5000)),
    ("9" * 200 + " * " + "9" * 200, str(int("9" * 200) ** 2)),
])
def test_results_within_the_bound_are_exact(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize("expression", [
    "(((10**100)**100)**100)**10",
    "((((10**100)**100)**100)**100)**10",
    "10**4000",
    "2**10001",
    "2**(2**(2**(2**(2**2))))",
    "10**3011",
    "(10**1600)*(10**1600)",
    "(10**900)*(10**900)*(10**900)*(10**900)",
    "3**100**100",
])
def test_results_too_large_are_refused_quickly(expression: str) -> None:
    started = time.perf_counter()
    answer = calculate(expression)
    elapsed = time.perf_counter() - started
    assert answer == f"error: {TOO_LARGE}"
    assert elapsed < 0.5, f"{expression} took {elapsed:.2f}s"  # was 7.6 s (and minutes) before the bound


def test_many_bounded_steps_stay_cheap() -> None:
    """Every step at the bound: still a fraction of a second for the longest expression accepted."""
    expression = "+".join(["(9**3000//9**2999)*2**9000"] * 15)
    assert len(expression) < 500
    started = time.perf_counter()
    assert calculate(expression) == str(15 * 9 * 2**9000)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("expression", "message"), [
    ("-" * 600 + "1", "error: expression longer than 500 characters"),
    ("1e308*10", "inf"),
    ("2.0**100000", "error: (34, 'Numerical result out of range')"),
    ("__import__('os')", "error: only numbers and + - * / // % ** are allowed"),
    ("1/0", "error: division by zero"),
    ("(" * 300 + "1" + ")" * 300, None),
    ("-" * 499 + "1", None),
])
def test_bad_input_is_an_error_string_never_an_exception(expression: str, message: str | None) -> None:
    answer = calculate(expression)
    if message is not None:
        assert answer == message
    else:
        assert answer in {"1", "-1"} or answer.startswith("error: "), answer
