"""The prompt builder: one clean sentence per option set, one fal image_size per aspect ratio,
and option catalogs the team edits as data."""
from __future__ import annotations

import dataclasses
import itertools
import re

import pytest

from core.catalog import prompts
from core.errors import ConfigError, PromptError
from core.catalog.prompts import (
    ASPECT_RATIO_SIZES, OPTION_KEYS, PromptOptions, build_prompt, image_size_for, load_catalogs,
)

EXAMPLE = {
    "subject": "Woman", "purpose": "Fashion", "pose": "Mirror selfie using iPhone", "style": "Cinematic",
    "lighting": "Natural Daylight", "angle": "Eye-Level", "aspect_ratio": "9:16",
}
EXAMPLE_SENTENCE = (
    "A Woman model, for Fashion, in Mirror selfie using iPhone pose, in Cinematic style, with Natural "
    "Daylight lighting, shot from Eye-Level angle, in 9:16 aspect ratio, photorealistic")


def _assert_clean(sentence: str) -> None:
    assert sentence == sentence.strip()
    assert "  " not in sentence, sentence
    assert ",," not in sentence and ", ," not in sentence, sentence
    assert not sentence.endswith(","), sentence
    assert "None" not in sentence, sentence
    assert re.match(r"^An? \S", sentence), sentence
    # every slot that appears is filled: no "in  pose", "for ,", "with  lighting"
    assert not re.search(r"\b(for|in|with|from)\s*(,|$)", sentence), sentence
    assert not re.search(r"\b(in|with|from) (pose|style|lighting|angle|aspect ratio)\b", sentence), sentence


def test_example_options_give_the_team_sentence_exactly():
    assert build_prompt(PromptOptions(**EXAMPLE)) == EXAMPLE_SENTENCE


def test_extra_text_is_appended_after_photorealistic():
    options = PromptOptions(**EXAMPLE, extra="  wearing a red coat ")
    assert build_prompt(options) == EXAMPLE_SENTENCE + ", wearing a red coat"


def test_no_options_still_make_a_sentence():
    assert build_prompt(PromptOptions()) == "A model, photorealistic"


@pytest.mark.parametrize("with_extra", [False, True])
def test_every_subset_of_options_gives_a_clean_sentence(with_extra):
    """All 2^7 subsets of the structured options (with and without extra): no empty slot, no double
    comma or space, every chosen value present, and the fixed order kept."""
    keys = list(EXAMPLE)
    for r in range(len(keys) + 1):
        for subset in itertools.combinations(keys, r):
            chosen = {k: EXAMPLE[k] for k in subset}
            if with_extra:
                chosen["extra"] = "holding a coffee"
            sentence = build_prompt(PromptOptions(**chosen))
            _assert_clean(sentence)
            positions = [sentence.index(v) for v in chosen.values()]
            assert positions == sorted(positions), (subset, sentence)
            assert sentence.endswith("holding a coffee" if with_extra else "photorealistic")
            assert sentence.startswith("A Woman model" if "subject" in subset else "A model")


def test_left_out_options_are_the_same_as_empty_or_blank_ones():
    blank = PromptOptions(subject="Woman", purpose="", pose="   ", style=None, extra=" ")
    assert blank == PromptOptions(subject="Woman")
    assert blank.as_dict() == {"subject": "Woman"}
    assert build_prompt(blank) == "A Woman model, photorealistic"


def test_values_are_trimmed_and_inner_whitespace_collapsed():
    options = PromptOptions(subject="  Young   Woman ", style="Cinematic,", pose=" , Walking ")
    assert options.as_dict() == {"subject": "Young Woman", "pose": "Walking", "style": "Cinematic"}
    _assert_clean(build_prompt(options))


def test_value_outside_the_catalog_is_used_as_typed():
    sentence = build_prompt(PromptOptions(subject="Astronaut", lighting="Candle"))
    assert sentence == "An Astronaut model, with Candle lighting, photorealistic"


def test_slot_word_typed_by_the_user_is_not_doubled():
    sentence = build_prompt(PromptOptions(pose="Standing pose", lighting="Studio lighting", angle="Low angle"))
    assert sentence == "A model, in Standing pose, with Studio lighting, shot from Low angle, photorealistic"


