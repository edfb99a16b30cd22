"""The cached resources every page uses: settings, image storage, this session's store, image
thumbnails, Generate's plan, and the History download (which opens a store of its own).

Invariants:
- Settings and storage are process-wide (`st.cache_resource`), keyed by every setting
  (`core.config.SETTINGS`), so a test that points DASHBOARD_DATA_DIR elsewhere, or changes any
  other setting, gets fresh ones.
- Each browser session has its own `Store` (session-scoped cache, closed when the session
  ends), from `core.store.open_store`, so WAL and migrations apply.
- A cached value is a frozen value or a resource; nothing here decides a business rule.
"""
from __future__ import annotations

import json
import os

import streamlit as st

from core.config import SETTINGS, Settings, load_settings
from core.models import install_added_models
from core.errors import DashboardError

THUMB_PX = 256


@st.cache_resource(show_spinner=False)
def _settings(_env_key: tuple) -> Settings:
    s = load_settings()
    s.ensure_dirs()
    return s


def settings() -> Settings:
    return _settings(tuple(os.environ.get(n) for n in SETTINGS))


def store_location(s: Settings | None = None) -> str:
    """What the store of these settings (this server's by default) opens: the cache key of its
    connections (core.store.store_location)."""
    from core.store import store_location as location

    return location(s or settings())


@st.cache_resource(show_spinner=False)
def _storage(s: Settings):
    from core.blobs import open_storage

    return open_storage(s)


def storage():
    """The reference/result image storage for the current settings (local or Supabase)."""
    return _storage(settings())


@st.cache_resource(scope="session", show_spinner=False, on_release=lambda store: store.close())
def _store(db_path: str):
    from core.store import open_store

    return open_store(db_path)


def store():
    """This session's `core.store.Store`, with the endpoints the team added installed in the
    registry (`core.models.service.install`: cheap when nothing changed)."""
    opened = _store(store_location())
    install_added_models(opened)
    return opened


class _Unread(Exception):
    """Raised out of `_thumbnail` so that st.cache_data keeps no failure: an image that storage
    could not give now shows once storage answers again."""

    def __init__(self, read):
        self.read = read


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(backend: str, path: str, version: str, size: int) -> bytes | None:
    # `version` (a sha256 or an id) keys the cache so a replaced object is never shown stale.
    from io import BytesIO

    from PIL import Image

    from core.blobs import read_image

    # the server reads the bytes (a private bucket's with the key); a page only gets a JPEG
    read = read_image(storage(), backend, path)
    if read.data is None:
        raise _Unread(read)
    try:
        with Image.open(BytesIO(read.data)) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at reduced scale, far cheaper
            im.thumbnail((size, size))
            out = BytesIO()
            im.convert("RGB").save(out, "JPEG", quality=80)
        return out.getvalue()
    except (DashboardError, OSError, ValueError):
        return None


def image_thumbnail(backend: str | None, path: str | None, version: str, size: int = THUMB_PX):
    """A small JPEG of a stored image (reference or result) as a `core.blobs.ImageRead`: its
    bytes, or why there are none (missing, or storage unreachable), in a sentence."""
    from core.blobs import ImageRead

    try:
        data = _thumbnail(backend or "", path or "", version, size)
    except _Unread as e:
        return e.read
    if data is None:
        return ImageRead(None, "unreadable", "the stored file does not decode as an image")
    return ImageRead(data)


def thumbnail(backend: str | None, path: str | None, version: str, size: int = THUMB_PX) -> bytes | None:
    """A small JPEG of a stored image (reference or result), or None when it cannot be read."""
    if not backend or not path:
        return None
    return image_thumbnail(backend, path, version, size).data


@st.cache_resource(max_entries=32, ttl=600, show_spinner=False)
def _plan(spec_json: str, db_path: str, backend: str, _store, _storage):
    from core.batches import service

    return service.plan_batch(json.loads(spec_json), store=_store, storage=_storage)


def plan(spec: dict):
    """`service.plan_batch` for the Generate form, cached by spec: a plan of thousands of requests
    validates every body, and the form reruns on each keystroke. Plans are frozen values."""
    from core.catalog.payloads import canonical_json

    s = settings()
    return _plan(canonical_json(spec), store_location(s), s.storage_backend, store(), storage())


def history_csv(db_path, flt) -> bytes:
    """The CSV download of a history filter (all pages), from core.export.history.

    Runs when the user clicks (deferred), outside the script thread: it opens its own Store.
    """
    from core import export
    from core.store import open_store

    store = open_store(db_path)
    try:
        return export.to_csv_bytes(store, flt)
    finally:
        store.close()
