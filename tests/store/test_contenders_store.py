"""Contenders in the store (migration m014, core/store/contenders.py): every request names its
contender, requests stored before contenders existed get theirs derived, a stored contender reads
back exactly as written, and a re-run keeps the contender of the request it repeats."""
from __future__ import annotations

import json

from sqlite_utils.migrations import Migrations

from core.batches import plans
from core.catalog import contenders
from core.catalog.payloads import canonical_json, payload_hash
from core.store import db, open_store
from tests.review_support import EDIT, LORA, SCHNELL


def _before_contenders(path):
    """A store migrated up to the migration before m014, as a dashboard of last week left it."""
    conn = db.connect(path, migrate=False)
    older = Migrations("dashboard")
    names = [m.name for m in db.MIGRATIONS._migrations]
    older._migrations = db.MIGRATIONS._migrations[:names.index("m014_contenders")]
    older.apply(conn)
    assert "contenders" not in conn.table_names()
    return conn


def _old_request(conn, request_id, endpoint, payload):
    conn.execute(
        "INSERT INTO requests (id, endpoint, payload_json, payload_hash, status, created_at) "
        "VALUES (?, ?, ?, ?, 'completed', '2026-01-01T00:00:00+00:00')",
        [request_id, endpoint, canonical_json(payload), payload_hash(payload)])


def test_old_requests_get_the_contender_a_new_request_with_the_same_body_gets(tmp_path):
    path = tmp_path / "dashboard.db"
    conn = _before_contenders(path)
    base = {"prompt": "A Woman", "seed": 1, "image_size": "square_hd", "guidance_scale": 3.5}
    _old_request(conn, "a", EDIT, {**base, "num_inference_steps": 7, "image_urls": ["reference://x"]})
    _old_request(conn, "b", EDIT, {**base, "num_inference_steps": 28, "loras": [LORA],
                                   "image_urls": ["reference://x"]})
    _old_request(conn, "c", SCHNELL, {**base, "num_inference_steps": 7})
    _old_request(conn, "d", SCHNELL, {**base, "seed": 2, "num_inference_steps": 7})
    conn.conn.close()

    st = open_store(path)  # applies m014
    old = {r: st.get_request(r) for r in "abcd"}
    assert old["c"].contender_id == old["d"].contender_id, "seed and prompt belong to the group"
    assert len({old[r].contender_id for r in "abc"}) == 3
    new = st.record_request(endpoint=EDIT, payload={**base, "seed": 9, "num_inference_steps": 7,
                                                    "image_urls": ["reference://y"]})
    assert new.contender_id == old["a"].contender_id, "same settings, same contender, old or new"
    stored = st.get_contenders([old["b"].contender_id])[old["b"].contender_id]
    assert (stored.endpoint, dict(stored.params)) == (EDIT, {"guidance_scale": 3.5, "loras": [LORA]}), \
        "28 steps is the schema default: left out of the parameters"
    indexes = {tuple(i.columns) for i in st.db["requests"].indexes}
    assert ("batch_id", "contender_id") in indexes
    st.close()


def test_a_stored_contender_reads_back_as_written_not_recomputed(st):
    written = contenders.Contender(id="c1:written-long-ago", endpoint=SCHNELL,
                                   params={"num_inference_steps": 4, "guidance_scale": 3.5})
    st.save_contenders([written])
    st.save_contenders([written])  # idempotent
    read = st.get_contenders(["c1:written-long-ago", "c1:unknown"])
    assert list(read) == ["c1:written-long-ago"]
    assert read["c1:written-long-ago"].params == {"num_inference_steps": 4, "guidance_scale": 3.5}
    assert st.db.execute("SELECT count(*) FROM contenders").fetchone()[0] == 1


def test_a_rerun_keeps_its_contender(st):
    """Even when today's rule would derive another id from the same body (e.g. a schema default
    changed since), the re-run is compared with the request it repeats."""
    original = st.record_request(endpoint=SCHNELL, payload={"prompt": "p", "seed": 1, "num_inference_steps": 7})
    kept = contenders.Contender(id="c1:from-an-older-rule", endpoint=SCHNELL, params={"num_inference_steps": 7})
    st.save_contenders([kept])
    # by hand, outside the store's methods (an older rule's id)
    st.db.execute("UPDATE requests SET contender_id = ? WHERE id = ?", [kept.id, original.id])
    again = st.rerun_request(original.id)
    assert again.contender_id == "c1:from-an-older-rule" and again.rerun_of == original.id


def test_create_batch_writes_each_planned_contender_once_in_planning_order(st):
    plan = plans.make_plan({"name": "steps", "models": [SCHNELL, "fal-ai/flux-2"],
                            "options": {"subject": ["Woman"]}, "seeds": [1],
                            "sweep": {"fal-ai/flux-2": {"num_inference_steps": [7, 28]}}})
    batch = st.create_batch(plan.new_batch(), dry_run=True)
    requests = st.batch_requests(batch.id)
    assert len(plan.contenders) == 3
    assert [r.contender_id for r in requests] == [c.id for c in plan.contenders]
    assert [c.id for c in st.contenders_in(batch_id=batch.id)] == [c.id for c in plan.contenders]
    assert st.contenders_in(batch_id=batch.id)[2].value("num_inference_steps") == 28
    assert json.loads(st.db.execute("SELECT params_json FROM contenders WHERE id = ?",
                                    [plan.contenders[1].id]).fetchone()[0]) == dict(plan.contenders[1].params)
