"""No text a person typed becomes an image, a link or markup on any page (issue 20, part 6).

A name arrives in the address (`?user=...` sent to a teammate), a batch name, a prompt's extra
text, a reference photo's file name and a LoRA path are typed: each is filled with Markdown and
HTML payloads, every page is rendered, and no Markdown source on it (markdown, captions, alerts,
labels) carries them unescaped. Pages show typed text through `_format.plain` only."""
from __future__ import annotations

import re

import pytest

from core.batches import service
from core.blobs import open_storage
from core.config import load_settings
from core.evaluation import review
from core.photos import references
from core.store import open_store
from tests.apptest_support import PAGES, open_page
from dashboard._format import plain
from tests.review_support import EDIT, SCHNELL, complete, png

# a link, an image, HTML, emphasis, a colour and an icon; none of it may survive on a page
HOSTILE = ("**bold** [link](http://evil.example/x) ![img](http://tracker.example/p.png) <b>b</b> "
           ":red[alarm] :material/warning: www.evil.example https://evil.example/y ana@evil.example")
# the last segment of a LoRA path is what pages show (core.catalog.contenders.lora_name): no "/"
HOSTILE_LORA = "https://example.com/loras/**lora**[l](javascript:x)![i](data:x)<b>lb</b>:red[r].safetensors"

# pages whose first view shows a typed field in Markdown (the others show it in tables and pickers)
SHOWN_ON = ("upload.py", "compare.py", "review.py")

# what each payload would be as markup: a link's or an image's "](", an image's "![", HTML, bold
# text, a colour or an icon, unless a backslash escapes it
_MARKUP = [
    ("a link or an image", re.compile(r"(?<!\\)\]\(")),
    ("an image", re.compile(r"!\[")),
    ("HTML", re.compile(r"(?<!\\)<b>")),
    ("bold text", re.compile(r"(?<![\\*])\*\*(bold|lora)")),
    ("a colour", re.compile(r"(?<!\\):red\[")),
    ("an icon", re.compile(r"(?<!\\):material/warning")),
    # Markdown links a bare address after escapes apply: only an invisible joiner inside stops it
    ("a bare link", re.compile(r"www\.evil|:/+evil|\\:/+evil|\w@evil")),
]


def markup_in(text: str) -> list[str]:
    return [what for what, pattern in _MARKUP if pattern.search(text)]


def markdown_sources(at) -> list[tuple[str, str]]:
    """(kind, Markdown source) of everything on the page that Streamlit renders as Markdown: text
    elements and alerts, and the labels (and radio options) of widgets and expanders."""
    found: list[tuple[str, str]] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning",
                 "error", "toast"):
        found += [(kind, str(e.value)) for e in getattr(at, kind)]
    for kind in ("button", "checkbox", "toggle", "text_input", "text_area", "number_input", "selectbox",
                 "multiselect", "radio", "slider", "select_slider", "expander", "tabs", "metric",
                 "color_picker", "date_input", "time_input"):
        try:
            elements = list(getattr(at, kind))
        except (AttributeError, KeyError):
            continue
        for e in elements:
            label = getattr(e, "label", None)
            if label:
                found.append((f"{kind} label", str(label)))
            if kind == "radio":
                found += [("radio option", str(o)) for o in e.options]
    return found


@pytest.fixture
def hostile_store():
    """A completed batch in which every typed field carries the payloads, and a vote by the
    hostile name, so Compare, History, Review and the Leaderboard all have it to show."""
    s = load_settings()
    s.ensure_dirs()
    st = open_store(s)
    storage = open_storage(s)
    ref = references.add_reference(st, storage, png("red", (320, 320)), role="face",
                                   filename=f"{HOSTILE}.png", created_by=HOSTILE, settings=s)
    spec = {"name": HOSTILE, "models": [SCHNELL, EDIT], "seeds": [1], "references": [ref.id],
            "options": {"subject": ["Woman"], "extra": [HOSTILE]},
            "sweep": {EDIT: {"loras": [[], [{"path": HOSTILE_LORA, "scale": 0.8}]]}}}
    batch = st.create_batch(service.plan_batch(spec, store=st).new_batch(), dry_run=False,
                            created_by=HOSTILE)
    recs = st.batch_requests(batch.id)
    for i, rec in enumerate(recs):
        complete(st, storage, rec, ("blue", "green", "yellow")[i % 3])
    group = st.get_groups(batch.id)[0]
    left, right = [r for r in recs if r.group_id == group.id][:2]
    review.record_vote(st, group_id=group.id, left_request_id=left.id, right_request_id=right.id,
                       rater=HOSTILE, verdict="left", note=HOSTILE)
    st.close()
    return batch


def test_plain_leaves_no_image_colour_or_icon_in_hostile_text():
    assert plain("![img](http://t.example/p.png)") == "!\\[img\\](http\\:\u2060//t.example/p.png)"
    assert plain("a\n===") == "a\n\\=\\=\\="                                   # no heading
    assert plain("www.x.example ana@x.example") == "www\u2060.x.example ana\u2060@x.example"
    assert markup_in(plain(HOSTILE)) == []
    assert markup_in(plain(HOSTILE_LORA)) == []
    assert markup_in(HOSTILE) and markup_in(HOSTILE_LORA)  # the payloads are caught unescaped


@pytest.mark.parametrize("page", PAGES)
def test_no_typed_text_becomes_markup_on_any_page(page, hostile_store):
    at = open_page(page, query={"user": HOSTILE})
    sources = markdown_sources(at)
    bad = [(kind, what, source) for kind, source in sources for what in markup_in(source)]
    assert not bad, "\n".join(f"{kind} shows {what}: {source!r}" for kind, what, source in bad)
    if page in SHOWN_ON:
        # the check is not empty: the page does show the typed text, escaped
        assert any(plain(HOSTILE) in source for _, source in sources), sources


def test_the_grid_and_the_generate_errors_show_typed_text_as_text(hostile_store):
    """What the first view of a page does not show: Compare's Grid tab (its headings are the
    swept LoRA names and the typed options), and the errors Generate quotes a typed value in."""
    at = open_page("compare.py", query={"user": HOSTILE})
    at.session_state["cmp_tab"] = "Grid"
    at.run()
    sources = markdown_sources(at)
    bad = [(kind, what, source) for kind, source in sources for what in markup_in(source)]
    assert not bad, "\n".join(f"{kind} shows {what}: {source!r}" for kind, what, source in bad)
    assert any("lb" in source and "\\<b\\>" in source for _, source in sources), sources   # the LoRA is there

    at = open_page("generate.py", query={"user": HOSTILE})
    at.multiselect(key="gen_models").set_value([SCHNELL]).run()
    at.text_area(key=f"param::{SCHNELL}::__extra__").set_value(
        '{"num_inference_steps": "' + HOSTILE.replace('"', "'") + '"}').run()
    errors = [str(e.value) for e in at.error]
    assert errors and any("evil" in e for e in errors), errors       # the typed value is quoted...
    assert not [e for e in errors if markup_in(e)], errors           # ...as text
