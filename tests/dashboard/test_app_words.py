"""What a new teammate reads, in AppTest (issue 12): review moves on with reviewed groups included,
an out-of-range number is refused where the run button would be, cancelled and dry-run requests
are never called "done", "sent" or costed, the last payload shows what left, uploads say only what
happened, a re-run is labelled, every page ends with its next step, and no table shows "None"."""
from __future__ import annotations

import io
import json

from PIL import Image

from core.batches import plans, service
from core.evaluation import review
from core.photos import references
from core.config import load_settings
from core.blobs import open_storage
from tests.apptest_support import (PAGES, add_reference, all_text, assert_ok, open_page, photo, new_store, texts,
                                   wait_finished)
from tests.review_support import EDIT, SCHNELL, completed_batch


def _buttons(at):
    return {b.key: b for b in at.button}


def _page_links(at) -> list[str]:
    return [e.proto.label for e in at.get("page_link")]


def test_include_reviewed_moves_on_after_each_vote_instead_of_offering_group_1_again():
    batch, _, _ = completed_batch(options={"subject": ["Woman", "Man", "Robot"]})
    store = new_store()
    for item in review.review_items(store, batch.id, "ana"):   # every group judged already
        review.record_item_vote(store, item, rater="ana", verdict="both_good")
    at = open_page("review.py", user="ana")
    at.toggle(key="rev_include").set_value(True).run()
    order = [i.group.prompt for i in review.review_items(store, batch.id, "ana")]
    shown = []
    for _ in order:
        shown.append(next(m for m in texts(at.markdown) if m.strip("*") in order).strip("*"))
        _buttons(at)["rev_left"].click().run()
        _buttons(at)["rev_next"].click().run()      # what N does
        assert_ok(at)
    assert shown == order, "each group once, in order, never group 1 again"
    assert any("Nothing left to review" in t for t in texts(at.success))
    assert any("Leaderboard" in link for link in _page_links(at))
    # the latest verdicts replaced the earlier ones
    latest = review.latest_votes(new_store().list_votes(batch_id=batch.id))
    assert {v.verdict for v in latest} == {"left"}


def test_the_key_hint_names_each_key_once_and_n():
    completed_batch()
    at = open_page("review.py", user="ana")
    hint = next(c for c in texts(at.caption) if "keys:" in c)
    for part in ("← left better", "→ right better", "↑ both good", "↓ both bad", "S skip", "N next group"):
        assert part in hint, hint


def test_an_out_of_range_number_stays_visible_and_is_refused_where_the_run_button_was():
    ref = add_reference("red")
    at = open_page("generate.py")
    at.multiselect(key="gen_refs").set_value([ref.id]).run()
    at.number_input(key=f"param::{EDIT}::num_inference_steps").set_value(999).run()
    assert at.number_input(key=f"param::{EDIT}::num_inference_steps").value == 999, "not silently reset"
    errors = texts(at.error)
    assert any("num_inference_steps" in e for e in errors), errors
    blocked = next(e for e in errors if e.startswith("Nothing can run until these are fixed"))
    assert "FLUX.2 [dev] LoRA edit" in blocked and "num_inference_steps" in blocked
    assert not [b for b in at.button if b.key == "run"]
    assert not at.metric, "no count or cost of payloads that would not be sent"


def test_a_cancelled_batch_is_not_called_done_and_its_unsent_requests_cost_nothing():
    plan = plans.make_plan({"name": "to cancel", "models": [SCHNELL], "seeds": [1, 2, 3]})
    store = new_store()
    batch = store.create_batch(plan.new_batch(), dry_run=False)
    first, *rest = store.batch_requests(batch.id)
    store.mark_submitted(first.id)
    store.mark_queued(first.id, fal_request_id="f1", status_url="s", response_url="r", cancel_url="c")
    store.mark_completed(first.id, response={"images": []}, inference_time_s=1.0)
    for r in rest:
        store.mark_cancelled(r.id)
    store.request_cancel(batch.id)
    at = open_page("generate.py")
    at.session_state["active_batch"] = batch.id
    at.run()
    line = at.progress[0].proto.text
    assert "done" not in line and "1 of 3 answered by fal" in line and "2 cancelled (never sent)" in line
    assert f"${first.estimated_cost:.3f} spent" in line and f"estimate for all 3: ${plan.estimated_cost:.3f}" in line
    assert not any("see History for the errors" in w for w in texts(at.warning))
    assert any("2 requests cancelled before fal answered" in i for i in texts(at.info))
    assert not [b for b in at.button if b.key == f"cancel_{batch.id}"], "a finished batch offers no Cancel"

    hist = open_page("history.py")
    hist.toggle(key="hist_all_columns").set_value(True).run()
    table = hist.dataframe[0].value.set_index("id")
    assert table.loc[rest[0].id, "status"] == "cancelled — not sent"
    cost = table.loc[rest[0].id, "cost $"]
    assert cost == "" or cost != cost, "no cost (blank or NaN) for unsent"
    hist.selectbox(key="hist_detail").set_value(rest[0].id).run()
    assert not texts(hist.error), texts(hist.error)
    assert any("never sent" in i for i in texts(hist.info))
    assert any("never sent" in m for m in texts(hist.markdown))
    assert not any("exactly as stored and sent" in m for m in texts(hist.markdown))


