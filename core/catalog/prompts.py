"""Structured prompt options -> one prompt sentence and one fal `image_size`.

Invariants:
- The option keys are exactly `OPTION_KEYS`; any other key is a `PromptError` naming the valid ones.
- Values are trimmed (whitespace collapsed, stray edge commas dropped); an empty value is "not set".
  A value outside its catalog is used as typed: catalogs (core/catalog/options.toml) are suggestions.
- `aspect_ratio` is the exception: it must be one of `ASPECT_RATIO_SIZES`, because it also chooses the
  `image_size` sent to every model of a comparison. No aspect ratio means `DEFAULT_ASPECT_RATIO` for all
  models, never each endpoint's own default, so the outputs of one comparison always share a shape
  (the system we replace wrote "9:16" in the prompt while asking schnell for `square_hd`).
- `build_prompt` yields a clean sentence for every subset of options: no empty slots, no double commas,
  no double spaces; it always ends in "photorealistic" (plus ", <extra>" when given).
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.errors import ConfigError, PromptError

OPTION_KEYS = ("subject", "purpose", "pose", "style", "lighting", "angle", "aspect_ratio", "extra")
CATALOG_KEYS = OPTION_KEYS[:-1]  # `extra` is free text, it has no catalog
CATALOG_PATH = Path(__file__).with_name("options.toml")

# fal presets (pixels in docs/fal.md): 9:16 is portrait_16_9 (576x1024), i.e. fal names
# portrait presets by the landscape ratio they rotate.
ASPECT_RATIO_SIZES: dict[str, str] = {
    "9:16": "portrait_16_9",
    "3:4": "portrait_4_3",
    "1:1": "square_hd",
    "4:3": "landscape_4_3",
    "16:9": "landscape_16_9",
}
DEFAULT_ASPECT_RATIO = "1:1"

# (template, noun): the noun is not repeated when the value already ends with it ("Studio lighting").
_SLOTS: dict[str, tuple[str, str]] = {
    "purpose": ("for {}", ""),
    "pose": ("in {} pose", "pose"),
    "style": ("in {} style", "style"),
    "lighting": ("with {} lighting", "lighting"),
    "angle": ("shot from {} angle", "angle"),
    "aspect_ratio": ("in {} aspect ratio", "aspect ratio"),
}
_CLOSING = "photorealistic"
_SPACES = re.compile(r"\s+")


def _clean(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PromptError(f"prompt option {key!r} must be text, got {type(value).__name__} {value!r}")
    text = _SPACES.sub(" ", value).strip().strip(",").strip()
    return text or None


def _normalize_aspect_ratio(value: str | None) -> str | None:
    if value is None:
        return None
    ratio = value.replace(" ", "")
    if ratio not in ASPECT_RATIO_SIZES:
        raise PromptError(
            f"aspect ratio {value!r} is not supported; choose one of {', '.join(ASPECT_RATIO_SIZES)}")
    return ratio


@dataclass(frozen=True)
class PromptOptions:
    """The structured parts of one prompt; every field is optional (None = not set)."""

    subject: str | None = None
    purpose: str | None = None
    pose: str | None = None
    style: str | None = None
    lighting: str | None = None
    angle: str | None = None
    aspect_ratio: str | None = None
    extra: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _clean(f.name, getattr(self, f.name))
            if f.name == "aspect_ratio":
                value = _normalize_aspect_ratio(value)
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PromptOptions:
        """Options from a dict (a plan file row, a form); unknown keys are a `PromptError`."""
        unknown = [k for k in mapping if k not in OPTION_KEYS]
        if unknown:
            raise PromptError(
                f"unknown prompt option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)}; valid options: {', '.join(OPTION_KEYS)}")
        return cls(**dict(mapping))

    def as_dict(self) -> dict[str, str]:
        """Only the options that are set, in `OPTION_KEYS` order."""
        return {k: v for k in OPTION_KEYS if (v := getattr(self, k)) is not None}


def _with_noun(value: str, noun: str) -> str:
    return value[: -len(noun)].rstrip() if noun and value.lower().endswith(" " + noun) else value


def _opening(subject: str | None) -> str:
    if subject is None:
        return "A model"
    subject = _with_noun(subject, "model")
    article = "An" if subject[0].lower() in "aeiou" else "A"
    return f"{article} {subject} model"


def build_prompt(options: PromptOptions | Mapping[str, Any]) -> str:
    """The prompt sentence, e.g. "A Woman model, for Fashion, in Mirror selfie using iPhone pose, in
    Cinematic style, with Natural Daylight lighting, shot from Eye-Level angle, in 9:16 aspect ratio,
    photorealistic"."""
    if not isinstance(options, PromptOptions):
        options = PromptOptions.from_mapping(options)
    parts = [_opening(options.subject)]
    for key, (template, noun) in _SLOTS.items():
        value = getattr(options, key)
        if value is not None:
            parts.append(template.format(_with_noun(value, noun)))
    parts.append(_CLOSING)
    if options.extra is not None:
        parts.append(options.extra)
    return ", ".join(parts)


def image_size_for(aspect_ratio: str | None) -> str:
    """The fal `image_size` preset for an aspect ratio; no ratio -> the default (1:1 -> square_hd)."""
    ratio = _normalize_aspect_ratio(_clean("aspect_ratio", aspect_ratio)) or DEFAULT_ASPECT_RATIO
    return ASPECT_RATIO_SIZES[ratio]


def load_catalogs(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """The option catalogs from core/catalog/options.toml (or `path`): one tuple of suggestions per option
    key except `extra`, in file order, duplicates dropped. A key missing from the file has no
    suggestions. A malformed file is a `ConfigError`."""
    path = Path(path) if path is not None else CATALOG_PATH
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the option catalogs {path}: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"option catalogs {path} are not valid TOML: {e}") from e
    unknown = [k for k in data if k not in CATALOG_KEYS]
    if unknown:
        raise ConfigError(f"option catalogs {path}: unknown option {', '.join(map(repr, unknown))}; "
                          f"valid options: {', '.join(CATALOG_KEYS)}")
    catalogs: dict[str, tuple[str, ...]] = {}
    for key in CATALOG_KEYS:
        raw = data.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise ConfigError(f"option catalogs {path}: {key!r} must be a list of strings")
        values = [v for v in (_clean(key, v) for v in raw) if v is not None]
        if key == "aspect_ratio":
            bad = [v for v in values if v.replace(" ", "") not in ASPECT_RATIO_SIZES]
            if bad:
                raise ConfigError(
                    f"option catalogs {path}: aspect ratio {', '.join(map(repr, bad))} has no fal image "
                    f"size; only {', '.join(ASPECT_RATIO_SIZES)} are possible")
            values = [v.replace(" ", "") for v in values]
        catalogs[key] = tuple(dict.fromkeys(values))
    return catalogs
