"""The errors a user can act on are one family: `except MobileSamError` catches each, `except ValueError` still does."""

from __future__ import annotations

import pytest

from mobilesam import errors
from mobilesam.io.datasets import DatasetError
from mobilesam.io.sources import SourceError
from mobilesam.train.config import ConfigError


@pytest.mark.parametrize(
    ("name", "where_users_import_it"),
    [("DatasetError", DatasetError), ("SourceError", SourceError), ("ConfigError", ConfigError)],
)
def test_input_errors_are_mobilesam_errors_and_value_errors(name, where_users_import_it):
    error = getattr(errors, name)
    assert error is where_users_import_it
    assert issubclass(error, errors.MobileSamError) and issubclass(error, ValueError)
