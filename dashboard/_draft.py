"""Generate's draft: every session-state key of the Generate form (the names, and the functions
that make the per-model ones), and keeping the form for this browser (`core.batches.drafts`, under
the id the address carries) across a page change, a reload and a restart.

Invariants:
- No other module spells a Generate key: widgets and the page take theirs from here.
- What the draft keeps is decided here only: the names in `_KEPT` and the keys made by the
  functions in `_KEPT_PREFIXES` (every parameter, sweep and LoRA input of a model). A key not kept
  is a button, a table or a value made afresh from kept ones.
- A LoRA table is kept as its rows (`lora_rows_key`), not as the data editor's state, which is
  only an edit of the table it was drawn with: on a new arrival the editor is drawn afresh from
  the kept rows (`lora_table`).
- Restoring never trusts the draft: each value is checked by the caller (`restore(valid=...)`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from core.catalog import prompts
from core.errors import DashboardError
from dashboard import _resources

DRAFT_PARAM = "draft"    # the address's query parameter naming this browser's Generate draft
_ID = "_draft_id"        # this session's draft id
_LOADED = "_draft_loaded"  # the draft id whose values `_VALUES` holds
_VALUES = "_draft"       # the draft as last loaded or saved
ARRIVED = "_arrived"     # set by app.py: this run arrived on the page (or is a session's first)

# ------------------------------------------------------------------------------ the form's keys

REFS = "gen_refs"
EXTRA = "opt_extra"
MODELS = "gen_models"
SEED_MODE = "seed_mode"
SEED_N = "seed_n"
SEED_LIST = "seed_list"
RANDOM_SEEDS = "random_seeds"
BATCH_NAME = "batch_name"
ACTIVE_BATCH = "active_batch"   # the current batch, shown under the run button
# not kept: buttons and tables
NEW_SEEDS = "new_seeds"
RUN = "run"
# the batch this session sent (never restored from the draft: another tab or a reload did not send it)
LAUNCHED = "launched_here"
CLOSE_BATCH = "close_batch"
CONTENDERS = "gen_contenders"


def watch_key(batch_id: str) -> str:
    """An unfinished, running batch's Watch button."""
    return f"watch_{batch_id}"


def resume_key(batch_id: str) -> str:
    """An unfinished, stopped batch's Resume button."""
    return f"resume_{batch_id}"


def resume_current_key(batch_id: str) -> str:
    """The current batch's Resume button, once its runner stopped."""
    return f"resume_current_{batch_id}"


def cancel_key(batch_id: str) -> str:
    return f"cancel_{batch_id}"


def option_key(option: str) -> str:
    """A prompt option's multiselect (`prompts.CATALOG_KEYS`)."""
    return f"opt_{option}"


_PARAM, _SWEEP, _LORA_ROWS = "param::", "gen_sweep::", "gen_lora_rows::"
_LORA_MODE, _LORA_SCALES, _LORA_NONE = "gen_lora_mode::", "gen_lora_scales::", "gen_lora_none::"
_KEPT = (REFS, *(option_key(k) for k in prompts.CATALOG_KEYS), EXTRA, MODELS, SEED_MODE, SEED_N,
         SEED_LIST, RANDOM_SEEDS, BATCH_NAME, ACTIVE_BATCH)
_KEPT_PREFIXES = (_PARAM, _SWEEP, _LORA_ROWS, _LORA_MODE, _LORA_SCALES, _LORA_NONE)


def param_key(endpoint: str, name: str) -> str:
    """A model's parameter widget (`__extra__`: its "other parameters" box)."""
    return f"{_PARAM}{endpoint}::{name}"


def sweep_key(endpoint: str) -> str:
    """Which parameters of a model get several values."""
    return f"{_SWEEP}{endpoint}"


def sweep_values_key(endpoint: str, name: str) -> str:
    """The values typed for one swept parameter."""
    return f"{_SWEEP}{endpoint}::{name}"


def lora_rows_key(endpoint: str) -> str:
    """A model's LoRA table as rows `[path, scale, set]`, as the editor last showed it (kept)."""
    return f"{_LORA_ROWS}{endpoint}"


def lora_editor_key(endpoint: str) -> str:
    """The LoRA data editor's own state: an edit of the rows it was drawn with (not kept)."""
    return f"gen_loras::{endpoint}"


def _lora_base_key(endpoint: str) -> str:
    return f"_lora_base::{endpoint}"


def lora_mode_key(endpoint: str) -> str:
    return f"{_LORA_MODE}{endpoint}"


def lora_scales_key(endpoint: str) -> str:
    return f"{_LORA_SCALES}{endpoint}"


def lora_none_key(endpoint: str) -> str:
    return f"{_LORA_NONE}{endpoint}"


