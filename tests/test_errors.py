"""The shared range check of constructor arguments and settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calolab.errors import ConfigError, check_number


def test_check_number_accepts_numbers_in_range():
    assert check_number("x", 3, 0) == 3.0
    assert check_number("x", np.int64(2), 0, 2) == 2.0
    assert check_number("x", None, allow_none=True) is None


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("1.5", {}, "x must be a finite number, but got '1.5'"),
        (True, {}, "x must be a finite number, but got True"),
        (math.nan, {}, "x must be a finite number, but got nan"),
        (None, {}, "x must be a finite number, but got None"),
        (0.0, {"low": 0.0, "low_open": True}, "x must be > 0, but got 0.0"),
        (-1, {"low": 0.0}, "x must be >= 0, but got -1"),
        (1.5, {"high": 1.0}, "x must be <= 1, but got 1.5"),
    ],
)
def test_check_number_names_the_argument_and_the_value(value, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message.replace('.', '[.]')}$"):
        check_number("x", value, **kwargs)
