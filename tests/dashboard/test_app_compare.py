"""Compare page: per group, reference | each model side by side with the prompt and each model's
parameters; filtering by batch and by option values; tabs ready for more views."""
from __future__ import annotations


from core.batches import plans, service
from core.catalog import registry
from core.config import load_settings
from core.blobs import open_storage
from tests.results import record_result
from tests.apptest_support import add_reference, new_store, open_page, photo, texts



SCHNELL, EDIT = registry.DEFAULT_MODELS


def _completed_batch(name="look", subjects=("Woman", "Man")):
    """A batch whose requests all completed, each with one stored result image."""
    ref = add_reference("red")
    store = new_store()
    plan = service.plan_batch({"name": name, "references": [ref.id], "options": {"subject": list(subjects)},
                            "models": [SCHNELL, EDIT], "seeds": [1]}, store=store)
    batch = store.create_batch(plan.new_batch(), dry_run=False)
    storage = open_storage(load_settings())
    for i, r in enumerate(store.batch_requests(batch.id)):
        data = photo(["blue", "green", "yellow", "purple"][i % 4], size=(512, 512), fmt="PNG")
        record_result(store, storage, r.id, [data], inference_s=1.2)
    return batch, ref


def test_compare_smoke_without_batches():
    at = open_page("compare.py")
    assert texts(at.title) == ["Compare"]
    assert any("Nothing to compare yet" in t for t in texts(at.info))


def test_each_group_shows_reference_and_both_models_with_prompt_and_params():
    batch, ref = _completed_batch()
    at = open_page("compare.py")
    assert at.selectbox(key="cmp_batch").value == batch.id
    assert [t.label for t in at.tabs][0] == "Side by side"
    prompts = [m for m in texts(at.markdown) if m.startswith("**A ")]
    assert prompts == ["**A Woman model, photorealistic**", "**A Man model, photorealistic**"]
    # per group: one reference photo + one image per model
    assert len(at.image) == 2 * (1 + 2)
    headers = " ".join(texts(at.markdown))
    assert "FLUX.1 [schnell]" in headers and "FLUX.2 [dev] LoRA edit" in headers
    params = [c for c in texts(at.caption) if "num_inference_steps" in c]
    assert len(params) == 4 and all("guidance_scale 3.5" in c for c in params)
    assert any(ref.role in c for img in at.image for c in img.captions)


def test_filter_by_option_value_keeps_matching_groups_only():
    batch, _ = _completed_batch()
    at = open_page("compare.py")
    at.multiselect(key=f"cmp_opt_{batch.id}_subject").set_value(["Man"]).run()
    assert [m for m in texts(at.markdown) if m.startswith("**A ")] == ["**A Man model, photorealistic**"]
    assert any(c.startswith("1 of 2 groups") for c in texts(at.caption))


def test_filter_by_batch_switches_the_groups():
    first, _ = _completed_batch("first", subjects=("Woman",))
    plan = plans.make_plan({"name": "second", "options": {"subject": ["Robot"]}, "models": [SCHNELL],
                            "seeds": [1]})
    second = new_store().create_batch(plan.new_batch(), dry_run=True)
    at = open_page("compare.py")
    at.selectbox(key="cmp_batch").set_value(first.id).run()
    assert [m for m in texts(at.markdown) if m.startswith("**A ")] == ["**A Woman model, photorealistic**"]
    at.selectbox(key="cmp_batch").set_value(second.id).run()
    assert [m for m in texts(at.markdown) if m.startswith("**A ")] == ["**A Robot model, photorealistic**"]
    assert any("No image yet" in c for c in texts(at.caption))


def test_grid_tab_lays_out_steps_against_the_lora_set_with_legends_reference_and_png():
    """The example sweep batch: the Grid tab offers what varies (contender, model, steps, LoRA set,
    pose), starts with steps on X and the LoRA set on Y holding the edit model and one pose, shows
    the reference beside four outputs with both legends, and offers the grid as one PNG."""
    from tests.review_support import completed_sweep_batch

    batch, groups, _ = completed_sweep_batch()
    at = open_page("compare.py")
    assert [t.label for t in at.tabs] == ["Side by side", "Fidelity", "Grid"]
    at.session_state["cmp_tab"] = "Grid"
    at.run()
    assert not at.exception
    x = at.selectbox(key=f"cmp_grid_x_{batch.id}")
    y = at.selectbox(key=f"cmp_grid_y_{batch.id}")
    assert (x.value, y.value) == ("param:num_inference_steps", "param:loras")
    assert x.options == ["Contender", "Model", "num inference steps", "LoRA set", "pose"]
    assert at.selectbox(key=f"cmp_grid_fix_{batch.id}_model").value == "FLUX.2 [dev] LoRA edit"
    assert at.selectbox(key=f"cmp_grid_fix_{batch.id}_option:pose").value == "Standing"
    shown = texts(at.markdown)
    for legend in ("**7 steps**", "**28 steps**", "**no LoRA**", "**studio-style 0.8**", "**Reference**"):
        assert legend in shown
    grid_captions = [c for img in at.image for c in img.captions if "·" in c and "steps" in c]
    assert "FLUX.2 [dev] LoRA edit · 28 steps · studio-style 0.8" in grid_captions
    assert [b.label for b in at.get("download_button")] == ["Download the grid as PNG"]

    # the other pose, and the contenders on X: five cells of the Walking group
    at.selectbox(key=f"cmp_grid_x_{batch.id}").set_value("contender").run()
    at.selectbox(key=f"cmp_grid_y_{batch.id}").set_value("").run()
    at.selectbox(key=f"cmp_grid_fix_{batch.id}_option:pose").set_value("Walking").run()
    assert not at.exception
    assert "**FLUX.1 [schnell]**" in texts(at.markdown)
    assert any("held: pose Walking" in c for c in texts(at.caption))


def test_a_plain_two_model_batch_still_shows_side_by_side_with_model_names():
    _completed_batch()
    at = open_page("compare.py")
    headers = [m for m in texts(at.markdown) if "badge" in m]
    assert headers[:2] == ["**FLUX.1 [schnell]** :green-badge[completed]",
                           "**FLUX.2 [dev] LoRA edit** :green-badge[completed]"]


# what a new teammate reads on this page

def test_a_rerun_is_labelled_in_compare():
    plan = plans.make_plan({"name": "rr", "models": [SCHNELL], "seeds": [1]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=True)
    old = new_store().batch_requests(batch.id)[0]
    new = new_store().rerun_request(old.id, dry_run=True)
    at = open_page("compare.py")
    cells = [m for m in texts(at.markdown) if "FLUX.1 [schnell]" in m]
    # one output per model in a group (the store's rule): the newest, and it says it is a re-run
    assert len(cells) == 1 and f"re-run of {old.id[:8]}" in cells[0]
    assert new.rerun_of == old.id
