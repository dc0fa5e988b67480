"""Values of the command line's list options (--methods, --budgets, --sparsities, --seeds), each
checked with a one-line error that names the option and shows a valid form."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from pruning_bench.errors import BenchError
from pruning_bench.plan.fit import parse_level
from pruning_bench.plan.suite import check_sparsity

SEED_FORMS = "give seeds like 0, 0,1,2 or 0-4"
MAX_SEEDS = 10_000  # in one --seeds value: a typo like 0-100000 fails fast instead of planning for minutes


def split_items(value: str | None) -> list[str]:
    """Comma-separated items; commas inside brackets (``imp[a=1,b=2]``) do not split."""
    if not value:
        return []
    items, depth, current = [], 0, ""
    for ch in value:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [v.strip() for v in items if v.strip()]


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``imp`` -> ("imp", {}); ``imp[prune_fraction=0.5, rewind_iters=10]`` -> ("imp", {...}). Values are
    read as TOML (numbers, true/false, "strings"); a bare word is a string."""
    name, bracket, rest = spec.partition("[")
    if not bracket:
        return spec.strip(), {}
    if not rest.endswith("]") or not name.strip():
        raise BenchError(f"--methods: '{spec}' is not NAME or NAME[key=value,...], e.g. imp[prune_fraction=0.5]")
    overrides: dict[str, Any] = {}
    for item in split_items(rest[:-1]):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise BenchError(f"--methods: '{item}' in '{spec}' is not key=value, e.g. imp[prune_fraction=0.5]")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = raw.strip()
    return name.strip(), overrides


def parse_multiples(value: str | None) -> list[float | str] | None:
    """``--budgets``: multiples of the suite's base run and ``fit``, e.g. ``1,4,fit``; duplicates run once."""
    if value is None:
        return None
    out = [parse_level(item, "--budgets") for item in split_items(value)]
    if not out:
        raise BenchError("--budgets is empty; give multiples of the suite's base budget or fit, e.g. 1,4,fit")
    return list(dict.fromkeys(out))


def parse_sparsities(value: str | None) -> list[float] | None:
    """``--sparsities``: fractions in (0, 1), e.g. ``0.5,0.9``. None when not given."""
    if value is None:
        return None
    out = []
    for item in split_items(value):
        try:
            s = float(item)
        except ValueError:
            raise BenchError(f"--sparsities: '{item}' is not a number; give fractions in (0, 1), "
                             "e.g. 0.5,0.9") from None
        out.append(check_sparsity(s, "--sparsities"))
    if not out:
        raise BenchError("--sparsities is empty; give fractions in (0, 1), e.g. 0.5,0.9")
    return out


def parse_seeds(value: str | None) -> list[int] | None:
    """``0`` is seed 0, ``0,1,2`` those seeds, ``0-4`` seeds 0 to 4, ``0-2,7`` both forms; a seed given
    twice runs once (first position kept). None when not given."""
    if value is None:
        return None
    if not value.strip():
        raise BenchError(f"--seeds is empty; {SEED_FORMS}")
    seeds = [seed for item in value.split(",") for seed in _seed_item(item.strip(), value)]
    if len(seeds) > MAX_SEEDS:
        raise BenchError(f"--seeds: '{value}' is {len(seeds):,} seeds; at most {MAX_SEEDS:,} in one run")
    return list(dict.fromkeys(seeds))


def _seed_item(item: str, value: str) -> range:
    """One item of a --seeds list: ``N`` or ``A-B`` (inclusive, A <= B)."""
    match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
    if match is None:
        if not item:
            raise BenchError(f"--seeds: '{value}' has an empty item; {SEED_FORMS}")
        if re.fullmatch(r"-\s*\d.*", item):
            raise BenchError(f"--seeds: '{item}' is negative; seeds are integers >= 0; {SEED_FORMS}")
        raise BenchError(f"--seeds: '{item}' is not a seed or a range of seeds; {SEED_FORMS}")
    first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
    if last < first:
        raise BenchError(f"--seeds: '{item}' is a reversed range; write {last}-{first}")
    if last - first >= MAX_SEEDS:
        raise BenchError(f"--seeds: '{item}' is {last - first + 1:,} seeds; at most {MAX_SEEDS:,} in one run")
    return range(first, last + 1)
