"""Comparing a cell's new outputs with its stored ones.

Each output becomes a list of (kind, value) pairs after normalizing what is
volatile: execution counts and output metadata are left out; consecutive
stream chunks are joined; text has memory addresses, timestamps, temporary
paths (and whatever the user's rules say) replaced by placeholders; images
compare by their decoded content (pixels when Pillow is there, else the
decoded bytes); errors by name and message, not traceback.  The run records
of ``%%sandbox`` cells are compared elsewhere (they name packs, not results).

Rules are regular expressions: :data:`BUILTIN_RULES`, then the configured
ones (``NotebookVerifier.normalize``), then the cell's own (tags
``nbsandbox-normalize=REGEX`` or ``metadata.nbsandbox.normalize``); each match
is replaced by its replacement, ``<normalized>`` by default.
Cells tagged ``nbsandbox-skip-compare`` (or nbval's ``nbval-skip`` and
``nbval-ignore-output``) still run but are not compared.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nbsandbox.notebook import cellrun

SKIP_TAGS = ("nbsandbox-skip-compare", "nbval-skip", "nbval-ignore-output")
NORMALIZE_TAG = "nbsandbox-normalize="
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")


def _tmp_dirs() -> list[str]:
    dirs = {"/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir()}
    return sorted(dirs, key=len, reverse=True)


#: (pattern, replacement) applied to every text output, in this order.
BUILTIN_RULES: tuple[tuple[str, str], ...] = (
    (r"\b0x[0-9a-fA-F]{6,16}\b", "0xADDRESS"),
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b",
     "<timestamp>"),
    ("(" + "|".join(re.escape(d) for d in _tmp_dirs()) + r")/[^\s'\"<>:]*", "<tmpfile>"),
)


@dataclass(frozen=True)
class Rules:
    """Compiled normalization rules."""

    rules: tuple[tuple[re.Pattern[str], str], ...]

    @classmethod
    def make(cls, pairs: Iterable[tuple[str, str]]) -> Rules:
        return cls(tuple((re.compile(p), r) for p, r in pairs))

    def extended(self, pairs: Iterable[tuple[str, str]]) -> Rules:
        return Rules(self.rules + Rules.make(pairs).rules)

    def apply(self, text: str) -> str:
        for pattern, replacement in self.rules:
            text = pattern.sub(replacement, text)
        return text


def rules_from_config(normalize: Mapping[str, str]) -> Rules:
    """The built-in rules, then the configured ``{regex: replacement}``."""
    return Rules.make([*BUILTIN_RULES, *normalize.items()])


def cell_rules(cell: Any) -> list[tuple[str, str]]:
    """The cell's own rules (tags and metadata); bad regexes raise ``re.error``."""
    pairs = [(t[len(NORMALIZE_TAG):], "<normalized>")
             for t in cell.get("metadata", {}).get("tags", []) if t.startswith(NORMALIZE_TAG)]
    extra = cell.get("metadata", {}).get(cellrun.KEY, {})
    if isinstance(extra, dict):
        for item in extra.get("normalize", []) or []:
            if isinstance(item, str):
                pairs.append((item, "<normalized>"))
            elif isinstance(item, list | tuple) and len(item) == 2:
                pairs.append((str(item[0]), str(item[1])))
    for pattern, _ in pairs:
        re.compile(pattern)
    return pairs


def skipped(cell: Any) -> str | None:
    """The skip tag of a cell, if it has one."""
    tags = cell.get("metadata", {}).get("tags", [])
    return next((t for t in SKIP_TAGS if t in tags), None)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, indent=1)


def image_key(mime: str, b64: Any) -> str:
    """What an image is compared by: its pixels' digest (Pillow), else its bytes'."""
    raw = base64.b64decode(_text(b64).encode(), validate=False)
    try:
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            pixels = im.tobytes()
            summary = f"{im.mode} {im.size[0]}x{im.size[1]}"
        return f"{summary} pixels sha256:{hashlib.sha256(pixels).hexdigest()[:16]}"
    except Exception:  # no Pillow, or an image it cannot read: compare bytes
        return f"{mime} {len(raw)} bytes sha256:{hashlib.sha256(raw).hexdigest()[:16]}"


def comparable(outputs: list[Any], rules: Rules) -> list[tuple[str, str]]:
    """A cell's outputs as normalized (kind, value) pairs."""
    result: list[tuple[str, str]] = []
    for out in outputs:
        kind = out.get("output_type")
        if cellrun.is_record(out):
            continue
        if kind == "stream":
            name = out.get("name", "stdout")
            text = _text(out.get("text", ""))
            if result and result[-1][0] == name:
                result[-1] = (name, result[-1][1] + text)
            else:
                result.append((name, text))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            for mime in sorted(data):
                if mime in IMAGE_TYPES:
                    result.append((mime, image_key(mime, data[mime])))
                else:
                    result.append((mime, _text(data[mime])))
        elif kind == "error":
            result.append(("error", f"{out.get('ename')}: {out.get('evalue')}"))
    return [(k, v if k in IMAGE_TYPES else rules.apply(v)) for k, v in result]


def short_diff(want: list[tuple[str, str]], got: list[tuple[str, str]], lines: int = 12) -> str:
    """A few lines of unified diff between stored and new outputs."""

    def render(pairs: list[tuple[str, str]]) -> list[str]:
        out = []
        for kind, value in pairs:
            out += [f"[{kind}] {line}" for line in value.splitlines() or [""]]
        return out

    diff = list(difflib.unified_diff(render(want), render(got), "stored", "now", lineterm="",
                                     n=1))
    if len(diff) > lines:
        diff = [*diff[:lines], f"... ({len(diff) - lines} more lines)"]
    return "\n".join(diff)
