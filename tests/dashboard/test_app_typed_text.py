"""Text a person typed is shown as text, never as markup: a batch name, an option value or a
file name with Markdown in it reads on the page exactly as it was typed (`_format.plain`)."""
from __future__ import annotations

from core.catalog import registry
from dashboard import _format
from tests.apptest_support import assert_ok, open_page, texts, wait_finished

SCHNELL = registry.DEFAULT_MODELS[0]
TYPED = "*big* [link](https://example.com) :red[alarm] :smile: `code` $x$ <b>"


def test_plain_escapes_every_markup_character_and_keeps_the_rest():
    assert _format.plain(TYPED) == (r"\*big\* [link\](https\:" "\u2060" r"//example.com) \:red[alarm] \:smile\: "
                                    r"\`code\` \$x\$ \<b\>")
    assert _format.plain("FLUX.1 [schnell]") == "FLUX.1 [schnell]"  # brackets alone are no markup
    assert _format.plain("1. first") == r"1\. first"      # not a list
    assert _format.plain("- item") == r"\- item"
    assert _format.plain("# title") == r"\# title"
    assert _format.plain("face_01.jpg") == r"face\_01.jpg"
    assert _format.plain("[ref][1]") == r"[ref\][1]"


def test_a_batch_name_and_a_name_typed_with_markdown_read_as_typed_in_the_current_batch():
    """The current batch's line names the batch and who made it, both typed with Markdown in them:
    the Markdown source carries them escaped, never as emphasis or a link."""
    at = open_page("generate.py", user="Ana *the* [rater]")
    at.multiselect(key="gen_models").set_value([SCHNELL])
    at.text_input(key="batch_name").set_value(TYPED).run()
    at.button(key="run").click().run()
    wait_finished(at.session_state["active_batch"])
    at.run()
    assert_ok(at)
    shown = texts(at.markdown)
    assert any(m.startswith(f"**{_format.plain(TYPED)}** ·") and _format.plain("Ana *the* [rater]") in m
               for m in shown), shown
    assert not any(f"**{TYPED}**" in m for m in shown)
