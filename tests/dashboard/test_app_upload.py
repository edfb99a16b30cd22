"""Upload page: several photos at once, each with its role; per-file errors in core's words; a
gallery of stored references; the "already there" notice; archiving."""
from __future__ import annotations

from tests.apptest_support import add_reference, new_store, open_page, photo, texts
import io

from PIL import Image

from core.photos import references
from core.config import load_settings
from core.blobs import open_storage


def _drop(at, files):
    at.file_uploader[0].set_value(files)
    at.run()


def test_upload_page_smoke_empty_store():
    """Empty store: the drop zone and what to do first, from upload to the Leaderboard, no
    gallery cards."""
    at = open_page("upload.py")
    assert texts(at.title) == ["Upload reference photos"]
    assert at.file_uploader[0].accept_multiple_files
    start = next(t for t in texts(at.info) if "Start here" in t)
    assert ["Store photos", "Generate", "Review", "Leaderboard"] == [
        w for w in ("Store photos", "Generate", "Review", "Leaderboard") if w in start]
    assert start.index("Store photos") < start.index("Generate") < start.index("Review") < start.index("Leaderboard")


def test_several_photos_are_stored_with_their_roles_and_uploader_name():
    """Each dropped photo gets the role chosen for it and the sidebar name as created_by."""
    at = open_page("upload.py", user="Ana")
    _drop(at, [("face.jpg", photo("red"), "image/jpeg"), ("bag.png", photo("blue", fmt="PNG"), "image/png")])
    assert len(at.selectbox) == 2, "one role picker per file"
    at.selectbox[0].set_value("face")
    at.selectbox[1].set_value("product")
    at.button[0].click().run()

    assert len(at.success) == 2, texts(at.error)
    stored = {r.original_name: r for r in new_store().list_references()}
    assert stored["face.jpg"].role == "face" and stored["bag.png"].role == "product"
    assert {r.created_by for r in stored.values()} == {"Ana"}
    gallery = " ".join(texts(at.markdown) + texts(at.caption))
    assert "**product**" in gallery and "by Ana" in gallery
    assert at.file_uploader[0].value in (None, []), "stored files leave the drop zone"


def test_a_refused_file_gets_cores_message_and_the_others_are_still_stored():
    """A text file and a too-small photo are refused one by one, with the reason; the good one is kept."""
    at = open_page("upload.py")
    _drop(at, [("notes.txt", b"hello", "text/plain"),
               ("tiny.jpg", photo("green", size=(64, 64)), "image/jpeg"),
               ("good.jpg", photo("red"), "image/jpeg")])
    at.button[0].click().run()
    errors = texts(at.error)
    assert len(errors) == 2
    assert any("notes.txt" in e and "not an image" in e for e in errors)
    assert any("tiny.jpg" in e and "256 px" in e for e in errors)
    assert [r.original_name for r in new_store().list_references()] == ["good.jpg"]


def test_the_same_photo_again_is_not_stored_twice_and_says_so():
    """Re-uploading a stored photo shows who uploaded it first, and adds no reference."""
    add_reference("red", role="face", created_by="Ben")
    at = open_page("upload.py")
    _drop(at, [("again.jpg", photo("red"), "image/jpeg")])
    at.button[0].click().run()
    notice = " ".join(texts(at.info))
    assert "already there" in notice and "by Ben" in notice
    assert len(new_store().list_references()) == 1


def test_archive_hides_a_reference_until_show_archived():
    """Archive removes the card from the gallery; 'Show archived' brings it back marked archived."""
    ref = add_reference("red")
    at = open_page("upload.py")
    at.button(key=f"archive_{ref.id}").click().run()
    assert new_store().get_reference(ref.id).archived_at is not None
    assert any("No reference photos yet" in t for t in texts(at.info))
    at.toggle(key="show_archived").set_value(True).run()
    assert any("archived" in t for t in texts(at.caption))


# what a new teammate reads on this page

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
