"""Argument checks shared by the public constructors; each error names the argument and its value.

Python, NumPy and 0-d JAX numbers are all accepted (values often come from configs or arrays);
bools are not numbers here. A number traced inside the caller's `jax.jit`/`jax.vmap` (a clip norm
or a sparsity from a schedule) cannot be checked: `as_int` and `as_float` return it as it is.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Collection

import jax
import jax.numpy as jnp
import numpy as np


def is_float_dtype(dtype: Any) -> bool:
    """Whether dtype is a real floating-point dtype (bfloat16 included); False for a non-dtype."""
    try:
        return jnp.issubdtype(dtype, jnp.floating)
    except TypeError:
        return False


def is_real_dtype(dtype: Any) -> bool:
    """Whether an array of dtype holds real numbers: floating, integer or bool (not complex, str, object)."""
    return is_float_dtype(dtype) or any(jnp.issubdtype(dtype, t) for t in (jnp.integer, jnp.bool_))


def is_traced(value: Any) -> bool:
    """Whether value is a tracer of the caller's transformation (no concrete value to check)."""
    return isinstance(value, jax.core.Tracer)


def index(value: Any) -> int | None:
    """value as a Python int if it is an integer (Python, NumPy, 0-d JAX; not a bool), else None."""
    try:
        return None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        return None


def as_int(value: Any, name: str, minimum: int = 1) -> int | jax.Array:
    """`value` as a Python int >= minimum, else a ValueError naming `name` (a traced value as it is)."""
    if is_traced(value):
        return value
    n = index(value)
    if n is None or n < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return n


def as_shape(value: Any, name: str, expected: str, ranks: Collection[int] | None = None) -> tuple[int, ...]:
    """`value` as a tuple of positive Python ints (of a length in `ranks`, if given, else at least
    one), else a ValueError naming `name`; floats are refused, never truncated (28.5 is no size)."""
    try:
        dims = tuple(index(d) for d in value)
    except TypeError:  # not iterable
        dims = None
    if not dims or None in dims or min(dims) < 1 or (ranks is not None and len(dims) not in ranks):
        raise ValueError(f"{name}: expected {expected} of positive ints, got {value!r}")
    return dims  # type: ignore[return-value]


def as_float(value: Any, name: str, expected: str, ok: Callable[[float], bool]) -> float | jax.Array:
    """`value` as a Python float for which ok(value) holds, else a ValueError naming `name` (a traced
    value as it is)."""
    if is_traced(value):
        return value
    try:
        v = None if isinstance(value, (bool, str)) or value is None else float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond a float (10**400)
        v = None
    if v is None or not ok(v):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return v


def as_array(value: Any, name: str, expected: str) -> jax.Array:
    """`value` as a JAX array of real numbers, else a TypeError naming `name` (None, a string, a
    ragged nested list, complex or object data)."""
    try:
        a = jnp.asarray(value)
    except (TypeError, ValueError):
        a = None
    if a is None or not is_real_dtype(a.dtype):
        dtype = getattr(value, "dtype", None if a is None else a.dtype)
        given = (f"dtype {dtype}" if dtype is not None else repr(value) if len(repr(value)) <= 60
                 else f"a {type(value).__name__} that is no array (ragged?)")
        raise TypeError(f"{name}: expected {expected} of real numbers, got {given}")
    return a


def as_pair(value, name: str, minimum: int | None = None) -> tuple[int, int]:
    """An int (Python, NumPy or 0-d JAX) or a pair of them (a tuple, a list or an array of shape
    (2,)) as (int, int), each >= `minimum` if given, else a ValueError naming `name`."""
    pair_like = isinstance(value, (tuple, list)) and len(value) == 2 or np.shape(value) == (2,)
    items = value if pair_like else (value, value)
    pair = tuple(index(v) for v in items)
    if None in pair or (minimum is not None and min(pair) < minimum):  # type: ignore[type-var]
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name}: expected an int or a pair of ints{bound}, got {value!r}")
    return pair  # type: ignore[return-value]
