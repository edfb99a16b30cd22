"""Is a request body what its endpoint's JSON Schema allows, and if not, what is wrong, in words.
The registry (core.catalog.registry) owns the endpoints and calls this for each body it checks.

Invariants:
- jsonschema (Draft 2020-12) is the only judge of a schema: no keyword is re-implemented here.
  (A hand-written judge of the few keywords fal used was removed in issue 17: jsonschema's field
  check costs ~15 us against its ~5, and its import ~0.07 s once per process; fal's OpenAPI
  schemas, 3.1-style nullables and `$ref`s to `#/components/...` included, need the real thing.)
- jsonschema is imported, a schema checked (`check_schema`) and compiled when its endpoint first
  judges something, once per process, never when the registry loads: listing endpoints or
  labelling old rows never pays for it. A schema that is not a JSON Schema is a `ConfigError`
  naming the file then.
- Bodies of one batch differ in a few fields, so a body is judged field by field, each
  (field, value) judged once per process, whenever the schema's top level only types, requires and
  describes properties (`_DECOMPOSABLE`): then a body is valid exactly when every present field is
  valid against its own property schema, which is how JSON Schema's `properties` keyword judges it
  anyway. Anything else, or any doubt, goes through the whole-body check.
- Every problem of a body is reported at once (not just the first); each message is one line
  that names the field, what is allowed and the endpoint, and never carries a whole `data:` URI
  (`core.redact.abbreviate`).
- References are strings: an http(s) URL, a `data:` URI or a `reference://<id>` token (a stored
  payload's placeholder for a local photo, turned into a data: URI only at send time).
"""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.catalog.payloads import REFERENCE_SCHEME
from core.errors import ConfigError
from core.redact import abbreviate

if TYPE_CHECKING:   # jsonschema's own types; the package itself is imported on first use
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

_REFERENCE_PREFIXES = ("http://", "https://", "data:", REFERENCE_SCHEME)
_JSON_TYPES = {
    "integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
    "array": "a list", "object": "an object", "null": "null",
}
# Top-level keywords under which a body's validity is the conjunction of its fields' validity:
# `type: object` (a dict passes), `required` (checked by name), `properties` (each present field
# against its own subschema), and keywords without any assertion. No `additionalProperties`,
# `patternProperties`, `dependent*`, `if`, combinators or `unevaluated*`: those relate fields.
_DECOMPOSABLE = frozenset({"type", "required", "properties", "$defs", "$schema", "$id", "title",
                           "description", "examples", "default", "$comment"})
_FIELD_VERDICTS_MAX = 20_000   # remembered (field, value) verdicts per endpoint, then forgotten


