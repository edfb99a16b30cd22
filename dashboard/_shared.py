"""What every page shares: cached resources, the user's display name, and small view helpers.

Invariants:
- Settings and storage are process-wide (`st.cache_resource`), keyed by the environment that
  shapes them, so a test that points DASHBOARD_DATA_DIR elsewhere gets fresh ones.
- Each browser session has its own `Store` (session-scoped cache, closed when the session
  ends), from `core.store.open_store`, so WAL and migrations apply.
- Nothing here holds a business rule: helpers only render what `core` returns.
"""
from __future__ import annotations

import base64
import json
import os
import threading
from typing import Any

import streamlit as st

from core.config import Settings, load_settings
from core.errors import DashboardError, PayloadError
from core.catalog import prompts
from core.redact import abbreviate

# the environment variables that shape Settings (see core/config.py); they key the caches
_ENV_NAMES = (
    "FAL_KEY", "FAL_RUN_URL", "FAL_QUEUE_URL", "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_BUCKET",
    "DASHBOARD_DATA_DIR", "DASHBOARD_CONCURRENCY", "DASHBOARD_MAX_UPLOAD_BYTES",
    "DASHBOARD_MAX_LONG_EDGE", "DASHBOARD_SECRETS",
)
USER_KEY = "user_name"
USER_PARAM = "user"      # the address's query parameter that keeps the name in the browser
DRAFT_PARAM = "draft"    # the address's query parameter naming this browser's Generate draft
# what the Generate draft keeps besides every `param::<endpoint>::<name>` widget
DRAFT_KEYS = ("gen_refs", *(f"opt_{k}" for k in prompts.CATALOG_KEYS), "opt_extra", "gen_models",
              "seed_mode", "seed_n", "seed_list", "random_seeds", "batch_name", "active_batch")


@st.cache_resource(show_spinner=False)
def _settings(_env_key: tuple) -> Settings:
    s = load_settings()
    s.ensure_dirs()
    return s


def settings() -> Settings:
    return _settings(tuple(os.environ.get(n) for n in _ENV_NAMES))


@st.cache_resource(show_spinner=False)
def _storage(s: Settings):
    from core.blobs import open_storage

    return open_storage(s)


def storage():
    """The reference/result image storage for the current settings (local or Supabase)."""
    return _storage(settings())


@st.cache_resource(scope="session", show_spinner=False, on_release=lambda records: records.close())
def _store(db_path: str):
    from core.store import open_store

    return open_store(db_path)


def store():
    """This session's `core.store.Store`."""
    return _store(str(settings().db_path))


def user() -> str | None:
    """The display name typed in the sidebar, or None when left empty."""
    name = (st.session_state.get(USER_KEY) or "").strip()
    return name or None


def adopt_address() -> None:
    """The first thing every run does, before anything is drawn: a new browser session (a reload, a
    restarted dashboard) takes the name and the draft id its address carries. Nothing is guessed:
    no parameter, no name.

    Not later, when the sidebar reaches the name box: a page change drops the address's parameters
    (Streamlit's navigation does), and a page link clicked while a session's first run is still
    drawing cuts that run short. Taken any later, a quick click after a reload or a restart lost
    the name and started the form afresh under a new draft id. Before the navigation is drawn, no
    click in this page can have come first."""
    if USER_KEY not in st.session_state and st.query_params.get(USER_PARAM):
        st.session_state[USER_KEY] = st.query_params[USER_PARAM][:100]
    from core.batches import drafts

    if not st.session_state.get("_draft_id") and drafts.valid_id(st.query_params.get(DRAFT_PARAM)):
        st.session_state["_draft_id"] = st.query_params[DRAFT_PARAM]


def remember_user() -> None:
    """After the name box: the address carries the name (or loses it when it was cleared) and
    this browser's draft id, on every page, so a reload keeps both."""
    name = user()
    if name and st.query_params.get(USER_PARAM) != name:
        st.query_params[USER_PARAM] = name
    elif not name and USER_PARAM in st.query_params:
        del st.query_params[USER_PARAM]
    draft = st.session_state.get("_draft_id")
    if draft and st.query_params.get(DRAFT_PARAM) != draft:
        st.query_params[DRAFT_PARAM] = draft


