"""Result images where every host can read them (issue 19): with Supabase, in the private
SUPABASE_RESULTS_BUCKET, read by the server with the key and cached in the host's own images
folder; without Supabase, on local disk as before.

Every test runs real HTTP against the Supabase stand-in (tests/standins/supabase_server.py),
which answers as docs/supabase-storage.md says the real server does: an object of a private
bucket is not served by its public URL, only to a key (or a signed URL). "Host A" and "host B"
are two data directories sharing one stand-in, as two machines share one Supabase project.
"""
from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from core.batches import record
from core.blobs import LocalStorage, SupabaseStorage, open_storage, read_image, result_path
from core.config import load_settings
from core.errors import StorageError
from core.fal import parse_output


def _png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(out, "PNG")
    return out.getvalue()


class _CDN:
    def __init__(self, files):
        self.files = files

    def download(self, url):
        return self.files[url]


def _keep(storage, request_id: str, data: bytes):
    """Keep one result image the way the runner does (`record.keep_images`); its KeptImage."""
    url = f"https://v3.fal.media/files/{request_id}/0.png"
    output = parse_output({"images": [{"url": url, "width": 48, "height": 32}], "seed": 1})
    (kept,) = record.keep_images(_CDN({url: (data, "image/png")}), storage, request_id, output)
    return kept


def _host(tmp_path, name: str, standin=None):
    """The storage a host with data directory `<tmp>/<name>` opens (Supabase when `standin`)."""
    env = {"DASHBOARD_DATA_DIR": str(tmp_path / name)}
    if standin is not None:
        env |= {"SUPABASE_URL": standin.url, "SUPABASE_KEY": standin.key}
    settings = load_settings(env=env, secrets_path=tmp_path / "no-secrets.toml")
    settings.ensure_dirs()
    return settings, open_storage(settings)


def _downloads(standin, path: str) -> list:
    return [r for r in standin.requests if r.op == "download" and r.path.endswith(path)]


@pytest.fixture
def hosts(tmp_path, supabase_standin):
    a_settings, a = _host(tmp_path, "host-a", supabase_standin)
    b_settings, b = _host(tmp_path, "host-b", supabase_standin)
    try:
        yield supabase_standin, (a_settings, a), (b_settings, b)
    finally:
        a.close()
        b.close()


def test_a_result_kept_on_one_host_is_read_on_another_through_the_private_bucket_then_locally(hosts):
    """Host B never saw the image host A kept: it downloads it from the private results bucket
    with the key, keeps a copy in its own images folder, and reads that copy the second time."""
    standin, (a_settings, a), (b_settings, b) = hosts
    data = _png("teal")
    kept = _keep(a, "req-1", data)

    assert (kept.backend, kept.path) == ("supabase", result_path("req-1", kept.path.rsplit("/", 1)[1]))
    assert standin.object("results", kept.path).data == data          # in the results bucket ...
    assert standin.paths("references") == []                           # ... not the public one
    assert standin.buckets["results"].public is False                  # created private
    assert (a_settings.images_dir / kept.path).read_bytes() == data    # the writer cached it too
    (upload,) = [r for r in standin.requests if r.op == "upload" and r.path.endswith(kept.path)]
    assert "/object/results/" in upload.path and upload.form.get("file.content-type") == "image/png"

    copy = b_settings.images_dir / kept.path
    assert not copy.exists()
    first = read_image(b, kept.backend, kept.path)
    assert (first.data, first.problem) == (data, None)
    assert copy.read_bytes() == data
    (download,) = _downloads(standin, kept.path)
    assert download.headers["authorization"] == f"Bearer {standin.key}"   # the server's key, not a URL

    again = read_image(b, kept.backend, kept.path)
    assert again.data == data
    assert len(_downloads(standin, kept.path)) == 1                    # the second read was local


def test_a_result_has_no_public_url_and_the_bucket_refuses_its_public_address(hosts):
    """The results bucket is private: the storage hands out no URL for a result, and the public
    address anyone could build is refused; a reference photo stays public (fal reads it)."""
    standin, (_, a), _ = hosts
    kept = _keep(a, "req-2", _png("olive"))
    assert a.public_url(kept.path) is None

    public = httpx.get(f"{standin.url}/storage/v1/object/public/results/{kept.path}")
    assert public.status_code == 400 and public.json()["statusCode"] == "404"
    assert public.json()["error"] == "Bucket not found"
    anon = httpx.get(f"{standin.url}/storage/v1/object/results/{kept.path}",
                     headers={"Authorization": f"Bearer {standin.anon_key}"})
    assert anon.status_code == 400 and anon.json()["statusCode"] == "404"   # no policy, no object

    photo = a.put("team/photo-1.png", _png("pink"), "image/png")
    assert photo.public_url and httpx.get(photo.public_url).status_code == 200