def is_per_model(key: Any) -> bool:
    """A kept key made for one model (a parameter, a sweep or a LoRA input)."""
    return isinstance(key, str) and key.startswith(_KEPT_PREFIXES)


def kept(key: Any) -> bool:
    """Whether the draft keeps this key's value."""
    return key in _KEPT or is_per_model(key)


# ------------------------------------------------------------------------------ the draft id

def adopt_address() -> None:
    """A new session takes the draft id its address carries (see `_identity.adopt_address`)."""
    from core.batches import drafts

    if not st.session_state.get(_ID) and drafts.valid_id(st.query_params.get(DRAFT_PARAM)):
        st.session_state[_ID] = st.query_params[DRAFT_PARAM]


def remember_in_address() -> None:
    """The address carries this session's draft id on every page, so a reload finds the draft."""
    draft = st.session_state.get(_ID)
    if draft and st.query_params.get(DRAFT_PARAM) != draft:
        st.query_params[DRAFT_PARAM] = draft


def _draft_id() -> str:
    """This browser's draft id: the address's, else the session's, else a new one."""
    from core.batches import drafts

    did = st.query_params.get(DRAFT_PARAM)
    if not drafts.valid_id(did):
        did = st.session_state.get(_ID) or drafts.new_id()
    if st.query_params.get(DRAFT_PARAM) != did:
        st.query_params[DRAFT_PARAM] = did
    st.session_state[_ID] = did
    return did


# ------------------------------------------------------------------------------ load, restore, save

def load() -> dict:
    """The Generate form's saved values for this browser (read from disk once per session)."""
    from core.batches import drafts

    did = _draft_id()
    if st.session_state.get(_LOADED) != did:
        st.session_state[_VALUES] = drafts.load(_resources.settings(), did)
        st.session_state[_LOADED] = did
    return dict(st.session_state[_VALUES])


def restore(key: str, valid: Callable[[Any], bool] = lambda v: True, default: Any = None) -> None:
    """Give a widget (or the page) its draft value when this session has none yet, or when the
    person just arrived from another page (the draft, saved at the end of every run of Generate,
    holds what the form last showed; Streamlit may have dropped or kept a stale widget value)."""
    state = st.session_state
    draft = state.get(_VALUES, {})
    if key in state and not (state.get(ARRIVED) and key in draft):
        return
    if key in draft and draft[key] is not None and valid(draft[key]):
        state[key] = draft[key]
    elif default is not None:
        state[key] = default


def restore_per_model() -> None:
    """`restore` for every per-model key the draft holds; each step checks its values again
    against the model's fields when it draws them."""
    for key in list(st.session_state.get(_VALUES, {})):
        if is_per_model(key):
            restore(key)


def lora_table(endpoint: str) -> list[list]:
    """The rows the LoRA editor is drawn with: this session's, or on arrival the kept ones. A new
    base drops the editor's state, which is an edit of the old base (applied twice otherwise)."""
    state = st.session_state
    base = _lora_base_key(endpoint)
    if base not in state or state.get(ARRIVED):
        rows = state.get(lora_rows_key(endpoint))
        state[base] = [list(r) for r in rows if _lora_row_ok(r)] if isinstance(rows, list) else []
        state.pop(lora_editor_key(endpoint), None)
    return state[base]


def _lora_row_ok(row: Any) -> bool:
    return (isinstance(row, (list, tuple)) and len(row) == 3 and isinstance(row[0], str)
            and isinstance(row[1], (int, float)) and isinstance(row[2], int))


def values() -> dict:
    """What the Generate draft keeps, as this session holds it: every kept form value, the random
    seeds and the current batch."""
    state = st.session_state
    keys = [k for k in _KEPT if k in state] + [k for k in state if is_per_model(k)]
    return {k: state[k] for k in keys}


def save(kept: dict | None = None) -> None:
    """Keep the form's values for this browser (written only when they changed)."""
    from core.batches import drafts

    kept = values() if kept is None else kept
    if kept == st.session_state.get(_VALUES):
        return
    try:
        drafts.save(_resources.settings(), _draft_id(), kept)
    except DashboardError as e:
        st.caption(str(e))
        return
    st.session_state[_VALUES] = dict(kept)


def keep_on_leaving() -> None:
    """In the run that leaves Generate, before the page it goes to: keep the form as the session
    last held it. Generate saves its draft at the end of each of its runs, but a page link clicked
    during one (just after typing a batch name, say) cuts it short, and this run is the last that
    sees the form's values: Streamlit forgets a widget's value once a run ends without drawing it.
    Merged over the draft this session loaded or saved, so a key the cut-short run had not yet
    restored keeps its saved value."""
    state = st.session_state
    if _VALUES not in state or state.get(_LOADED) != state.get(_ID):
        return  # this session never showed the form: nothing of it to keep
    save({**state[_VALUES], **values()})
