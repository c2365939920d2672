"""YAML loading that remembers the line of every key, for one-line error messages.

Input is bounded: a file larger than :data:`MAX_YAML_BYTES` is refused before it is read,
and aliases may stand for at most :data:`MAX_ALIAS_NODES` nodes in all (each use of an
alias counts the nodes it repeats), so that a small file of nested aliases cannot expand
into an exponentially large document.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from matdx.core.errors import InputError

Loc = tuple[str | int, ...]

MAX_YAML_BYTES = 1 << 20
"""Largest YAML file read (1 MiB: campaign files and site profiles are a few kB)."""
MAX_ALIAS_NODES = 10_000
"""Most nodes that aliases may repeat in one document (YAML's "billion laughs" bound)."""


class _Budget:
    """Counts the nodes constructed again through aliases."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.repeated = 0


def _construct(node: yaml.Node, loc: Loc, lines: dict[Loc, int], budget: _Budget) -> Any:
    if id(node) in budget.seen:
        budget.repeated += 1
        if budget.repeated > MAX_ALIAS_NODES:
            raise InputError(
                f"line {node.start_mark.line + 1}: aliases expand to more than "
                f"{MAX_ALIAS_NODES} nodes"
            )
    else:
        budget.seen.add(id(node))
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, loc, {}, budget)
            if isinstance(key, list | dict):
                raise InputError(f"line {key_node.start_mark.line + 1}: a key must be a scalar")
            if key in out:
                raise InputError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = _construct(value_node, (*loc, key), lines, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, (*loc, i), lines, budget) for i, v in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: str | Path, what: str = "file") -> tuple[Any, dict[Loc, int]]:
    """Load a YAML file and the line number of each key path.

    Parameters
    ----------
    path
        File to read.
    what
        Word used in error messages (``"campaign file"``, ``"profile"``).

    Returns
    -------
    data, lines
        The loaded object and a mapping from key path (tuple) to 1-based line.

    Raises
    ------
    InputError
        If the file is missing, unreadable, larger than :data:`MAX_YAML_BYTES`, not valid
        YAML, or its aliases expand beyond :data:`MAX_ALIAS_NODES` nodes.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist")
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise InputError(
                f"{what} {str(p)!r} is too large ({size} bytes; at most {MAX_YAML_BYTES})"
            )
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {str(p)!r} cannot be read: {exc}") from None
    return parse_yaml(text, what=f"{what} {p.name}")


def parse_yaml(text: str, what: str = "YAML") -> tuple[Any, dict[Loc, int]]:
    """Parse YAML text, see :func:`load_yaml`."""
    lines: dict[Loc, int] = {}
    if len(text) > MAX_YAML_BYTES:
        raise InputError(f"{what}: too large ({len(text)} characters; at most {MAX_YAML_BYTES})")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = None if node is None else _construct(node, (), lines, _Budget())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{what}{where}: malformed YAML ({problem})") from None
    except RecursionError:
        raise InputError(f"{what}: YAML nested too deeply") from None
    except InputError as exc:
        raise InputError(f"{what} {exc}") from None
    return data, lines


def line_of(loc: Sequence[str | int], lines: dict[Loc, int]) -> int | None:
    """Return the line of the longest prefix of ``loc`` that has a known line."""
    loc = tuple(loc)
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _key_text(key: Any) -> str:
    """A key of a field path as message text: quoted if it is blank or not printable."""
    text = str(key)
    if text and text.isprintable() and text.strip() == text:
        return text
    return repr(text)


def validate_yaml_model(
    model: type[BaseModel],
    data: Any,
    lines: dict[Loc, int],
    what: str,
    context: dict[str, Any] | None = None,
) -> BaseModel:
    """Validate ``data`` against ``model``; turn the first error into a one-line InputError.

    Parameters
    ----------
    model
        Pydantic model class.
    data
        Loaded YAML.
    lines
        Key-path → line map from :func:`load_yaml`.
    what
        Name of the file for the message.
    context
        Validation context passed to the model's validators.

    Returns
    -------
    BaseModel
        The validated model instance.

    Raises
    ------
    InputError
        ``"<what> line N, field a.b.c: <message>"``.
    """
    if not isinstance(data, dict):
        raise InputError(f"{what}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        line = line_of(loc, lines)
        field = ".".join(_key_text(x) for x in loc) or "(top level)"
        msg = " ".join(err["msg"].removeprefix("Value error, ").split())
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        where = f" line {line}" if line else ""
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InputError(f"{what}{where}, field {field}: {msg}{more}") from None
