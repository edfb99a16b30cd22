"""Fidelity metrics and response checks of stored results (core/evaluation/fidelity.py): computed off the
page's thread, stored on result_images, surviving a restart; surprises flagged from fal's answer.

The reference photo is scikit-image's astronaut (a real face); outputs are derived from it
(blurred copy = same person) or carry no face (a gradient), so the expected statuses are known.
"""
from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from core.values import SAME_PERSON_THRESHOLD
from tests.evaluation import _metric_oracles as oracles
from core.evaluation import checks, fidelity, measuring, pool
from core.evaluation import metrics
from core.batches import plans, service
from core.photos import references
from core.catalog import registry
from core.batches import schedule
from core.values import HistoryFilter
from core.config import REPO_ROOT, load_settings
from core.store import open_store
from core.blobs import open_storage
from tests.results import record_result

SCHNELL, EDIT = registry.DEFAULT_MODELS


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def _gradient(size=(1024, 1024)) -> Image.Image:
    ramp = np.tile(np.linspace(0, 255, size[0], dtype=np.uint8), (size[1], 1))
    return Image.fromarray(np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 128)], -1))


def _batch(st, storage, settings, *, aspect="1:1", subjects=("Woman",), seeds=(1,)):
    ref = references.add_reference(st, storage, _png(_astronaut()), role="face", filename="astro.png",
                                   settings=settings)
    plan = service.plan_batch({"name": "fid", "references": [ref.id], "models": [SCHNELL, EDIT],
                            "options": {"subject": list(subjects), "aspect_ratio": [aspect]},
                            "seeds": list(seeds)}, store=st)
    return st.create_batch(plan.new_batch(), dry_run=False), ref


def _complete(st, storage, rec, image: Image.Image, *, response_extra=None, nsfw=False):
    """Store `image` as the result of `rec` the way the runner does (bytes in storage, row, response)."""
    record_result(st, storage, rec.id, [_png(image)], response_extra=response_extra, nsfw=nsfw)


@pytest.fixture
def env(settings):
    settings.ensure_dirs()
    st = open_store(settings)
    yield st, open_storage(settings), settings
    st.close()


def _by_endpoint(st, batch_id):
    return {r.endpoint: r for r in st.batch_requests(batch_id)}


def _image_id(st, request_id):
    return st.result_images([request_id])[request_id][0].id


# ---------------------------------------------------------------------------- response checks


def test_check_response_flags_each_surprise_by_name():
    """Each way fal's answer can differ from the request has its own code; a faithful answer has none."""
    ok = checks.check_response(requested=(576, 1024), reported=(576, 1024), pixels=(576, 1024),
                                 seed_sent=7, seed_returned=7, nsfw=False)
    assert ok.flags == ()
    square = checks.check_response(requested=(576, 1024), reported=(1024, 1024), pixels=(1024, 1024),
                                     seed_sent=7, seed_returned=7, nsfw=False)
    assert square.flags == ("size_mismatch", "aspect_mismatch")
    rounded = checks.check_response(requested=(1000, 1000), reported=None, pixels=(1008, 1008),
                                      seed_sent=None, seed_returned=3, nsfw=None)
    assert rounded.flags == ("size_mismatch",), "same shape, other size: not an aspect surprise"
    lying = checks.check_response(requested=None, reported=(512, 512), pixels=(1024, 1024),
                                    seed_sent=7, seed_returned=8, nsfw=True)
    assert lying.flags == ("reported_size_wrong", "seed_mismatch", "nsfw")
    silent = checks.check_response(requested=(512, 512), reported=None, pixels=None, seed_sent=7,
                                     seed_returned=None, nsfw=False, readable=False)
    assert silent.flags == ("seed_missing", "unreadable")
    assert set(silent.flags) | set(lying.flags) | set(square.flags) <= set(checks.CHECK_FLAGS)