class BodySchema:
    """One endpoint's input schema as it is enforced (fal's plus our limits), compiled on first use.
    `endpoint_id`, `image_key` and `max_images` are the facts its messages name; `source` is the
    schema file and `where` the registry entry, for a `ConfigError` about the schema itself."""

    def __init__(self, schema: dict[str, Any], *, endpoint_id: str, image_key: str | None,
                 max_images: int, source: Path, where: str, checked: bool = False) -> None:
        self.schema = schema
        # already known to be a JSON Schema (a shipped schema the tests checked, whose version is in
        # checked_schemas.json, or one read from a fal document): not checked again in each process
        self._checked = checked
        self.endpoint_id = endpoint_id
        self.image_key = image_key
        self.max_images = max_images
        self._source = source
        self._where = where
        self._validator: Draft202012Validator | None = None
        self._fields: dict[str, Draft202012Validator] = {}
        self._lock = threading.Lock()
        self._decomposable = (schema.get("type") == "object" and set(schema) <= _DECOMPOSABLE
                              and isinstance(schema.get("required", []), list))
        self._verdicts: dict[tuple[str, str], bool] = {}

    @property
    def validator(self) -> Draft202012Validator:
        """The whole-body validator (jsonschema imported and the schema checked the first time)."""
        if self._validator is None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            with self._lock:
                if self._validator is None:
                    try:
                        if not self._checked:
                            Draft202012Validator.check_schema(self.schema)
                    except SchemaError as e:
                        raise ConfigError(f"{self._where}: schema {self._source} is not a valid JSON "
                                          f"Schema: {e.message}") from e
                    whole = Draft202012Validator(self.schema)
                    # one validator per property, sharing the whole schema's resolver ($ref, $defs)
                    self._fields = {key: whole.evolve(schema=sub)
                                    for key, sub in self.schema.get("properties", {}).items()}
                    self._validator = whole
        return self._validator

    def field_valid(self, key: str, value: Any) -> bool:
        """Does `value` pass the schema of property `key` (as the whole-body check judges it)?"""
        self.validator   # noqa: B018 (builds the field validators)
        return self._fields[key].is_valid(value)

    def surely_valid(self, body: dict[str, Any]) -> bool:
        """True only when `body` passes the schema (then `iter_errors(body)` yields nothing);
        False means "judge the whole body" (it may still be valid)."""
        if not self._decomposable:
            return False
        if any(key not in body for key in self.schema.get("required", ())):
            return False
        props = self.schema["properties"]
        verdicts = self._verdicts
        for key, value in body.items():
            if key not in props:
                continue   # the schema allows other keys; the registry refuses them itself
            try:
                # the JSON text tells 1, 1.0 and true apart, as JSON Schema's types do
                seen = (key, json.dumps(value, sort_keys=True, allow_nan=False))
            except (TypeError, ValueError):
                return False
            verdict = verdicts.get(seen)
            if verdict is None:
                verdict = self.field_valid(key, value)
                if len(verdicts) >= _FIELD_VERDICTS_MAX:
                    verdicts.clear()
                verdicts[seen] = verdict
            if not verdict:
                return False
        return True

    def problems(self, body: dict[str, Any]) -> list[str]:
        """Every problem of `body` (a JSON object) in words: the schema's errors by field, then
        unusable references and an empty prompt; [] when it may be sent as far as the schema goes."""
        messages: list[str] = []
        if not self.surely_valid(body):
            errors = sorted(self.validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
            for error in errors:
                messages.extend(self._describe_error(error))
        messages.extend(self._reference_problems(body))
        messages.extend(lora_problems(body.get("loras"), self.endpoint_id))
        prompt = body.get("prompt")
        if isinstance(prompt, str) and not prompt.strip():
            messages.append(f"`prompt` for {self.endpoint_id} is empty: describe the image to make")
        return messages

    def _describe_error(self, error: ValidationError) -> list[str]:
        """Messages for one schema error."""
        eid = self.endpoint_id
        name = _field_name(error.absolute_path)
        keyword = error.validator
        schema = error.schema if isinstance(error.schema, dict) else {}
        value = error.instance
        if keyword == "required":
            missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
            out = []
            for key in missing:
                full = f"{name}.{key}" if error.absolute_path else key
                if key == self.image_key:
                    what = (f"a list of 1 to {self.max_images} reference images" if key == "image_urls"
                            else "one reference image")
                    out.append(f"`{full}` is required by {eid}: it edits {what} (URL, data: URI or reference)")
                else:
                    sub = schema.get("properties", {}).get(key, {})
                    out.append(f"`{full}` is required by {eid} ({self._describe_schema(sub)})")
            return out
        if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            return [f"`{name}` = {_show(value)} is out of range for {eid}: allowed {_range_text(schema)}"]
        if keyword == "enum":
            return [f"`{name}` = {_show(value)} is not accepted by {eid}: allowed "
                    + ", ".join(str(v) for v in error.validator_value)]
        if keyword == "type":
            return [f"`{name}` must be {self._describe_schema(schema)} for {eid}, "
                    f"got {_show(value)} ({json_type(value)})"]
        if keyword == "maxItems":
            if name == self.image_key:
                return [f"`{name}` has {len(value)} images but {eid} uses at most {self.max_images} "
                        f"(fal would silently drop the rest)"]
            return [f"`{name}` has {len(value)} items, {eid} allows at most {error.validator_value}"]
        if keyword == "minItems":
            if name == self.image_key:
                return [f"`{name}` is empty: {eid} edits reference images, give 1 to {self.max_images}"]
            return [f"`{name}` has {len(value)} items, {eid} needs at least {error.validator_value}"]
        if keyword in ("anyOf", "oneOf"):
            return self._describe_alternatives(error, name)
        # keywords our schemas do not use today: still name field, rule and endpoint, never the raw value
        return [f"`{name}` = {_show(value)} breaks the `{keyword}` rule of {eid} "
                f"({_show(error.validator_value)})"]

    def _describe_alternatives(self, error: ValidationError, name: str) -> list[str]:
        """anyOf: when exactly one branch has the value's type and fails deeper inside (a {"width",
        "height"} object for image_size), its own errors are the useful ones; otherwise list the
        alternatives (presets AND the custom size for an unknown image_size string)."""
        by_branch: dict[Any, list[ValidationError]] = {}
        for sub in error.context or ():
            by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
        right_type = [errs for errs in by_branch.values()
                      if not any(s.validator == "type" and len(s.relative_path) == 0 for s in errs)]
        if len(right_type) == 1 and all(len(s.relative_path) > 0 for s in right_type[0]):
            return [m for sub in right_type[0] for m in self._describe_error(sub)]
        allowed = self._describe_schema(error.schema if isinstance(error.schema, dict) else {})
        return [f"`{name}` must be {allowed} for {self.endpoint_id}, got {_show(error.instance)} "
                f"({json_type(error.instance)})"]

    def _describe_schema(self, schema: dict[str, Any]) -> str:
        """What a (sub)schema accepts, in words: "an integer, 4 to 50", "one of: jpeg, png"."""
        schema = resolve_ref(schema, self.schema)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                # enum branches first: "one of square_hd, ... or {"width": W, "height": H} ..."
                branches = sorted(schema[key], key=lambda s: "enum" not in resolve_ref(s, self.schema))
                return " or ".join(self._describe_schema(s) for s in branches)
        if "enum" in schema:
            return "one of " + ", ".join(str(v) for v in schema["enum"])
        kind = schema.get("type")
        if kind == "object" and "width" in schema.get("properties", {}) and "height" in schema["properties"]:
            width = schema["properties"]["width"]
            return f'{{"width": W, "height": H}} with integers {_range_text(width)}'
        words = _JSON_TYPES.get(kind, str(kind)) if isinstance(kind, str) else "a value"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            words += f", {_range_text(schema)}"
        return words

    def _reference_problems(self, body: dict[str, Any]) -> list[str]:
        key = self.image_key
        if key is None or key not in body:
            return []
        value = body[key]
        items = [(key, value)] if isinstance(value, str) else (
            [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [])
        problems = []
        for name, ref in items:
            if not isinstance(ref, str):
                continue  # the schema's type error already names it
            if not ref.startswith(_REFERENCE_PREFIXES) or ref in _REFERENCE_PREFIXES:
                problems.append(f"`{name}` = {_show(ref)} is not a usable reference for {self.endpoint_id}: "
                                f"give an http(s) URL, a data: URI or a reference://<id> token")
        return problems


def lora_problems(loras: Any, endpoint_id: str) -> list[str]:
    """What fal could not fetch among a body's LoRA weights, one line each. fal takes a LoRA as an
    https URL or a Hugging Face style `owner/repo[/file]` path; it fetches whatever it is given, so
    a local file, another scheme, this machine, a private or link-local address (cloud metadata),
    a path with `..` or a control character would fail only after the team waited for the job."""
    if not isinstance(loras, list):
        return []
    problems = []
    for i, item in enumerate(loras):
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str):
            continue   # the schema's type error names it
        why = _lora_path_problem(path)
        if why:
            problems.append(f"`loras[{i}].path` = {_show(path)} is not a LoRA fal can fetch for {endpoint_id}: "
                            f"{why}; give an https URL or a Hugging Face path such as owner/repo")
    return problems


def _lora_path_problem(path: str) -> str | None:
    import ipaddress
    from urllib.parse import urlsplit

    if not path.strip():
        return "it is empty"
    if any(ord(c) < 32 or c.isspace() for c in path):
        return "it holds a space, a newline or a control character"
    if "://" not in path:
        if _HF_PATH.match(path) and not any(seg in (".", "..") for seg in path.split("/")):
            return None
        return "it is neither a URL nor an owner/repo path"
    try:
        parts = urlsplit(path)
        host = parts.hostname or ""
    except ValueError:
        return "it is not a well-formed URL"
    if parts.scheme.lower() != "https":
        return f"{parts.scheme or 'its'}:// is not https"
    if not host or parts.username or parts.password:
        return "an https URL names a host, without a user or password"
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return f"{host} is this machine or a private network"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not address.is_global:
        return f"{host} is a loopback, private or link-local address"
    return None


_HF_PATH = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?:/[\w.-]+)*$")


def resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The schema a local `$ref` ("#/...") points to inside `root`, or `schema` itself; {} when
    the pointer leads nowhere. For reading a schema (forms, words), not for judging a value."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return target if isinstance(target, dict) else {}
    return schema


def json_type(value: Any) -> str:
    """The JSON type name of a Python value, as messages name it ("integer", "array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: Any, limit: int = 80) -> str:
    """A value as a message quotes it: JSON, a data: URI abbreviated, at most `limit` characters."""
    text = json.dumps(abbreviate(value), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_name(path: Any) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "(body)"


def _range_text(schema: dict[str, Any]) -> str:
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low = schema.get("exclusiveMinimum")
    ex_high = schema.get("exclusiveMaximum")
    if schema.get("type") == "integer":  # "more than 0" of an integer reads better as "1 to ..."
        if low is None and isinstance(ex_low, int):
            low, ex_low = ex_low + 1, None
        if high is None and isinstance(ex_high, int):
            high, ex_high = ex_high - 1, None
    if low is not None and high is not None:
        return f"{low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"at least {low}")
    if ex_low is not None:
        parts.append(f"more than {ex_low}")
    if high is not None:
        parts.append(f"at most {high}")
    if ex_high is not None:
        parts.append(f"less than {ex_high}")
    return " and ".join(parts) or "any"
