"""Fixtures of the sweep loader's tests."""

from __future__ import annotations

import functools

import pytest

from migbench import catalog


@functools.cache
def builtin_catalogue() -> catalog.Catalog:
    return catalog.Catalog.load(include_user=False)


@pytest.fixture(autouse=True)
def builtin_catalogue_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a user's ~/.config/migbench/catalog.yaml (or $MIGBENCH_CATALOG) out of these tests."""
    monkeypatch.setattr(catalog, "default_catalog", builtin_catalogue)