def test_a_size_mismatch_from_the_fal_standin_is_flagged(env, fal_standin, monkeypatch):
    """A real run through the runner and the fal stand-in, whose schnell answers a square image to a
    9:16 request: the check marks that output, and only that one, as a surprise."""
    st, storage, _ = env
    settings = load_settings()  # now pointing at the stand-in (FAL_KEY set)
    batch, _ = _batch(st, storage, settings, aspect="9:16")
    real = fal_standin._output_size
    monkeypatch.setattr(fal_standin, "_output_size",
                        lambda job: (1024, 1024) if job.endpoint.endpoint_id == SCHNELL else real(job))
    report = schedule.run_batch(batch.id, settings=settings)
    assert report.progress.counts == {"completed": 2}

    fidelity.compute_pending(st, storage, batch_id=batch.id)
    reqs = _by_endpoint(st, batch.id)
    got = st.image_metrics([_image_id(st, reqs[SCHNELL].id), _image_id(st, reqs[EDIT].id)])
    schnell, edit = (got[_image_id(st, reqs[m].id)] for m in (SCHNELL, EDIT))
    assert (schnell.requested_width, schnell.requested_height) == (576, 1024)
    assert (schnell.pixel_width, schnell.pixel_height) == (1024, 1024)
    assert schnell.check_flags == ("size_mismatch", "aspect_mismatch")
    assert edit.check_flags == ()
    assert (edit.pixel_width, edit.pixel_height) == (576, 1024)
    assert edit.seed_sent == edit.seed_returned == 1 and edit.checked_at
    # and the history can show only the surprising requests
    page = st.query_history(HistoryFilter(batch_id=batch.id, surprises=True))
    assert [r.endpoint for r in page.rows] == [SCHNELL]


def test_seed_and_nsfw_surprises_are_stored(env):
    st, storage, settings = env
    batch, _ = _batch(st, storage, settings)
    reqs = _by_endpoint(st, batch.id)
    _complete(st, storage, reqs[SCHNELL], _gradient(), response_extra={"seed": 999}, nsfw=True)
    fidelity.compute_pending(st, storage)
    m = st.image_metrics([_image_id(st, reqs[SCHNELL].id)])[_image_id(st, reqs[SCHNELL].id)]
    assert m.seed_sent == 1 and m.seed_returned == 999
    assert m.check_flags == ("seed_mismatch", "nsfw")


# ---------------------------------------------------------------------------- metrics on stored rows


def test_pending_images_get_fidelity_against_the_groups_first_reference(env):
    """Edit output (a blurred copy of the reference) = same person with SSIM; text-to-image output
    without a face = "no_face_output", no SSIM (different framing); nothing left pending."""
    st, storage, settings = env
    batch, ref = _batch(st, storage, settings)
    reqs = _by_endpoint(st, batch.id)
    _complete(st, storage, reqs[EDIT], _astronaut().filter(ImageFilter.GaussianBlur(2)))
    _complete(st, storage, reqs[SCHNELL], _gradient())
    assert st.pending_count(batch_id=batch.id) == 2

    report = fidelity.compute_pending(st, storage, batch_id=batch.id)
    assert (report.measured, report.failed, report.remaining) == (2, 0, 0)

    edit_id, schnell_id = _image_id(st, reqs[EDIT].id), _image_id(st, reqs[SCHNELL].id)
    got = st.image_metrics([edit_id, schnell_id])
    edit, schnell = got[edit_id], got[schnell_id]
    assert edit.face_status == "ok" and edit.same_person is True
    assert 0 < edit.face_distance < SAME_PERSON_THRESHOLD
    assert edit.ssim is not None and edit.ssim > 0.5
    assert edit.metrics_reference_id == ref.id and edit.metrics_version == metrics.METRICS_VERSION
    assert schnell.face_status == "no_face_output" and schnell.face_distance is None
    assert schnell.same_person is None and schnell.ssim is None
    assert schnell.phash_distance > 10 and schnell.ciede2000 > 5
    assert schnell.metrics_error is None and not schnell.pending


