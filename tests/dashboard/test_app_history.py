"""History page: filters, pagination that never loads more than a page, the detail view (payload
exactly as sent, response with data: URIs abbreviated, timings, errors), the last payload sent,
the diff of two requests, re-run, and the CSV download of the filtered rows."""
from __future__ import annotations

import csv
import io
import json

from core.batches import plans
from core.catalog import registry
from core.redact import abbreviate
from dashboard import _resources
from tests.apptest_support import new_store, open_page, shown, texts, wait_finished


from core.batches import service
from core.photos import references
from core.config import load_settings
from tests.apptest_support import add_reference

SCHNELL, EDIT = registry.DEFAULT_MODELS


def _record(prompt="A Woman model, photorealistic", endpoint=SCHNELL, seed=1, **extra):
    body = {"prompt": prompt, "seed": seed, "image_size": "square_hd", "num_inference_steps": 7, **extra}
    if endpoint == EDIT:
        body["image_urls"] = ["https://example.invalid/face.jpg"]
    return new_store().record_request(endpoint=endpoint, payload=body, prompt=prompt, seed=seed,
                                estimated_cost=0.003)


def _table(at):
    """The history table with every column (the request id is one of the columns shown on demand)."""
    if not at.toggle(key="hist_all_columns").value:
        at.toggle(key="hist_all_columns").set_value(True).run()
    return at.dataframe[0].value


def test_history_smoke_empty_store():
    at = open_page("history.py")
    assert texts(at.title) == ["History"]
    assert any("No requests yet" in t for t in texts(at.info))
    assert any("Nothing has been sent to fal yet" in t for t in texts(at.caption))


def test_filters_by_model_status_and_prompt_text():
    """Each filter narrows the table and the count to exactly the matching requests."""
    a = _record("A Woman model, in Walking pose, photorealistic")
    b = _record("A Man model, photorealistic", endpoint=EDIT)
    c = _record("A Robot model, photorealistic")
    store = new_store()
    store.mark_submitted(c.id)
    store.mark_failed(c.id, error_type="validation", error_message="bad")

    at = open_page("history.py")
    assert set(_table(at)["id"]) == {a.id, b.id, c.id}
    at.selectbox(key="hist_endpoint").set_value(EDIT).run()
    assert list(_table(at)["id"]) == [b.id]
    at.selectbox(key="hist_endpoint").set_value(None)
    at.selectbox(key="hist_status").set_value("failed").run()
    assert list(_table(at)["id"]) == [c.id]
    at.selectbox(key="hist_status").set_value(None)
    at.text_input(key="hist_text").set_value("walking").run()
    assert list(_table(at)["id"]) == [a.id]
    assert "**1** request" in texts(at.markdown)[0]


