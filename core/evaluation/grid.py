"""The X/Y grid of a batch: outputs laid out by two things that vary in it, the way A1111 and
ComfyUI X/Y plots are read (one setting per axis, everything else held fixed), drawn for a page or
as one PNG with its legend.

Every output of a batch (per group and contender: `Store.group_outputs(by_contender=True)`, the
one rule `store.pick_output`) has a COORDINATE on each DIMENSION:
- "contender": its label (`contenders.labels` over the batch's contenders);
- "model": its model's label;
- "param:<name>": each parameter swept in the batch, in words ("28 steps", "no LoRA"), read
  from the contender's effective value (`Contender.value`, so a model that leaves the parameter
  at its default reads that default; a model without the parameter reads "—");
- "option:<key>": each prompt option that varies between groups;
- "seed".

Invariants:
- Only dimensions with more than one value are offered (`dimensions`).
- A grid puts one dimension on X and optionally one on Y; every OTHER dimension is held at one
  value (`fixed`, else the value that fills the most cells), except that "contender" and the model/parameter dimensions describe the same
  thing: with "contender" on an axis the model and parameters are not held, and with a model or
  parameter on an axis "contender" is not held. A cell shows the first output (planning order)
  matching it, and says how many more matched; an empty cell is None.
- Rendering reads images through a callable, so this module never touches storage or the page.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.catalog import contenders as contenders_mod
from core.catalog.prompts import OPTION_KEYS
from core.store import Store
from core.values import Group, RequestRecord, ResultImage

if TYPE_CHECKING:  # PIL is imported when a grid is drawn, not with the page
    from PIL import Image as PILImage

CONTENDER, MODEL, SEED = "contender", "model", "seed"
NOT_APPLICABLE = "—"
_SETTINGS_DIMENSIONS = (MODEL, "param:")


@dataclass(frozen=True)
class GridOutput:
    """One output of the batch with its coordinate on every dimension."""
    group: Group
    request: RequestRecord
    image: ResultImage | None
    label: str
    coords: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class Dimension:
    """Something that varies in the batch; `values` in planning order (numbers ascending)."""
    key: str
    title: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    output: GridOutput | None
    more: int = 0  # further outputs that matched the same cell


@dataclass(frozen=True)
class Grid:
    x: Dimension
    y: Dimension | None
    fixed: Mapping[str, str]
    rows: tuple[tuple[Cell, ...], ...]  # one per Y value (one row without Y), one cell per X value

    @property
    def y_values(self) -> tuple[str, ...]:
        return self.y.values if self.y else ("",)

    @property
    def outputs(self) -> list[GridOutput]:
        return [c.output for row in self.rows for c in row if c.output is not None]

    @property
    def reference_ids(self) -> tuple[str, ...]:
        """The reference photos of the outputs on view (first seen first)."""
        return tuple(dict.fromkeys(r for o in self.outputs for r in o.group.references))

    def caption(self) -> str:
        """What is held fixed, in words ("pose Standing · seed 11")."""
        return " · ".join(f"{_short_title(k)} {v}" for k, v in self.fixed.items())


def batch_outputs(store: Store, batch_id: str) -> list[GridOutput]:
    """Every output of the batch (per group and contender), groups in planning order, with its
    coordinates on every dimension."""
    groups = store.get_groups(batch_id)
    outputs = store.group_outputs(batch_id, by_contender=True)
    contenders = store.contenders_in(batch_id=batch_id)
    labels = contenders_mod.labels(contenders)
    by_id = {c.id: c for c in contenders}
    axes = contenders_mod.swept_axes(contenders)
    swept = tuple(dict.fromkeys(a.parameter for a in axes))
    out: list[GridOutput] = []
    order = {c.id: n for n, c in enumerate(contenders)}
    for group in groups:
        per = outputs.get(group.id, {})
        for cid in sorted(per, key=lambda c: order.get(c, len(order))):
            output = per[cid]
            contender = by_id.get(cid)
            coords = {CONTENDER: labels.get(cid, output.endpoint),
                      MODEL: contenders_mod.model_label(output.endpoint)}
            for name in swept:
                coords[f"param:{name}"] = _param_words(contender, name)
            for key, value in group.options.items():
                coords[f"option:{key}"] = str(value)
            coords[SEED] = str(group.seed)
            out.append(GridOutput(group, output.request, output.image, coords[CONTENDER], coords))
    return out


def _param_words(contender: contenders_mod.Contender | None, name: str) -> str:
    if contender is None:
        return NOT_APPLICABLE
    from core.catalog import registry

    try:
        known = name in registry.get_endpoint(contender.endpoint).schema.get("properties", {})
    except Exception:  # noqa: BLE001 - an endpoint the registry no longer knows
        known = name in contender.params
    if not known:
        return NOT_APPLICABLE
    return contenders_mod.format_value(contender.endpoint, name, contender.value(name))


def dimensions(outputs: Sequence[GridOutput]) -> list[Dimension]:
    """The dimensions with more than one value among `outputs`: contender, model, swept
    parameters, prompt options (in catalog order), seed."""
    keys: list[str] = []
    for o in outputs:
        for k in o.coords:
            if k not in keys:
                keys.append(k)
    option_order = {f"option:{k}": n for n, k in enumerate(OPTION_KEYS)}
    keys.sort(key=lambda k: (_rank(k), option_order.get(k, 0)))
    out = []
    for key in keys:
        values = list(dict.fromkeys(o.coords.get(key, NOT_APPLICABLE) for o in outputs))
        if len(values) < 2:
            continue
        if key == SEED:
            values.sort(key=int)
        elif key.startswith("param:"):
            values = _numeric_first(values)
        out.append(Dimension(key, title(key), tuple(values)))
    return out


def _rank(key: str) -> int:
    if key == CONTENDER:
        return 0
    if key == MODEL:
        return 1
    if key.startswith("param:"):
        return 2
    if key.startswith("option:"):
        return 3
    return 4


def _numeric_first(values: list[str]) -> list[str]:
    """Values like "7 steps" / "28 steps" ascending by their number; others keep their order."""
    def number(v: str) -> float | None:
        head = v.split(" ", 1)[0]
        try:
            return float(head)
        except ValueError:
            tail = v.rsplit(" ", 1)[-1]
            try:
                return float(tail)
            except ValueError:
                return None

    nums = [number(v) for v in values]
    if all(n is not None for n in nums):
        return [v for _, v in sorted(zip(nums, values), key=lambda p: p[0])]
    return values


def title(key: str) -> str:
    """A dimension in words: "Contender", "Model", "num inference steps", "pose", "Seed"."""
    if key == CONTENDER:
        return "Contender"
    if key == MODEL:
        return "Model"
    if key == SEED:
        return "Seed"
    if key == "param:loras":
        return "LoRA set"
    return key.split(":", 1)[1].replace("_", " ")


def _short_title(key: str) -> str:
    return title(key).lower() if key in (MODEL, SEED, CONTENDER) else title(key)


def held(x: str, y: str | None, dims: Sequence[Dimension]) -> list[Dimension]:
    """The dimensions a grid with `x` and `y` holds at one value (see the module invariants)."""
    on_axes = {x, y} - {None}
    settings_on_axes = any(k.startswith(_SETTINGS_DIMENSIONS) for k in on_axes)
    out = []
    for d in dims:
        if d.key in on_axes:
            continue
        if CONTENDER in on_axes and d.key.startswith(_SETTINGS_DIMENSIONS):
            continue
        if settings_on_axes and d.key == CONTENDER:
            continue
        out.append(d)
    return out


def build(outputs: Sequence[GridOutput], x: str, y: str | None = None,
          fixed: Mapping[str, str] | None = None) -> Grid:
    """The grid of `outputs` with `x` (and `y`) on the axes; dimensions held and not given in
    `fixed` are held at their first value."""
    dims = {d.key: d for d in dimensions(outputs)}
    if x not in dims:
        raise ValueError(f"{x!r} does not vary in this batch; choose one of {', '.join(dims)}")
    if y is not None and (y not in dims or y == x):
        raise ValueError(f"{y!r} cannot be the Y axis with {x!r} on X")
    fixed = dict(fixed or {})
    holding: dict[str, str] = {}
    kept = list(outputs)
    for d in held(x, y, list(dims.values())):
        value = fixed.get(d.key)
        if value not in d.values:
            value = _fullest(kept, d, x, y)
        holding[d.key] = value
        kept = [o for o in kept if o.coords.get(d.key, NOT_APPLICABLE) == value]
    # values no output on view has (e.g. "—" for the model held fixed) are left off the axes
    xs = tuple(v for v in dims[x].values if any(o.coords.get(x) == v for o in kept)) or dims[x].values
    x_dim = Dimension(x, dims[x].title, xs)
    y_dim = None
    ys: tuple[str, ...] = ("",)
    if y:
        ys = tuple(v for v in dims[y].values if any(o.coords.get(y) == v for o in kept)) or dims[y].values
        y_dim = Dimension(y, dims[y].title, ys)
    rows = []
    for yv in ys:
        row = []
        for xv in xs:
            found = [o for o in kept if o.coords.get(x) == xv and (y is None or o.coords.get(y) == yv)]
            row.append(Cell(found[0] if found else None, max(0, len(found) - 1)))
        rows.append(tuple(row))
    return Grid(x_dim, y_dim, holding, tuple(rows))


def _fullest(outputs: Sequence[GridOutput], d: Dimension, x: str, y: str | None) -> str:
    """The value of held dimension `d` that leaves the most cells filled (the first on a tie):
    with the steps on X, the model held is the one that sweeps the steps."""
    def filled(value: str) -> int:
        return len({(o.coords.get(x), o.coords.get(y) if y else "") for o in outputs
                    if o.coords.get(d.key, NOT_APPLICABLE) == value})

    return max(d.values, key=lambda v: (filled(v), -d.values.index(v)))


# ---------------------------------------------------------------------------- PNG


def render_png(grid: Grid, load: Callable[[GridOutput], bytes | None], *,
               reference: bytes | None = None, cell: int = 320) -> bytes:
    """The grid as one PNG: the X legend over the columns, the Y legend left of the rows, what is
    held fixed as a title, and the reference photo (if any) in a column of its own on the left.
    `load` gives an output's image bytes (None when there is none: the cell says why)."""
    from PIL import Image, ImageDraw

    font = _font(16)
    small = _font(13)
    pad = 8
    y_legend = 0 if grid.y is None else min(220, max(_text_width(font, v) for v in grid.y_values) + 2 * pad)
    ref_w = cell + pad if reference else 0
    header = 34 + 28
    cols, rows = len(grid.x.values), len(grid.rows)
    width = ref_w + y_legend + cols * (cell + pad) + pad
    height = header + rows * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    axes = f"X: {grid.x.title}" + (f" · Y: {grid.y.title}" if grid.y else "")
    draw.text((pad, pad), axes + (f" · {grid.caption()}" if grid.fixed else ""), fill="black", font=font)
    left = ref_w + y_legend + pad
    for n, value in enumerate(grid.x.values):
        x0 = left + n * (cell + pad)
        draw.text((x0, 34 + 4), _fit(value, font, cell), fill="black", font=font)
    if reference:
        ref = _thumb(reference, cell)
        canvas.paste(ref, (pad, header))
        draw.text((pad, header + ref.height + 2), "reference", fill="gray", font=small)
    for r, row in enumerate(grid.rows):
        y0 = header + r * (cell + pad)
        if grid.y is not None:
            draw.text((ref_w + pad, y0 + cell // 2 - 8), _fit(grid.y_values[r], font, y_legend - pad),
                      fill="black", font=font)
        for n, c in enumerate(row):
            x0 = left + n * (cell + pad)
            draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), outline="#cccccc", fill="#f4f4f4")
            data = load(c.output) if c.output is not None else None
            if data:
                try:
                    img = _thumb(data, cell)
                except Exception:  # noqa: BLE001 - a damaged image: the cell says so
                    draw.text((x0 + pad, y0 + pad), "image unreadable", fill="gray", font=small)
                    continue
                canvas.paste(img, (x0 + (cell - img.width) // 2, y0 + (cell - img.height) // 2))
                if c.more:
                    draw.text((x0 + pad, y0 + cell - 20), f"+{c.more} more", fill="black", font=small)
            else:
                draw.text((x0 + pad, y0 + pad), _empty_reason(c), fill="gray", font=small)
    buf = io.BytesIO()
    canvas.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _empty_reason(c: Cell) -> str:
    if c.output is None:
        return "no output"
    status = str(c.output.request.status)
    return "dry run: no image" if status == "dry_run" else f"{status.replace('_', ' ')}: no image"


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _fit(text: str, font, width: int) -> str:
    if _text_width(font, text) <= width:
        return text
    while text and _text_width(font, text + "…") > width:
        text = text[:-1]
    return text + "…"


def _thumb(data: bytes, size: int) -> PILImage.Image:
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img).convert("RGB")
    return ImageOps.contain(img, (size, size))  # small outputs are scaled up to the cell


__all__ = ("CONTENDER", "MODEL", "SEED", "Cell", "Dimension", "Grid", "GridOutput", "batch_outputs",
           "build", "dimensions", "held", "render_png", "title")