def _draft_id() -> str:
    """This browser's draft id: the address's, else the session's, else a new one."""
    from core.batches import drafts

    did = st.query_params.get(DRAFT_PARAM)
    if not drafts.valid_id(did):
        did = st.session_state.get("_draft_id") or drafts.new_id()
    if st.query_params.get(DRAFT_PARAM) != did:
        st.query_params[DRAFT_PARAM] = did
    st.session_state["_draft_id"] = did
    return did


def load_draft() -> dict:
    """The Generate form's saved values for this browser (read from disk once per session)."""
    from core.batches import drafts

    did = _draft_id()
    if st.session_state.get("_draft_loaded") != did:
        st.session_state["_draft"] = drafts.load(settings(), did)
        st.session_state["_draft_loaded"] = did
    return dict(st.session_state["_draft"])


def save_draft(values: dict) -> None:
    """Keep the form's values for this browser (written only when they changed)."""
    from core.batches import drafts

    if values == st.session_state.get("_draft"):
        return
    try:
        drafts.save(settings(), _draft_id(), values)
    except DashboardError as e:
        st.caption(str(e))
        return
    st.session_state["_draft"] = dict(values)


def draft_values() -> dict:
    """What the Generate draft keeps: every form widget's value, the random seeds and the current
    batch, as this session holds them."""
    state = st.session_state
    keys = [k for k in DRAFT_KEYS if k in state]
    keys += [k for k in state if isinstance(k, str) and k.startswith("param::")]
    return {k: state[k] for k in keys}


def keep_draft_on_leaving() -> None:
    """In the run that leaves Generate, before the page it goes to: keep the form as the session
    last held it. Generate saves its draft at the end of each of its runs, but a page link clicked
    during one (just after typing a batch name, say) cuts it short, and this run is the last that
    sees the form's values: Streamlit forgets a widget's value once a run ends without drawing it.
    Merged over the draft this session loaded or saved, so a key the cut-short run had not yet
    restored keeps its saved value."""
    state = st.session_state
    if "_draft" not in state or state.get("_draft_loaded") != state.get("_draft_id"):
        return  # this session never showed the form: nothing of it to keep
    save_draft({**state["_draft"], **draft_values()})


@st.cache_resource(show_spinner=False)
def _resume_orphans(db_path: str, _settings: Settings) -> str:
    from core.batches import service
    from core.store import open_store

    if not _settings.auto_resume:
        return ""
    records = open_store(db_path)
    try:
        started = service.resume_orphans(records, _settings)
    except (DashboardError, OSError) as e:
        return f"Unfinished batches were not resumed at start ({e}); resume them on Generate."
    finally:
        records.close()
    if not started:
        return ""
    return (f"At start, {len(started)} unfinished batch{'es' if len(started) != 1 else ''} "
            "got a runner again: see *Unfinished batches* on Generate.")


def resume_orphans_once() -> str:
    """Once per server process: batches left unfinished without a stated reason (the machine
    restarted) get a runner again, unless `auto_resume` is off. Returns what to tell, or ""."""
    s = settings()
    return _resume_orphans(str(s.db_path), s)


def _warm() -> None:
    """Import what the data pages need and build the model catalogue: about a second of one core,
    paid otherwise by whoever first opens a page with a table (pandas) or naming models (the
    endpoint schemas) after a server start."""
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    from core.catalog import registry

    registry.list_endpoints()


@st.cache_resource(show_spinner=False)
def _warming() -> threading.Thread:
    thread = threading.Thread(target=_warm, name="dashboard-warm-up", daemon=True)
    thread.start()
    return thread


def warm_up() -> None:
    """Once per server process, on its first page run: `_warm` in a background thread, so the
    first visitor's page is not held up by it and the next page finds everything loaded."""
    _warming()


FIRST_STEPS = (
    ("upload.py", "1. Upload a reference photo"),
    ("generate.py", "2. Generate a batch (a dry run is free)"),
    ("review.py", "3. Review pairs, blind"),
    ("leaderboard.py", "4. Read the Leaderboard"),
)


def first_steps() -> None:
    """Until the first vote: the four steps from an empty dashboard to a verdict, as links, with
    the ones already done ticked."""
    records = store()
    if records.newest_voted_batch() is not None:
        return
    done = (bool(records.list_references(limit=1)), bool(records.list_batches(limit=1)), False, False)
    st.markdown("**First steps**")
    for (page, label), ticked in zip(FIRST_STEPS, done):
        st.page_link(page, label=label + (" — done" if ticked else ""))


