"""``--set FIELD=VALUE`` for the benchmarks: change fields of a recipe dataclass from the command line."""
from __future__ import annotations

import dataclasses


def field_changes(config, settings: list[str], option: str, fixed: tuple[str, ...] = ()) -> dict:
    """["n_layers=8", "dropout=0.1"] -> {"n_layers": 8, "dropout": 0.1}, each value cast to the field's type.

    ``fixed`` names fields the command line may not change (set by the benchmark itself)."""
    names = [f.name for f in dataclasses.fields(config) if f.name not in fixed]
    changes = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        if not value or name not in names:
            raise SystemExit(f"{option} {setting!r}: expected FIELD=VALUE with FIELD one of {names}")
        kind = type(getattr(config, name))
        if kind is bool:  # bool("False") is True: read the word instead
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"{option} {setting!r}: {name} takes true or false")
            changes[name] = value.lower() in ("true", "1")
        else:
            changes[name] = kind(value)
    return changes