def test_a_public_results_bucket_is_refused_before_anything_is_kept_in_it(tmp_path, supabase_standin):
    """Someone made the results bucket public: keeping a result there would publish it."""
    supabase_standin.add_bucket("results", public=True)
    _, a = _host(tmp_path, "host-a", supabase_standin)
    try:
        with pytest.raises(StorageError, match="'results' is public.*make it private.*SUPABASE_RESULTS_BUCKET"):
            _keep(a, "req-3", _png("red"))
    finally:
        a.close()
    assert supabase_standin.paths("results") == []


def test_without_supabase_results_stay_in_the_local_images_folder(tmp_path, supabase_standin):
    settings, storage = _host(tmp_path, "alone")
    assert isinstance(storage, LocalStorage)
    data = _png("navy")
    kept = _keep(storage, "req-4", data)
    assert kept.backend == "local"
    assert (settings.images_dir / kept.path).read_bytes() == data
    assert read_image(storage, "local", kept.path).data == data
    assert supabase_standin.requests == []


def test_a_bucket_outage_while_reading_says_so_and_the_image_shows_once_it_answers(hosts):
    """Storage answering 500, then not at all: a sentence saying it cannot be read now (never
    the key), nothing cached; once the bucket answers, the same read works."""
    standin, (_, a), (b_settings, b) = hosts
    data = _png("maroon")
    kept = _keep(a, "req-5", data)

    standin.fail("download", "500")
    read = read_image(b, kept.backend, kept.path)
    assert read.data is None and read.problem == "unreadable"
    assert read.message.startswith("the stored image cannot be read now")
    assert standin.key not in read.message
    assert not (b_settings.images_dir / kept.path).exists()

    assert read_image(b, kept.backend, kept.path).data == data


def test_an_unreachable_bucket_is_named_without_the_key(tmp_path, supabase_standin):
    _, a = _host(tmp_path, "host-a", supabase_standin)
    kept = _keep(a, "req-6", _png("gray"))
    a.close()
    url, key = supabase_standin.url, supabase_standin.key
    supabase_standin.stop()
    settings = load_settings(env={"DASHBOARD_DATA_DIR": str(tmp_path / "host-b"), "SUPABASE_URL": url,
                                  "SUPABASE_KEY": key}, secrets_path=tmp_path / "none")
    b = open_storage(settings)
    try:
        read = read_image(b, kept.backend, kept.path)
    finally:
        b.close()
    assert read.problem == "unreadable" and "cannot reach Supabase Storage" in read.message
    assert key not in read.message


def test_a_result_gone_from_the_bucket_reads_as_missing(hosts):
    standin, (_, a), (_, b) = hosts
    kept = _keep(a, "req-7", _png("lime"))
    del standin.objects[("results", kept.path)]
    read = read_image(b, kept.backend, kept.path)
    assert read.data is None and read.problem == "missing"
    assert "the stored image is missing" in read.message and kept.path in read.message


def test_a_result_kept_before_results_had_their_own_bucket_is_still_read(hosts):
    """Before SUPABASE_RESULTS_BUCKET, results went to the references bucket at the same path."""
    standin, _, (b_settings, b) = hosts
    data = _png("purple")
    path = result_path("req-old", "0-0123456789abcdef.png")
    old = SupabaseStorage(standin.url, standin.key, "references")
    try:
        old.put(path, data, "image/png")
    finally:
        old.close()
    assert read_image(b, "supabase", path).data == data
    assert (b_settings.images_dir / path).read_bytes() == data


def test_reference_photos_still_go_to_the_public_bucket(hosts):
    standin, (_, a), _ = hosts
    a.put("alice/ref-1.png", _png("white"), "image/png")
    assert standin.paths("references") == ["alice/ref-1.png"] and standin.paths("results") == []
    assert standin.buckets["references"].public is True


def test_the_cleanup_sweep_also_settles_the_results_buckets_entries(hosts):
    """A result object journalled for deletion (an upload whose answer was lost and whose delete
    failed) is deleted by the same sweep `reference cleanup` runs, from the results bucket."""
    from core.blobs import sweep

    standin, (a_settings, a), _ = hosts
    kept = _keep(a, "req-8", _png("orange"))
    a.results.journal.add(a.results.location, kept.path, "delete", reason="test: its delete failed")
    report = sweep(a)
    assert report.deleted == (kept.path,) and report.left == ()
    assert standin.paths("results") == []
    assert not (a_settings.images_dir / kept.path).exists()
    assert a.journal.pending() == []
