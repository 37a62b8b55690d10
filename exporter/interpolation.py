"""``${VAR}`` in config values: the environment, with the shell's (and Compose's) meaning.

=====================  ==========================================================
written                gives
=====================  ==========================================================
``${VAR}``             VAR's value; an error if VAR is not set
``${VAR:-default}``    VAR's value, or ``default`` if VAR is unset or empty
``${VAR-default}``     VAR's value, or ``default`` if VAR is unset
``${VAR:?message}``    VAR's value; an error saying ``message`` if VAR is unset or empty
``${VAR?message}``     VAR's value; an error saying ``message`` if VAR is unset
``$$``                 a literal ``$``
``$VAR``               kept as written, and the caller warns (a likely mistake)
=====================  ==========================================================

A default may itself hold ``${...}``. A ``$`` followed by anything else is
kept as written. Anything else inside ``${...}`` is an error rather than text
kept literally, so a typo cannot end up sent as a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", "-", ":?", "?")


class InterpolationError(ValueError):
    """A ``${...}`` that cannot be expanded; the message holds no variable's value."""


@dataclass
class Expansion:
    value: str
    #: Names inside ``${...}``, in order (set or not).
    variables: list[str] = field(default_factory=list)
    #: Values taken from the environment, for redaction.
    env_values: list[str] = field(default_factory=list)
    #: A bare ``$NAME`` was kept as written.
    bare: bool = False


def expand(text: str, env: Mapping[str, str]) -> Expansion:
    """Expand every ``${...}`` in ``text``; InterpolationError if one cannot be."""
    out = Expansion("")
    out.value = _expand(text, env, out)
    return out


def _expand(text: str, env: Mapping[str, str], out: Expansion) -> str:
    parts: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            parts.append(text[i:])
            return "".join(parts)
        parts.append(text[i:j])
        after = text[j + 1: j + 2]
        if after == "$":
            parts.append("$")
            i = j + 2
        elif after == "{":
            end = _closing_brace(text, j + 2)
            if end < 0:
                raise InterpolationError("unterminated ${: add the closing }, or write $$ "
                                         "for a literal $")
            parts.append(_substitute(text[j + 2: end], env, out))
            i = end + 1
        else:
            if _NAME.match(text, j + 1):
                out.bare = True
            parts.append("$")
            i = j + 1


def _closing_brace(text: str, start: int) -> int:
    """The index of the ``}`` closing a ``${`` whose body starts at ``start``, or -1."""
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def _substitute(body: str, env: Mapping[str, str], out: Expansion) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InterpolationError("${...} must start with a variable name "
                                 "([A-Za-z_][A-Za-z0-9_]*); write $$ for a literal $")
    name, rest = match.group(), body[match.end():]
    out.variables.append(name)
    value = env.get(name)
    if not rest:
        if value is None:
            raise InterpolationError(f"environment variable {name} is not set")
        out.env_values.append(value)
        return value
    op = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if op is None:
        raise InterpolationError(f"unsupported form ${{{name}...}}: use ${{{name}}}, "
                                 f"${{{name}:-default}} or ${{{name}:?message}}")
    word = rest[len(op):]
    if value is not None and (value or not op.startswith(":")):
        out.env_values.append(value)
        return value
    if op.endswith("-"):
        return _expand(word, env, out)
    state = "is not set" if value is None else "is empty"
    # The message is the file's own text, not a variable's value: safe to show.
    return _raise(f"environment variable {name} {state}" + (f": {word}" if word else ""))


def _raise(message: str) -> str:
    raise InterpolationError(message)