def test_dry_run_rows_say_not_sent_and_show_no_cost():
    plan = plans.make_plan({"name": "dry", "models": [SCHNELL], "seeds": [1]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=True)
    service.resume(new_store(), batch.id, load_settings())
    wait_finished(batch.id)
    hist = open_page("history.py")
    table = hist.dataframe[0].value
    assert list(table["status"]) == ["dry run — not sent"]
    assert all(v == "" or v != v for v in table["cost $"]), "empty cost cells (blank or NaN)"
    assert any("cost nothing" in c for c in texts(hist.caption))


def test_last_payload_sent_shows_the_data_uri_that_left_not_the_local_token():
    ref = add_reference("red")
    store = new_store()
    body = {"prompt": "p", "seed": 1, "image_size": "square_hd", "image_urls": [references.payload_url(ref)]}
    r = store.record_request(endpoint=EDIT, payload=body, prompt="p", seed=1, estimated_cost=0.01)
    store.mark_submitted(r.id)
    at = open_page("history.py")
    shown = json.loads(at.code[0].value)
    assert shown["image_urls"][0].startswith("data:image/jpeg;base64") and "reference://" not in at.code[0].value
    assert len(at.code[0].value) < 2000, "abbreviated, never the whole base64"


def _jpeg_with_exif() -> bytes:
    im = Image.new("RGB", (640, 480), "blue")
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_upload_says_only_what_happened_to_each_photo():
    at = open_page("upload.py")
    files = [("clean.jpg", photo("red")), ("exif.jpg", _jpeg_with_exif()), ("again.jpg", photo("red")),
             ("notes.jpg", b"just some text\n")]
    s = load_settings()
    outcomes = []
    for name, data in files:
        try:
            outcomes.append((name, references.add_reference(new_store(), open_storage(s), data, role="face",
                                                            filename=name, settings=s), None))
        except Exception as e:  # noqa: BLE001 - the page shows core's message
            outcomes.append((name, None, str(e)))
    at.session_state["upload_outcomes"] = outcomes
    at.run()
    success = texts(at.success)
    clean = next(t for t in success if "clean.jpg" in t)
    assert "metadata" not in clean and ". —" not in clean and clean.endswith("640x480.")
    assert "Metadata removed (EXIF)" in next(t for t in success if "exif.jpg" in t)
    dup = next(t for t in texts(at.info) if "again.jpg" in t)
    assert "already there" in dup and "metadata" not in dup.lower()
    refused = next(t for t in texts(at.error) if "notes.jpg" in t)
    assert refused.count("notes.jpg") == 1 and refused.endswith("Nothing was stored.")


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


def test_every_page_ends_with_its_next_step_and_no_table_shows_none():
    """With a dry run recorded and a vote cast, each page renders, links to the next step, and no
    table cell or text reads "None"."""
    batch, _, _ = completed_batch(options={"subject": ["Woman", "Man"]})
    new_store().record_request(endpoint=SCHNELL, payload={"prompt": "p", "seed": 1}, prompt="p", seed=1,
                             estimated_cost=None)    # no cost, no time, no author: empty cells
    store = new_store()
    item = review.queue(store, batch.id, "ana").next
    review.record_item_vote(store, item, rater="ana", verdict="left")
    nexts = {"upload.py": "Generate", "generate.py": "History", "models.py": "Generate", "compare.py": "Review",
             "history.py": "Compare", "review.py": "Leaderboard", "leaderboard.py": "Generate"}
    for page in (*PAGES, "review.py", "leaderboard.py"):
        at = open_page(page, user="bo")
        for toggle in ("hist_all_columns", "lb_all_columns", "cmp_metrics_all"):
            if any(t.key == toggle for t in at.toggle):
                at.toggle(key=toggle).set_value(True).run()
        assert_ok(at)
        links = _page_links(at)
        assert any(link.startswith("Next:") and nexts[page].lower() in link.lower() for link in links), \
            (page, links)
        for frame in at.dataframe:
            values = frame.value.astype(str).to_numpy().ravel().tolist()
            assert "None" not in values, (page, frame.value.columns.tolist())
        assert "None" not in all_text(at).replace("None of", ""), page