def test_unknown_option_key_is_refused_naming_the_valid_keys():
    with pytest.raises(PromptError) as e:
        PromptOptions.from_mapping({"subject": "Woman", "colour": "red"})
    assert "'colour'" in str(e.value)
    for key in OPTION_KEYS:
        assert key in str(e.value)


def test_build_prompt_accepts_a_mapping_and_checks_its_keys():
    assert build_prompt(EXAMPLE) == EXAMPLE_SENTENCE
    with pytest.raises(PromptError):
        build_prompt({"mood": "happy"})


def test_non_text_option_value_is_refused():
    with pytest.raises(PromptError, match="subject"):
        PromptOptions(subject=3)  # type: ignore[arg-type]


def test_aspect_ratio_outside_the_five_is_refused():
    with pytest.raises(PromptError) as e:
        PromptOptions(aspect_ratio="2:3")
    assert "2:3" in str(e.value) and "9:16" in str(e.value)


def test_aspect_ratio_spacing_is_forgiven():
    assert PromptOptions(aspect_ratio=" 9 : 16 ").aspect_ratio == "9:16"


def test_from_mapping_and_as_dict_round_trip_in_key_order():
    options = PromptOptions.from_mapping({"extra": "x", **EXAMPLE})
    assert list(options.as_dict()) == [k for k in OPTION_KEYS]
    assert PromptOptions.from_mapping(options.as_dict()) == options


def test_prompt_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PromptOptions().subject = "Man"  # type: ignore[misc]


@pytest.mark.parametrize("ratio,size", [
    ("9:16", "portrait_16_9"), ("3:4", "portrait_4_3"), ("1:1", "square_hd"),
    ("4:3", "landscape_4_3"), ("16:9", "landscape_16_9"),
])
def test_aspect_ratio_maps_to_the_fal_preset_of_the_same_shape(ratio, size):
    assert image_size_for(ratio) == size
    assert ASPECT_RATIO_SIZES[ratio] == size


def test_no_aspect_ratio_means_one_shared_default_square_hd():
    """Not each endpoint's own default (schnell would make landscape_4_3): a comparison stays same-shaped."""
    assert image_size_for(None) == "square_hd"
    assert image_size_for("") == "square_hd"


def test_image_size_for_an_unknown_ratio_is_refused():
    with pytest.raises(PromptError):
        image_size_for("21:9")


def test_catalogs_hold_the_example_values_and_a_useful_set_of_others():
    catalogs = load_catalogs()
    assert list(catalogs) == [k for k in OPTION_KEYS if k != "extra"]
    for key, value in EXAMPLE.items():
        assert value in catalogs[key], key
    for key, values in catalogs.items():
        if key == "aspect_ratio":
            assert set(values) == set(ASPECT_RATIO_SIZES)
        else:
            assert 8 <= len(values) <= 15, (key, len(values))
        assert len(set(values)) == len(values)


def test_every_catalog_value_builds_a_clean_sentence():
    for key, values in load_catalogs().items():
        for value in values:
            sentence = build_prompt(PromptOptions(**{**EXAMPLE, key: value}))
            _assert_clean(sentence)
            assert value in sentence


def test_an_edited_catalog_file_is_read_without_code_changes(tmp_path):
    path = tmp_path / "options.toml"
    path.write_text('subject = ["Robot", " Robot ", "Cat"]\naspect_ratio = ["16:9"]\n', encoding="utf-8")
    catalogs = load_catalogs(path)
    assert catalogs["subject"] == ("Robot", "Cat")
    assert catalogs["aspect_ratio"] == ("16:9",)
    assert catalogs["pose"] == ()


@pytest.mark.parametrize("text,expected", [
    ('aspect_ratio = ["2:3"]\n', "2:3"),
    ('mood = ["happy"]\n', "mood"),
    ('subject = "Woman"\n', "list of strings"),
    ('subject = [1, 2]\n', "list of strings"),
    ('subject = ["Woman"\n', "not valid TOML"),
])
def test_a_broken_catalog_file_is_a_config_error_saying_what_is_wrong(tmp_path, text, expected):
    path = tmp_path / "options.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_catalogs(path)


def test_a_missing_catalog_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalogs(tmp_path / "nope.toml")


def test_default_catalog_path_is_the_file_in_core():
    assert prompts.CATALOG_PATH.name == "options.toml" and prompts.CATALOG_PATH.exists()