def test_filter_by_batch():
    plan = plans.make_plan({"name": "only this", "models": [SCHNELL], "seeds": [1, 2]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=True)
    _record()
    at = open_page("history.py")
    at.selectbox(key="hist_batch").set_value(batch.id).run()
    assert len(_table(at)) == 2 and set(_table(at)["status"]) == {"planned"}


def test_pagination_shows_one_page_at_a_time():
    """60 requests at 25 per page: 3 pages, each table holds at most a page, pages differ."""
    ids = [_record(seed=i).id for i in range(60)]
    at = open_page("history.py")
    first = list(_table(at)["id"])
    assert len(first) == 25 and "page 1 of 3" in texts(at.markdown)[0]
    at.pagination[0].set_value(3).run()
    last = list(_table(at)["id"])
    assert len(last) == 10 and not set(first) & set(last)
    assert set(first) | set(last) <= set(ids)
    at.selectbox(key="hist_page_size").set_value(100).run()
    assert len(_table(at)) == 60


def test_detail_shows_payload_as_sent_response_abbreviated_timings_and_error():
    """The detail view: the stored payload verbatim, the response with its data: URI shortened,
    the error in words, and the cost."""
    r = _record()
    store = new_store()
    store.mark_submitted(r.id)
    store.mark_queued(r.id, fal_request_id="fal-123", status_url="http://x/s",
                      response_url="http://x/r", cancel_url="http://x/c")
    data_uri = "data:image/png;base64," + "A" * 4000
    store.mark_completed(r.id, response={"images": [{"url": data_uri}], "timings": {"inference": 1.5}},
                        inference_time_s=1.5)

    at = open_page("history.py")
    at.selectbox(key="hist_detail").set_value(r.id).run()
    payload_shown, response_shown = [c.value for c in at.code][-2:]  # first block: last payload sent
    assert json.loads(payload_shown) == r.payload, "payload shown exactly as stored"
    response = json.loads(response_shown)
    assert response["images"][0]["url"] == abbreviate(data_uri) and "AAAA" not in response_shown
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Estimated cost"] == "$0.0030" and metrics["Inference"] == "1.5 s"
    assert any("fal-123" in c for c in texts(at.caption))


def test_failed_request_detail_says_what_went_wrong():
    r = _record()
    store = new_store()
    store.mark_submitted(r.id)
    store.mark_failed(r.id, error_type="validation", error_message="`seed` must be >= 0", http_status=422)
    at = open_page("history.py")
    at.selectbox(key="hist_detail").set_value(r.id).run()
    assert any("validation" in e and "HTTP 422" in e and "`seed` must be >= 0" in e for e in shown(at.error))


def test_last_payload_sent_is_shown_up_top():
    """The newest request that left for fal, like the old /api/debug/last-prompt."""
    _record("never sent")
    sent = _record("sent one")
    new_store().mark_submitted(sent.id)
    at = open_page("history.py")
    assert json.loads(at.code[0].value)["prompt"] == "sent one"


def test_diff_of_two_requests_lists_changed_fields():
    a = _record(seed=1)
    b = _record(seed=2, guidance_scale=5.0)
    at = open_page("history.py")
    at.selectbox(key="hist_detail").set_value(a.id).run()
    at.selectbox(key="hist_diff").set_value(b.id).run()
    diff = at.dataframe[1].value
    rows = {(row.change, row.field) for row in diff.itertuples()}
    assert ("changed", "seed") in rows and ("added", "guidance_scale") in rows


def test_rerun_creates_a_linked_request_that_the_runner_records():
    plan = plans.make_plan({"name": "rerun me", "models": [SCHNELL], "seeds": [5]})
    batch = new_store().create_batch(plan.new_batch(), dry_run=True)
    old = new_store().batch_requests(batch.id)[0]
    at = open_page("history.py", user="Ana")
    at.selectbox(key="hist_detail").set_value(old.id).run()
    at.button(key="hist_rerun").click().run()
    assert any("Re-run started" in s for s in texts(at.success))
    wait_finished(batch.id)
    reruns = [r for r in new_store().batch_requests(batch.id) if r.rerun_of == old.id]
    assert len(reruns) == 1 and reruns[0].created_by == "Ana" and reruns[0].status == "dry_run"
    assert reruns[0].payload == old.payload


def test_csv_download_exports_exactly_the_filtered_rows_of_all_pages(settings):
    """The download button exports the filter on screen (not just the visible page)."""
    walking = [_record(f"A Woman model, in Walking pose, photorealistic {i}").id for i in range(30)]
    _record("A Man model, photorealistic")
    at = open_page("history.py")
    at.text_input(key="hist_text").set_value("walking").run()
    assert len(_table(at)) == 25
    assert at.download_button(key="hist_csv").label == "Download CSV"
    data = _resources.history_csv(settings.db_path, at.session_state["hist_filter"])
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert sorted(r["request_id"] if "request_id" in r else r["id"] for r in rows) == sorted(walking)


def test_surprises_only_keeps_requests_whose_images_were_flagged_and_detail_says_why():
    """The response checks' flags (filled in the background by core.evaluation.fidelity) filter the table,
    and the detail view names the surprise under the image."""
    plain, flagged = _record("plain"), _record("flagged")
    store = new_store()
    for r in (plain, flagged):
        store.mark_submitted(r.id)
        store.mark_completed(r.id, response={"images": [{"url": "https://v3.fal.media/x.png"}]})
        image = store.add_result_image(r.id, idx=0, fal_url="https://v3.fal.media/x.png",
                                       storage_backend=None, storage_path=None, sha256=None, width=1024,
                                       height=1024, content_type="image/png", size_bytes=1, nsfw=False)
        flags = "seed_mismatch" if r is flagged else ""
        store.db.execute("UPDATE result_images SET check_flags = ?, metrics_at = ? WHERE id = ?",
                     [flags, "2026-01-01T00:00:00+00:00", image.id])
    at = open_page("history.py")
    assert len(_table(at)) == 2
    at.toggle(key="hist_surprises").set_value(True).run()
    assert list(_table(at)["id"]) == [flagged.id]
    at.selectbox(key="hist_detail").set_value(flagged.id).run()
    assert any("surprises: seed mismatch" in c for c in texts(at.caption))


# what a new teammate reads on this page

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
