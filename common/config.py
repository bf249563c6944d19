"""One error and one format for every configuration the product reads (stack files, the DR, exporter and lab
configs): each problem is a `(field, message)` pair, the field a path into the config such as
`sites[1].nodes[0].name` (or the file itself when it cannot be read) and the message what is wrong and the fix.
Every problem is reported at once:

    invalid DR config /etc/sovcloud/dr/dr.yaml:
      sites[0].object_lock_mode: 'GOVERNANCE' is not allowed: set COMPLIANCE (...)
      primary: 'dc-x' is not one of sites[].name ['dc-a']

A path `sites[].name` means that field of every element. Needs only pydantic and pyyaml: this package ships to
the nodes next to monitoring/ and dr/.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError, ValidationInfo

TOP = "(top level)"
M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """An invalid configuration; `.problems` lists every problem as (field, message), str() one per line."""

    def __init__(self, problems: Iterable[tuple[str, str]], what: str = "stack config"):
        if isinstance(problems, str):
            raise TypeError("ConfigError takes a list of (field, message) pairs, not a string")
        self.problems = [(str(field), str(message)) for field, message in problems]
        self.what = what
        super().__init__(f"invalid {what}:\n" + "\n".join(f"  {f}: {m}" for f, m in self.problems))

    def __reduce__(self):
        return type(self), (self.problems, self.what)


class CrossFieldError(ConfigError):
    """Raised by a check across fields in a field validator of the top-level model: its fields are paths from
    the top of the config (the check names fields beside the one it validates), not below the validated field."""


class FieldError(ValueError):
    """Raised inside a model's validator to report `message` at `field`, a path relative to that model (raise
    ConfigError with several (field, message) pairs to report more than one problem)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def join(*parts: str) -> str:
    """`sites[1]` + `nodes[0].name` -> `sites[1].nodes[0].name`; empty parts are skipped."""
    out = ""
    for part in parts:
        if part:
            out += part if not out or part.startswith("[") else f".{part}"
    return out


def path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a path: ('sites', 1, 'country') -> `sites[1].country`."""
    return join(*(f"[{p}]" if isinstance(p, int) else str(p) for p in loc))


def problems_of(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Every problem of a pydantic ValidationError as (path, message); FieldError and ConfigError raised in
    nested validators report their own fields below the model's path. `prefix` goes before every path."""
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        where = path(err["loc"])
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, CrossFieldError):
            out += ctx_err.problems
        elif isinstance(ctx_err, ConfigError):
            out += [(join(where, f) or TOP, m) for f, m in ctx_err.problems]
        elif isinstance(ctx_err, FieldError):
            out.append((join(where, ctx_err.field) or TOP, ctx_err.message))
        else:
            out.append((where or TOP, re.sub(r"^Value error, ", "", err["msg"])))
    return _prefixed(out, prefix)


# A model's checks across fields run in the field validator of the last field they read, as soon as the fields
# they read parse (pydantic hands a field validator the fields before it that parsed, `info.data`), and keep their
# problems in the validation context (`collect`); the model's after-validator raises them (`raise_collected`) when
# every field parses, and `validate` adds them to the fields' own problems when one did not. So a field's own
# mistake and a check across the fields that parsed come in one report.
_ACROSS = "problems across fields"


def collect(info: ValidationInfo, problems: Iterable[tuple[str, str]]) -> None:
    """Keep the problems (fields as paths from the top) of a check across fields for the one report; without
    `validate`'s context (a bare model_validate) they are raised at once."""
    problems = list(problems)
    sink = (info.context or {}).get(_ACROSS)
    if sink is not None:
        sink.extend(problems)
    elif problems:
        raise CrossFieldError(problems)


def raise_collected(info: ValidationInfo, more: Iterable[tuple[str, str]] = ()) -> None:
    """In a model's after-validator: raise what `collect` kept, and `more`, if anything."""
    problems = list((info.context or {}).get(_ACROSS, [])) + list(more)
    if problems:
        raise CrossFieldError(problems)


def validate(model: type[M], data: Any, what: str = "stack config", prefix: str = "",
             context: dict[str, Any] | None = None) -> M:
    """`model` from `data`, or ConfigError naming every problem (fields as paths, after `prefix`): the fields'
    own, then those of the checks across the fields that parsed (`collect`). `context` goes to the validators."""
    across: list[tuple[str, str]] = []
    try:
        return model.model_validate(data, context={**(context or {}), _ACROSS: across})
    except ValidationError as exc:
        problems = problems_of(exc, prefix)
        raise ConfigError(problems + [p for p in _prefixed(across, prefix) if p not in problems], what) from None


def _prefixed(problems: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    return [(prefix if f == TOP else join(prefix, f), m) for f, m in problems] if prefix else problems


def read_yaml_mapping(file: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping in `file`; a missing or unreadable file, bad YAML or anything but a mapping is a
    ConfigError with the file as the field."""
    p = Path(file)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError([(str(p), f"cannot read the {what}: {reason}; check the path")], what) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        detail = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError([(str(p), f"not valid YAML{at}: {detail}; fix the file's syntax")], what) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a YAML {type(data).__name__}"
        raise ConfigError([(str(p), f"the {what} must be a YAML mapping of its fields, not {got}")], what)
    return data


def load_yaml_file(file: str | Path, model: type[M], what: str) -> M:
    """`model` from the YAML file `file`, or ConfigError naming every problem (`invalid <what> <file>:`)."""
    return validate(model, read_yaml_mapping(file, what), f"{what} {file}")
