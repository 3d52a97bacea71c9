"""Functions the everyday-tools tests run as PythonTasks (importable on the workers)."""

from __future__ import annotations

import os
import time


def square(x: int) -> int:
    return x * x


def multiply(x: int, y: int) -> int:
    return x * y


def product(pair: tuple[int, int]) -> int:
    """What ``pair`` calls: one ``(x, y)`` tuple, as Work Queue's ``pair`` passes it."""
    x, y = pair
    return x * y


def concat(parts: list[str]) -> str:
    """Not commutative: a reduction that scrambled the order would show."""
    return "".join(parts)


def add_all(values: list[int]) -> int:
    return sum(values)


def reject_negative(values: list[int]) -> int:
    if any(v < 0 for v in values):
        raise ValueError(f"negative value in {values}")
    return sum(values)


def inverse(x: int) -> float:
    return 1 / x


def divide(x: float, y: float) -> float:
    return x / y


def cores_seen() -> str | None:
    return os.environ.get("CORES")


def env_value(name: str) -> str | None:
    return os.environ.get(name)


def nap(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def read_input(name: str) -> str:
    with open(name) as handle:
        return handle.read()
