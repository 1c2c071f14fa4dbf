"""Benchmarks: run by `make bench`, never by `make test`. They print figures and ratios against a
baseline measured in the same run; they assert nothing about time."""

import time
from contextlib import contextmanager

import pytest


class Stopwatch:
    def __init__(self):
        self.figures: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str):
        started = time.perf_counter()
        yield
        self.figures[name] = time.perf_counter() - started

    def report(self, title: str, rows: list[tuple[str, str]]) -> None:
        width = max(len(label) for label, _ in rows)
        print(f"\n=== {title} ===")
        for label, value in rows:
            print(f"  {label:<{width}}  {value}")


@pytest.fixture
def stopwatch():
    return Stopwatch()
