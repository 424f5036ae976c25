"""Setting values checked against their dataclass type annotations, with the expected type said in plain words.

No value is converted: a YAML `lr: "0.1"` is text and refused as such (write `lr: 0.1`), so that a run never
depends on a guess about what a quoted value meant. A whole number is accepted where a number is expected.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false", type(None): "empty (null)"}


def matches(value: Any, annotation: Any) -> bool:
    """Whether `value` is of type `annotation` (unions, Literal, list[...], tuple[...], dict[...] and plain
    classes; an annotation this does not know accepts anything). Floats must be finite."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arm) for arm in args)
    if origin is typing.Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else True
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        return isinstance(value, dict) and all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def describe(annotation: Any) -> str:
    """The type in words: `list[str | int] | None` -> "a list of (text or a whole number), or empty (null)"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text}, or empty (null)" if type(None) in args else text
    if origin is typing.Literal:
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_inner(args[0])}" if args else "a list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_inner(args[0])}"
        if args and len(set(args)) == 1:
            return f"a list of {len(args)} {_inner(args[0], plural=True)}"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if origin is dict:
        return f"a mapping of {_inner(args[0])} to {_inner(args[1])}" if args else "a mapping"
    if annotation is float:
        return "a finite number"
    return _WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _inner(annotation: Any, *, plural: bool = False) -> str:
    text = describe(annotation)
    if plural and text.startswith(("a ", "an ")):
        text = text.split(" ", 1)[1] + "s"
    return f"({text})" if typing.get_origin(annotation) in (typing.Union, types.UnionType) else text


def _shown(value: Any, annotation: Any) -> str:
    """The wrong value, its type in words, and a hint for the usual YAML slip: a number in quotes."""
    kind = {str: "text", bool: "true/false", int: "whole number", float: "number", list: "list", dict: "mapping"}
    text = f"{value!r} ({kind.get(type(value), type(value).__name__)})"
    if isinstance(value, str) and any(matches(n, annotation) for n in (1, 0.5)):
        try:
            number = float(value)
        except ValueError:
            return text
        if "e" in value.lower():  # YAML 1.1 reads 1e2 and 1e-3 as text (1.0e+2 as a number)
            whole = f"{number:.0f}" if number.is_integer() else f"{number:g}"
            text += f"; YAML reads {value} as text: write {whole}"
        else:
            text += "; write numbers without quotes"
    return text


def type_problems(instance: Any) -> list[str]:
    """One message per field of the dataclass `instance` whose value does not match its annotation."""
    hints = typing.get_type_hints(type(instance))
    problems = []
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if not matches(value, hints[f.name]):
            problems.append(f"setting {f.name} must be {describe(hints[f.name])}, got {_shown(value, hints[f.name])}")
    return problems
