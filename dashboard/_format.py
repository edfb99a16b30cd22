"""Formatters: how values read on a page (times, sizes, names, JSON, table cells) and how a core
error is shown. Display only: nothing here decides a business rule, and a payload is never shown
with its base64 (`core.redact.abbreviate`).

Text a person typed (a batch or file name, a prompt, a LoRA path, a name) goes into Markdown
only through `plain`, so it is shown as typed, never as markup."""
from __future__ import annotations

import base64
import json
import re
from typing import Any

import streamlit as st

from core.errors import DashboardError, PayloadError
from core.redact import abbreviate


# what Streamlit's Markdown reads as markup anywhere in a line (emphasis, code, HTML, tables,
# strikethrough, LaTeX, and with ":" escaped no `:emoji:` nor `:color[...]`), what closes a link's
# text, and what starts a list, a heading or a quote
_MARKUP = re.compile(r"([\\`*_<>#|~$:=])")
_LINK = re.compile(r"\](?=[(\[])")  # "[text](url)" and "[text][ref]"; a lone "[x]" is text
_IMAGE = re.compile(r"(?<=!)\[")  # "![alt](url)": its "[" escaped too, so no "![" is left at all
# what GFM links bare: "www." (the joiner goes before its "."), "://" (escaped ":" then "/": the
# joiner goes before the "/") and "@" (before it)
_AUTOLINK = re.compile(r"(?i)www\.|\\:/|[^\s]@")
_JOINER = "\u2060"
_LINE_START = re.compile(r"^(\s*(?:\d+)?)([-+.)])", re.M)


def plain(text: object) -> str:
    """Text a person typed, for a Markdown string: every markup character escaped, so it reads
    exactly as typed. A bare address (`www.x`, `https://x`, `a@x`) would still become a link
    (Streamlit's Markdown links them after escapes apply), so an invisible word joiner (U+2060)
    breaks each: after `www`, inside `://` and before `@`. The text reads the same."""
    escaped = _IMAGE.sub(r"\\[", _LINK.sub(r"\\]", _MARKUP.sub(r"\\\1", str(text))))
    escaped = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + _JOINER + m.group(0)[-1], escaped)
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def table(frame):
    """A frame for st.dataframe with no literal "None": empty text cells stay empty."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "" if v is None else v)
    return out


def short_name(name: str | None, limit: int = 22) -> str:
    """A file name cut in the middle when long ("phone_exif6…gps.jpg"), so narrow gallery columns
    never break it mid-word; the extension always shows."""
    if not name or len(name) <= limit:
        return name or ""
    keep = limit - 1
    return name[: keep - keep // 2] + "…" + name[-(keep // 2):]


def show_error(err: DashboardError) -> None:
    """A core error as the user should read it: one line per problem, no traceback."""
    if isinstance(err, PayloadError) and len(err.messages) > 1:
        st.error(f"{err.endpoint}:\n" + "\n".join(f"- {m}" for m in err.messages),
                 icon=":material/error:")
    else:
        st.error(str(err), icon=":material/error:")


def payload_json(payload: Any) -> str:
    """Pretty JSON of a payload with every data: URI abbreviated (never show the base64)."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return abbreviate(payload)
    return json.dumps(abbreviate(payload), indent=2, sort_keys=True, ensure_ascii=False)


def data_uri(data: bytes, content_type: str = "image/jpeg") -> str:
    """A small image as a data: URI, for st.dataframe's ImageColumn."""
    return f"data:{content_type};base64," + base64.b64encode(data).decode("ascii")


def short_time(iso: str | None) -> str:
    """"2026-11-24 17:30" from a stored ISO UTC time (display only)."""
    return (iso or "")[:16].replace("T", " ")


def local_time(iso: str | None) -> str:
    """"17:30:05" in this machine's time zone from a stored ISO UTC time (display only)."""
    import datetime as dt

    return dt.datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S") if iso else ""


def human_bytes(n: int | None) -> str:
    """Decimal units (1 KB = 1000 bytes), as the browser's file picker counts them."""
    if n is None:
        return ""
    for unit in ("B", "KB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def notes_text(notes) -> str:
    """Core's normalisation notes ("downscaled from ...") as a sentence of their own, or ""."""
    if not notes:
        return ""
    text = "; ".join(notes)
    return " " + text[0].upper() + text[1:] + "."


def cell(value: Any) -> str:
    """A JSON value as one table cell (diff tables)."""
    if value is None:
        return "null"
    return value if isinstance(value, str) else json.dumps(abbreviate(value), ensure_ascii=False)


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"
