"""Generate page: references x option values x seeds x contenders -> a batch, shown in full
(contenders, count, estimated cost, exact payloads) before it is run, then run by a detached runner
process. A contender is a model at one parameter set: per model, several values of a numeric or
enum parameter, or several LoRA sets, make one contender each (core/batches/sweeps.py turns the
inputs into the plan's `sweep`).

The page is its steps, in order (`_generate_steps`; step 3 is `_generate_models`), each returning
its part of the spec, and the batch panels (`_current_batch`): a batch keeps running when the tab
is closed (`core.batches.service` starts a detached runner); the page only asks the service what
it is doing. Unfinished batches are listed and can be resumed.

The form is kept as a draft for this browser (`_draft`, under the id the address carries): every
widget's value, sweeps and LoRA tables included, the random seeds and the current batch come back
after a page change, a reload or a restart. Restored values are checked against what exists now
(a photo or a model that is gone is dropped).
"""
from __future__ import annotations

import streamlit as st

from dashboard import _current_batch, _draft, _generate_models, _generate_steps, _identity, _onboarding, _resources

settings = _resources.settings()
store = _resources.store()
_draft.load()

st.title("Generate")
_identity.allowed("run")   # a viewer or rater builds and reads plans; the refusal says why no Send
if settings.dry_run:
    st.info("**Dry run**: there is no FAL_KEY, so a run records every payload in History as "
            "*dry run* and sends nothing to fal.", icon=":material/science:")
_current_batch.unfinished_batches(store, settings)

st.subheader("1. Reference photos")
references = _generate_steps.references(store)
st.subheader("2. Prompt options")
options = _generate_steps.prompt_options()
st.subheader("3. Models and parameters")
models = _generate_models.models_and_parameters()
st.subheader("4. Seeds")
seeds = _generate_steps.seeds()
st.subheader("5. Review and run")
spec = {"references": references, "options": options, "models": models.models, "params": models.params,
        "seeds": seeds.seeds, **({"sweep": models.sweep} if models.sweep else {})}
_generate_steps.name_and_launch(store, settings, spec, models.problems + ([seeds.problem] if seeds.problem else []))

_current_batch.current_batch(store, settings)
_draft.save()
if st.session_state.get(_draft.ACTIVE_BATCH):
    _onboarding.next_step("compare.py", "compare the outputs side by side",
                          "Then Review judges them blind, and the Leaderboard counts the votes.")
else:
    _onboarding.next_step("history.py", "see every request in History",
                          "A run, live or dry, records each payload there; Compare shows the outputs.")