def test_identical_output_measures_zero(env):
    """The stored path gives the same baseline as core.evaluation.metrics: the reference itself is distance 0."""
    st, storage, settings = env
    batch, ref = _batch(st, storage, settings)
    rec = _by_endpoint(st, batch.id)[EDIT]
    # the stored reference is normalised (re-encoded): the same pixels are the stored ones
    _complete(st, storage, rec, Image.open(io.BytesIO(storage.get(ref.storage_path))))
    m = measuring.measure_image(st, storage, _image_id(st, rec.id))
    assert m.face_distance == 0.0 and m.phash_distance == 0 and m.ssim == pytest.approx(1.0)


def test_group_without_reference_records_no_reference(env):
    st, storage, settings = env
    plan = plans.make_plan({"name": "t2i", "models": [SCHNELL], "seeds": [1]})
    batch = st.create_batch(plan.new_batch(), dry_run=False)
    rec = st.batch_requests(batch.id)[0]
    _complete(st, storage, rec, _gradient())
    m = measuring.measure_image(st, storage, _image_id(st, rec.id))
    assert m.face_status == "no_reference" and m.metrics_error is None and not m.pending
    assert m.phash_distance is None and m.check_flags == ()


def test_unreadable_output_is_recorded_not_raised_and_can_be_retried(env):
    """A corrupt stored file ends the attempt with an error on the row (never an exception, never a
    loop); --retry-failed makes it pending again."""
    st, storage, settings = env
    batch, _ = _batch(st, storage, settings)
    rec = _by_endpoint(st, batch.id)[EDIT]
    _complete(st, storage, rec, _astronaut())
    image = st.result_images([rec.id])[rec.id][0]
    storage.put(image.storage_path, b"not an image", "image/png", overwrite=True)
    report = fidelity.compute_pending(st, storage)
    assert (report.measured, report.failed, report.remaining) == (1, 1, 0)
    m = st.image_metrics([image.id])[image.id]
    assert m.face_status == "error" and "could not be decoded" in m.metrics_error
    assert "unreadable" in m.check_flags
    assert fidelity.reset(st, failed=True) == 1
    assert st.pending_count() == 1


def test_an_unexpected_failure_is_recorded_and_the_pass_goes_on(env, monkeypatch):
    """A bug on one image (here: measure raising) ends that row with an error, never the pass."""
    st, storage, settings = env
    batch, _ = _batch(st, storage, settings)
    for rec in st.batch_requests(batch.id):
        _complete(st, storage, rec, _gradient())
    monkeypatch.setattr(metrics, "measure", lambda *a, **k: (_ for _ in ()).throw(ValueError("boom")))
    report = fidelity.compute_pending(st, storage)
    assert (report.measured, report.failed, report.remaining) == (2, 2, 0)
    rows = st.image_metrics([r[0] for r in st.db.execute("SELECT id FROM result_images")])
    assert all(m.face_status == "error" and "boom" in m.metrics_error for m in rows.values())
    assert all(m.checked_at for m in rows.values()), "the response checks are still stored"


def test_an_interrupted_pass_resumes_from_what_is_left_after_a_restart(env, settings):
    """Pending = metrics_at null: a pass stopped after one image leaves the other pending, and a new
    connection (a restarted process) sees the measured one and finishes the rest."""
    st, storage, _ = env
    batch, _ = _batch(st, storage, settings, subjects=("Woman", "Man"))
    for rec in st.batch_requests(batch.id):
        _complete(st, storage, rec, _gradient())
    first = fidelity.compute_pending(st, storage, limit=1)
    assert (first.measured, first.remaining) == (1, 3)
    st.close()

    again = open_store(settings)
    assert again.pending_count() == 3
    assert fidelity.compute_pending(again, open_storage(settings)).remaining == 0
    measured = again.db.execute("SELECT count(*) FROM result_images WHERE metrics_at IS NOT NULL").fetchone()[0]
    assert measured == 4
    again.close()


