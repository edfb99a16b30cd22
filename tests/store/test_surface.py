"""The store's surface, derived from its modules (as httpx's test_exported_members): what
`core.store` exports resolves and lives in the store package; every public method of a Store comes
from exactly one table mixin and carries the SQLite-error boundary, so no caller ever meets a
sqlite3 error; and the store imports nothing of batches, photos or evaluation (test_architecture)."""
from __future__ import annotations

import inspect

import core.store
from core.store import Store
from core.store.boundary import sqlite_boundary

MIXINS = [c for c in Store.__mro__[1:] if c.__name__.endswith("Mixin")]


def test_core_store_exports_only_what_the_store_package_defines():
    for name in core.store.__all__:
        value = getattr(core.store, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("core.store."), f"core.store.{name} comes from {value.__module__}"


def test_every_public_method_comes_from_one_mixin_and_carries_the_boundary():
    homes: dict[str, list[str]] = {}
    for mixin in MIXINS:
        for name, member in vars(mixin).items():
            if not name.startswith("_") and inspect.isfunction(member):
                homes.setdefault(name, []).append(mixin.__name__)
                assert hasattr(member, "__wrapped__"), f"{mixin.__name__}.{name} lacks @sqlite_boundary"
    twice = {n: h for n, h in homes.items() if len(h) > 1}
    assert not twice, f"defined by two mixins (one silently wins): {twice}"
    public = {n for n in dir(Store) if not n.startswith("_") and inspect.isfunction(getattr(Store, n))}
    assert public - {"close"} == set(homes), "a Store method outside the table mixins"
    assert sqlite_boundary.__module__ == "core.store.boundary"


def test_sqlite_errors_stay_behind_the_store_as_store_unavailable(settings):
    """A database locked past the busy timeout (or full, or read-only) reaches a caller as
    StoreUnavailable, which the runner retries: never a raw sqlite3 error."""
    import sqlite3

    import pytest

    from core.errors import StoreUnavailable
    from core.store import open_store

    store = open_store(settings.db_path)
    store.db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(settings.db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"}).status == "planned"
    store.close()
