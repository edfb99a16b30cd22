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
    # the connection's own lifecycle (no statement of a table): closing it, warming sessions,
    # opening another for a worker thread
    assert public - {"close", "warm", "twin"} == set(homes), "a Store method outside the table mixins"
    assert sqlite_boundary.__module__ == "core.store.boundary"


def test_sqlite_errors_stay_behind_the_store_as_store_unavailable(settings, sqlite_only):
    """A database locked past the busy timeout (or full, or read-only) reaches a caller as
    StoreUnavailable, which the runner retries: never a raw sqlite3 error."""
    import sqlite3

    import pytest

    from core.errors import StoreUnavailable
    from core.store import open_store

    store = open_store(settings)
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


def test_postgres_errors_stay_behind_the_store_as_store_unavailable(settings, postgres_only):
    """On Postgres the same: a write waiting past the lock timeout for another host's write
    (the store's advisory lock) is StoreUnavailable "locked", which the runner retries."""
    import psycopg
    import pytest

    from core.errors import StoreUnavailable
    from core.store import open_store
    from core.store.pg import _WRITE_LOCK

    store = open_store(settings)
    store.db.execute("SET lock_timeout = 50")
    other = psycopg.connect(settings.database_url, autocommit=True)
    other.execute("BEGIN")
    other.execute(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
    try:
        with pytest.raises(StoreUnavailable, match="locked") as caught:
            store.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"})
        assert caught.value.reason == "locked"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.record_request(endpoint="fal-ai/flux/schnell", payload={"prompt": "p"}).status == "planned"
    store.close()


def test_a_lost_connection_is_reopened_and_an_unreachable_server_named_without_its_password(
        settings, postgres_only):
    """A server that drops the connection (a restart, a failover, a pooler's idle timeout): the
    next statement opens a new one. A server that cannot be reached is one StoreUnavailable line
    naming host and database, never the password in DATABASE_URL."""
    import psycopg
    import pytest

    from core.errors import StoreUnavailable
    from core.store import open_store
    from tests.serving import free_port

    store = open_store(settings)
    pid = store.db.execute("SELECT pg_backend_pid()").fetchone()[0]
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.list_batches()   # the statement under way when the server went away
    assert store.list_batches() == []   # the next one has a new connection
    store.close()

    url = f"postgresql://dashboard:s3cret-pw@127.0.0.1:{free_port()}/team"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)
    assert "127.0.0.1" in str(caught.value) and "/team" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value) and "dashboard@" not in str(caught.value)