def test_recompute_outdated_only_touches_other_versions(env):
    st, storage, settings = env
    batch, _ = _batch(st, storage, settings)
    for rec in st.batch_requests(batch.id):
        _complete(st, storage, rec, _gradient())
    fidelity.compute_pending(st, storage)
    assert fidelity.reset(st, outdated=True) == 0
    st.db.execute("UPDATE result_images SET metrics_version = '0' WHERE rowid = (SELECT min(rowid) FROM result_images)")
    assert fidelity.reset(st, outdated=True) == 1
    assert fidelity.reset(st, everything=True, batch_id=batch.id) == 1  # the other one; the first is pending


# ---------------------------------------------------------------------------- background


def _wait(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_background_worker_fills_metrics_without_the_caller_measuring(env, settings, monkeypatch, sqlite_only):
    """start_background hands the work to a detached process: the caller never measures (measure is
    poisoned here), returns a pid at once, and a NEW connection later sees the metrics."""
    st, storage, _ = env
    batch, _ = _batch(st, storage, settings)
    for rec in st.batch_requests(batch.id):
        _complete(st, storage, rec, _gradient())

    def poisoned(*a, **k):
        raise AssertionError("the caller must not measure")

    monkeypatch.setattr(metrics, "measure", poisoned)
    assert fidelity.start_background(settings) is None      # switched off (as in every test)
    settings = dataclasses.replace(settings, metrics_worker=True)
    pid = fidelity.start_background(settings)
    assert isinstance(pid, int)

    def done():
        conn = open_store(settings)
        try:
            return conn.pending_count() == 0
        finally:
            conn.close()

    _wait(done)
    fresh = open_store(settings)
    rows = list(fresh.db.query("SELECT face_status, metrics_at FROM result_images"))
    assert len(rows) == 2 and all(r["metrics_at"] and r["face_status"] == "no_face_output" for r in rows)
    fresh.close()
    # the worker would exit after IDLE_EXIT_S idle; stopping it is as safe (nothing is half-written)
    os.kill(pid, signal.SIGTERM)
    _wait(lambda: not fidelity.worker_running(settings))


def test_nothing_pending_starts_nothing(settings):
    settings.ensure_dirs()
    assert fidelity.start_background(dataclasses.replace(settings, metrics_worker=True)) is None


def test_worker_follows_a_live_runner_and_measures_images_as_they_arrive(env, settings):
    """While a batch has a live runner the worker waits for its images instead of exiting; when the
    runner is gone and nothing is pending it exits on its own."""
    import threading

    st, storage, _ = env
    batch, _ = _batch(st, storage, settings)
    st.claim_batch(batch.id)  # this test process plays the runner
    stop = threading.Event()
    reports = []
    worker = threading.Thread(target=lambda: reports.append(
        fidelity.run_worker(settings, idle_exit=0.3, poll=0.05, stop=stop)))
    worker.start()
    try:
        time.sleep(0.5)  # longer than idle_exit: a worker that ignored the runner would be gone
        assert worker.is_alive()
        assert fidelity.worker_running(settings)
        for rec in st.batch_requests(batch.id):
            _complete(st, storage, rec, _gradient())
        _wait(lambda: st.pending_count() == 0, timeout=60)
        st.release_batch(batch.id)
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        stop.set()
        worker.join()
    assert reports[0].measured == 2 and reports[0].remaining == 0


def test_second_worker_leaves_the_work_to_the_first(settings):
    settings.ensure_dirs()
    fd = fidelity._try_lock(settings)
    try:
        assert fidelity.worker_running(settings)
        assert fidelity.run_worker(settings, idle_exit=0) is None
    finally:
        fidelity._unlock(fd)
    assert not fidelity.worker_running(settings)


def test_metrics_command_measures_pending_and_reports(env, settings):
    st, storage, _ = env
    batch, _ = _batch(st, storage, settings)
    for rec in st.batch_requests(batch.id):
        _complete(st, storage, rec, _gradient())
    out = subprocess.run([sys.executable, "-m", "core", "metrics", "--batch", batch.id], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "measured 2 image(s), 0 with an error; 0 pending" in out.stdout
    assert "no face output" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "core", "metrics", "--batch", "nope"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "No batch with id 'nope'" in bad.stderr


# ---------------------------------------------------------------------------- the measuring pool

_NUMBERS = ("face_status", "face_distance", "faces_reference", "faces_output", "phash_distance",
            "ciede2000", "ssim", "metrics_error", "check_flags", "metrics_reference_id",
            "pixel_width", "pixel_height", "seed_sent", "seed_returned")


def _logged_task(row, where):
    """A pool task (it runs in the pool's processes, so it is importable by name) that notes, per
    call, the process, its niceness and whether the models were already loaded, then measures
    as the real task does; it kills its process on the image named by FID_TEST_CRASH."""
    with open(os.environ["FID_TEST_LOG"], "a") as f:
        f.write(f"{os.getpid()} {os.nice(0)} {int(metrics._models is not None)} {row.image_id}\n")
    if row.image_id == os.environ.get("FID_TEST_CRASH"):
        os._exit(3)
    return pool._child_measure(row, where)


def _numbers(st):
    rows = st.image_metrics([r[0] for r in st.db.execute("SELECT id FROM result_images")])
    return {i: tuple(getattr(m, c) for c in _NUMBERS) for i, m in rows.items()}


def _four_images(st, storage, settings):
    batch, _ = _batch(st, storage, settings, subjects=("Woman", "Man"))
    faces = iter([_astronaut().filter(ImageFilter.GaussianBlur(2)), _astronaut().rotate(5),
                  _gradient(), _astronaut().resize((700, 700))])
    for rec in st.batch_requests(batch.id):
        _complete(st, storage, rec, next(faces))
    return batch


@pytest.fixture(autouse=True)
def _no_main_script_for_spawned_processes(monkeypatch):
    """Streamlit's AppTest (run earlier in the same session) leaves `__main__.__file__` pointing at
    dashboard/app.py, and multiprocessing's spawn re-runs the parent's main script in every child:
    the pool would start the dashboard page. In production the pool runs under `python -m core`,
    whose main multiprocessing never re-runs."""
    import sys

    main = sys.modules["__main__"]
    if getattr(main, "__spec__", None) is None:
        monkeypatch.delattr(main, "__file__", raising=False)


def test_a_pool_stores_the_same_numbers_with_models_loaded_once_per_niced_process(env, settings, tmp_path,
                                                                                  monkeypatch):
    """Two pool processes measure four images (faces and not) to exactly the numbers one process
    stores; each process loads dlib's models on its first image only and runs at the pool's
    niceness, so pages keep priority."""
    st, storage, _ = env
    _four_images(st, storage, settings)
    monkeypatch.setenv("FID_TEST_LOG", str(tmp_path / "calls.log"))
    seen = []
    with pool.MeasuringPool(settings, 2, task=_logged_task) as processes:
        report = fidelity.compute_pending(st, storage, pool=processes, on_image=seen.append)
    assert (report.measured, report.failed, report.remaining) == (4, 0, 0)
    assert len(seen) == 4 and all(not m.pending for m in seen)
    pooled = _numbers(st)

    calls = [line.split() for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert sorted(c[3] for c in calls) == sorted(pooled), "every image measured once, in the pool"
    pids = {c[0] for c in calls}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2
    for pid in pids:
        loaded = [c[2] for c in calls if c[0] == pid]
        assert loaded == ["0"] + ["1"] * (len(loaded) - 1), f"process {pid} loaded the models again"
    assert all(int(c[1]) >= pool.NICENESS for c in calls)

    assert fidelity.reset(st, everything=True) == 4
    assert fidelity.compute_pending(st, storage).measured == 4  # in this process
    assert _numbers(st) == pooled
    assert sum(v[0] == "ok" for v in pooled.values()) == 3


def test_a_pool_process_dying_on_an_image_fails_that_image_only(env, settings, tmp_path, monkeypatch):
    """A process that dies (a dlib crash, the out-of-memory killer) breaks the pool: the images in
    flight are measured again one at a time, the one that kills its process alone is recorded as
    failed (retryable), every other image is measured, and the pass ends."""
    st, storage, _ = env
    _four_images(st, storage, settings)
    victim = st.pending_image_ids()[1]
    monkeypatch.setenv("FID_TEST_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FID_TEST_CRASH", victim)
    with pool.MeasuringPool(settings, 2, task=_logged_task) as processes:
        report = fidelity.compute_pending(st, storage, pool=processes)
    assert (report.measured, report.failed, report.remaining) == (4, 1, 0)
    got = st.image_metrics(list(_numbers(st)))
    assert got[victim].face_status == "error"
    assert "process died" in got[victim].metrics_error and "--retry-failed" in got[victim].metrics_error
    assert got[victim].checked_at and got[victim].pixel_width, "the response checks are still stored"
    assert all(m.metrics_error is None for i, m in got.items() if i != victim)
    crashes = [line for line in (tmp_path / "calls.log").read_text().splitlines() if line.endswith(victim)]
    assert len(crashes) <= 2, "the image that kills its process is tried at most twice"


def test_a_stopped_pool_pass_finishes_what_is_in_flight_and_leaves_the_rest_pending(env, settings):
    """Stopping (SIGTERM in the worker) ends a pass without half-written rows: what was submitted
    is stored, the rest stays pending for the next worker."""
    import threading

    st, storage, _ = env
    _four_images(st, storage, settings)
    stop = threading.Event()
    with pool.MeasuringPool(settings, 1) as processes:
        report = fidelity.compute_pending(st, storage, pool=processes, stop=stop,
                                          on_image=lambda m: stop.set())
    assert 1 <= report.measured < 4 and report.measured + report.remaining == 4


def test_the_pool_size_is_a_checked_setting(settings):
    """DASHBOARD_METRICS_WORKERS: default 2, refused outside 1-32 with one line naming it; the
    command's --workers is checked the same way."""
    from core.errors import ConfigError

    assert settings.metrics_workers == 2
    assert load_settings(env={"DASHBOARD_METRICS_WORKERS": "3"}).metrics_workers == 3
    for bad in ("0", "33", "two"):
        with pytest.raises(ConfigError, match="DASHBOARD_METRICS_WORKERS"):
            load_settings(env={"DASHBOARD_METRICS_WORKERS": bad})
    out = subprocess.run([sys.executable, "-m", "core", "metrics", "--workers", "0"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--workers: must be a whole number from 1 to 32" in out.stderr


@pytest.mark.parametrize("output", ["blurred", "mirrored", "no_face", "rgba"])
def test_a_prepared_reference_measures_what_each_metric_measures_on_the_photo(output):
    """A pass prepares each reference once; every number must still equal the metric computed
    from the two photos one by one (face, phash, CIEDE2000, SSIM)."""
    from PIL import ImageOps

    reference = _astronaut()
    out = {"blurred": reference.filter(ImageFilter.GaussianBlur(2)).resize((1024, 1024)),
           "mirrored": ImageOps.mirror(reference), "no_face": _gradient(),
           "rgba": reference.rotate(4).convert("RGBA")}[output]
    got = metrics.measure(metrics.prepare_reference(_png(reference)), out, same_framing=True)
    assert got.face == oracles.face_distance(reference, out)
    assert got.phash_distance == oracles.phash_distance(reference, out)
    assert got.ciede2000 == oracles.ciede2000(reference, out)
    assert got.ssim == oracles.ssim(reference, out)


def test_a_reference_dlib_fails_on_gives_error_for_every_output(dlib_fails):
    """dlib failing on the reference is remembered with the prepared reference: each output then
    records status "error" with dlib's message, as measuring the photos directly does."""
    prepared = metrics.prepare_reference(_astronaut().rotate(2))
    for out in (_astronaut(), _gradient()):
        face = metrics.measure(prepared, out, same_framing=False).face
        assert (face.status, face.faces_reference, face.faces_output) == ("error", 0, 0)
        assert "Unsupported image type" in face.detail
        assert face == oracles.face_distance(_astronaut().rotate(2), out)