def next_step(page: str, label: str, why: str = "") -> None:
    """The natural next step at the end of a page, as a link."""
    st.divider()
    st.page_link(page, label=f"Next: {label}", icon=":material/arrow_forward:")
    if why:
        st.caption(why)


def table(frame):
    """A frame for st.dataframe with no literal "None": empty text cells stay empty."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "" if v is None else v)
    return out


def short_name(name: str | None, limit: int = 22) -> str:
    """A file name cut in the middle when long ("phone_exif6…gps.jpg"), so narrow gallery columns
    never break it mid-word; the extension always shows."""
    if not name or len(name) <= limit:
        return name or ""
    keep = limit - 1
    return name[: keep - keep // 2] + "…" + name[-(keep // 2):]


def show_error(err: DashboardError) -> None:
    """A core error as the user should read it: one line per problem, no traceback."""
    if isinstance(err, PayloadError) and len(err.messages) > 1:
        st.error(f"{err.endpoint}:\n" + "\n".join(f"- {m}" for m in err.messages),
                 icon=":material/error:")
    else:
        st.error(str(err), icon=":material/error:")


def payload_json(payload: Any) -> str:
    """Pretty JSON of a payload with every data: URI abbreviated (never show the base64)."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return abbreviate(payload)
    return json.dumps(abbreviate(payload), indent=2, sort_keys=True, ensure_ascii=False)


def data_uri(data: bytes, content_type: str = "image/jpeg") -> str:
    """A small image as a data: URI, for st.dataframe's ImageColumn."""
    return f"data:{content_type};base64," + base64.b64encode(data).decode("ascii")


def short_time(iso: str | None) -> str:
    """"2026-11-24 17:30" from a stored ISO UTC time (display only)."""
    return (iso or "")[:16].replace("T", " ")


def local_time(iso: str | None) -> str:
    """"17:30:05" in this machine's time zone from a stored ISO UTC time (display only)."""
    import datetime as dt

    return dt.datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S") if iso else ""


THUMB_PX = 256


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(backend: str, path: str, version: str, size: int) -> bytes | None:
    # `version` (a sha256 or an id) keys the cache so a replaced object is never shown stale.
    from io import BytesIO

    from PIL import Image

    store = storage()
    if store.backend != backend:
        return None
    try:
        data = store.get(path)
        with Image.open(BytesIO(data)) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at reduced scale, far cheaper
            im.thumbnail((size, size))
            out = BytesIO()
            im.convert("RGB").save(out, "JPEG", quality=80)
        return out.getvalue()
    except (DashboardError, OSError, ValueError):
        return None


def thumbnail(backend: str | None, path: str | None, version: str, size: int = THUMB_PX) -> bytes | None:
    """A small JPEG of a stored image (reference or result), or None when it cannot be read."""
    if not backend or not path:
        return None
    return _thumbnail(backend, path, version, size)


def human_bytes(n: int | None) -> str:
    """Decimal units (1 KB = 1000 bytes), as the browser's file picker counts them."""
    if n is None:
        return ""
    for unit in ("B", "KB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def notes_text(notes) -> str:
    """Core's normalisation notes ("downscaled from ...") as a sentence of their own, or ""."""
    if not notes:
        return ""
    text = "; ".join(notes)
    return " " + text[0].upper() + text[1:] + "."


def history_csv(db_path, flt) -> bytes:
    """The CSV download of a history filter (all pages), from core.export.history.

    Runs when the user clicks (deferred), outside the script thread: it opens its own Store.
    """
    from core import export
    from core.store import open_store

    records = open_store(db_path)
    try:
        return export.to_csv_bytes(records, flt)
    finally:
        records.close()


def cell(value: Any) -> str:
    """A JSON value as one table cell (diff tables)."""
    if value is None:
        return "null"
    return value if isinstance(value, str) else json.dumps(abbreviate(value), ensure_ascii=False)


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


@st.cache_resource(max_entries=32, ttl=600, show_spinner=False)
def _plan(spec_json: str, db_path: str, backend: str, _records, _storage):
    from core.batches import plans

    return plans.make_plan(json.loads(spec_json), store=_records, storage=_storage)


def plan(spec: dict):
    """`plans.make_plan` for the Generate form, cached by spec: a plan of thousands of requests
    validates every body, and the form reruns on each keystroke. Plans are frozen values."""
    from core.catalog.payloads import canonical_json

    s = settings()
    return _plan(canonical_json(spec), str(s.db_path), s.storage_backend, store(), storage())

