"""Reading YAML config files: the provider file and the web config both load here.

This module owns what the two files share before their own validation:

* reading the file, with a clear ``ConfigError`` when it is missing,
  unreadable, too large, binary or not UTF-8;
* parsing it while keeping the line and column of every key and value.
  Duplicate keys are errors (PyYAML would silently keep the last one), a
  recursive alias is an error, and alias expansion is bounded, so a small
  file cannot expand to gigabytes;
* saying where a problem is, always in one shape::

      file:line:column: provider "x": field "a.b": message

  from a pydantic ``ValidationError`` (``validation_problems``) or from the
  caller's own checks (``Problem``). A ``CheckedModel`` reports cross-field
  problems at the field concerned (``field_problems``, raised as ``FieldProblems``).

Nothing here prints a value from the file: a caller that wants the offending
value echoed passes a ``show`` function that decides what is safe to print.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Self, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

try:  # libyaml parses about four times faster; the pure-Python parser is the same language
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment,unused-ignore]

Loc = tuple[str | int, ...]

#: A config file larger than this is refused rather than read: a provider
#: line is ~300 bytes, so this is room for ~100,000 credentials, and a mistaken
#: ``--config.file /dev/zero`` ends in an error, not in exhausted memory.
MAX_FILE_BYTES = 32 << 20

#: Values in the document once aliases are expanded. Far above any real file
#: (10,000 providers with two probes each is ~300,000), far below what an
#: alias bomb ("billion laughs") expands to.
MAX_NODES = 1_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(Exception):
    """A configuration problem; the message is safe to print (no secret values)."""


class StrictModel(BaseModel):
    """Base for config file models: unknown keys are errors; values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- reading


def read_config_text(path: str | os.PathLike[str], what: str = "config file") -> str:
    """The text of a config file; ConfigError naming the file if it cannot be used."""
    name = os.fspath(path)
    try:
        with Path(name).open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{name}: {what} is larger than {MAX_FILE_BYTES >> 20} MiB")
    if b"\x00" in data:
        line, column = _position_in(data, data.index(b"\x00"))
        raise ConfigError(
            f"{name}:{line}:{column}: {what} holds a NUL byte: it is binary, not YAML text"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _position_in(data, exc.start)
        raise ConfigError(
            f"{name}:{line}:{column}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x})"
        ) from None


def _position_in(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and byte column of a byte offset."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


# --------------------------------------------------------------------------- locations


class Position(NamedTuple):
    """A 1-based line and column in the file; positions sort in reading order."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


#: Given the parsed data and a location, the labels that name where it lives
#: (``provider "x"``) and the rest of the location, which is shown as the field.
Scope = Callable[[Any, Loc], tuple[tuple[str, ...], Loc]]


def no_scope(data: Any, loc: Loc) -> tuple[tuple[str, ...], Loc]:
    return (), loc


def _printable(text: str, limit: int = 60) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def named_items(key: str, label: str) -> Scope:
    """A scope naming the items of the top-level list ``key`` by their ``name``.

    ``("providers", 2, "timeout")`` becomes ``provider "sd-prod"`` plus field
    ``timeout`` (``provider #3`` when the item has no usable name).
    """

    def scope(data: Any, loc: Loc) -> tuple[tuple[str, ...], Loc]:
        if len(loc) < 2 or loc[0] != key or not isinstance(loc[1], int):
            return (), loc
        index = loc[1]
        items = data.get(key) if isinstance(data, dict) else None
        name = None
        if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
            value = items[index].get("name")
            name = value if isinstance(value, str) and value else None
        which = f'{label} "{_printable(name)}"' if name else f"{label} #{index + 1}"
        return (which,), loc[2:]

    return scope


@dataclass(frozen=True)
class Problem:
    """One thing wrong, at a location in the document."""

    loc: Loc
    message: str
    #: Point at the key rather than its value (unknown and duplicate keys).
    key: bool = False
    #: Where to point when the value was not written at ``loc`` (inherited).
    at: Loc | None = None
    #: Shown after the field name, e.g. "set in defaults".
    note: str = ""
    #: Where to point, when known better than any location (a duplicate key).
    position: Position | None = None


@dataclass
class LocatedYaml:
    """Parsed YAML plus the position of every value and key, by location."""

    path: str
    data: Any
    values: dict[Loc, Position] = field(default_factory=dict)
    keys: dict[Loc, Position] = field(default_factory=dict)
    scope: Scope = no_scope

    def position(self, loc: Loc, *, key: bool = False) -> Position | None:
        """Where ``loc`` is written, or its nearest written ancestor."""
        if key and loc in self.keys:
            return self.keys[loc]
        for n in range(len(loc), -1, -1):
            found = self.values.get(loc[:n])
            if found is not None:
                return found
        return None

    def written(self, loc: Loc) -> bool:
        return loc in self.values

    def locate(self, loc: Loc, *, key: bool = False, at: Loc | None = None,
               note: str = "", position: Position | None = None) -> str:
        """``file:line:column: provider "x": field "a.b"`` for a location."""
        pos = position or self.position(at if at is not None else loc, key=key)
        parts = [f"{self.path}:{pos}" if pos else self.path]
        labels, rest = self.scope(self.data, loc)
        parts.extend(labels)
        if rest:
            parts.append('field "' + ".".join(str(p) for p in rest) + '"'
                         + (f" ({note})" if note else ""))
        return ": ".join(parts)

    def format(self, problems: Iterable[Problem]) -> list[str]:
        """One line per problem, in the order they appear in the file."""

        def where(p: Problem) -> Position:
            pos = p.position or self.position(p.at if p.at is not None else p.loc, key=p.key)
            return pos or Position(0, 0)

        return [f"{self.locate(p.loc, key=p.key, at=p.at, note=p.note, position=p.position)}"
                f": {p.message}" for p in sorted(problems, key=where)]

    def error(self, problems: Iterable[Problem]) -> ConfigError:
        return ConfigError("\n".join(self.format(problems)))


# --------------------------------------------------------------------------- parsing


class _Loader(_SafeLoader):
    """SafeLoader whose impossible timestamps are errors with a position."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid timestamp: {exc}", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _pos(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _syntax_error(path: str, exc: yaml.YAMLError, text: str) -> ConfigError:
    # Built from the marks, not str(exc): that names "<unicode string>" and
    # quotes the offending line of the file.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        where = _pos(exc.problem_mark)
        message = exc.problem or "syntax error"
        if exc.context:
            context_at = _pos(exc.context_mark) if exc.context_mark is not None else None
            message += (f" ({exc.context} at {context_at})"
                        if context_at and context_at != where else f" ({exc.context})")
        lines = text.splitlines()
        if (where.line <= len(lines) and where.column <= len(lines[where.line - 1])
                and lines[where.line - 1][where.column - 1] == "\t"):
            message += "; this is a tab: YAML indents with spaces only"
        return ConfigError(f"{path}:{where}: invalid YAML: {message}")
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        return ConfigError(f"{path}:{line}:{column}: invalid YAML: character "
                           f"#x{exc.character:04x} is not allowed in YAML text")
    return ConfigError(f"{path}: invalid YAML: {type(exc).__name__}")


@dataclass
class _Walk:
    values: dict[Loc, Position] = field(default_factory=dict)
    keys: dict[Loc, Position] = field(default_factory=dict)
    duplicates: list[tuple[Loc, Position, Position]] = field(default_factory=list)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_size(root: yaml.Node, path: str) -> int:
    """How many values the document holds once every alias is expanded.

    Counted over the graph of distinct nodes (each measured once), so an alias
    bomb is caught in time linear in the file, before anything expands it; a
    node that contains itself through an alias is refused here too.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            size[id(node)] = min(MAX_NODES + 1,
                                 1 + sum(size[id(c)] for c in _children(node)))
            continue
        if id(node) in size:
            continue
        if id(node) in on_path:
            raise ConfigError(f"{path}:{_pos(node.start_mark)}: invalid YAML: an alias "
                              "refers to a node that contains it (recursive structure)")
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


def _walk(root: yaml.Node, path: str) -> _Walk:
    """Record positions and duplicate keys.

    Iterative, so deep nesting cannot exhaust the Python stack. Keys that come
    from a merge (``<<: *base``) never override a position written in place.
    """
    if _expanded_size(root, path) > MAX_NODES:
        raise ConfigError(f"{path}: the document expands (through aliases) to more than "
                          f"{MAX_NODES:,} values; refusing to load it")
    out = _Walk()
    stack: list[tuple[yaml.Node, Loc, bool]] = [(root, (), False)]
    while stack:
        node, at, merged = stack.pop()
        if merged:
            out.values.setdefault(at, _pos(node.start_mark))
        else:
            out.values[at] = _pos(node.start_mark)
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*at, i), merged) for i, item in enumerate(node.value))
            continue
        if not isinstance(node, yaml.MappingNode):
            continue
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                # The merged mappings' keys sit at this mapping's locations.
                sources = (value_node.value if isinstance(value_node, yaml.SequenceNode)
                           else [value_node])
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        for k, v in source.value:
                            if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                                out.keys.setdefault((*at, str(k.value)), _pos(k.start_mark))
                                stack.append((v, (*at, str(k.value)), True))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            here = _pos(key_node.start_mark)
            if key in seen:
                out.duplicates.append(((*at, key), seen[key], here))
            else:
                seen[key] = here
            if merged:
                out.keys.setdefault((*at, key), here)
            else:
                out.keys[(*at, key)] = here
            stack.append((value_node, (*at, key), merged))
    return out


def compose_yaml(text: str, path: str, scope: Scope = no_scope) -> LocatedYaml:
    """Parse one YAML document, keeping positions; ConfigError on any problem."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        walked = _walk(node, path) if node is not None else _Walk()
        data = loader.construct_document(node) if node is not None else None
        doc = LocatedYaml(path, data, walked.values, walked.keys, scope)
        if walked.duplicates:
            raise doc.error(
                Problem(loc, f"duplicate key (first set at line {first.line})", position=here)
                for loc, first, here in walked.duplicates
            )
        return doc
    except yaml.YAMLError as exc:
        raise _syntax_error(path, exc, text) from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


# --------------------------------------------------------------------------- validation


class FieldProblems(ValueError):
    """Raised by a model validator to report problems at named fields.

    Each problem's location is relative to the model being validated, so a
    provider check says ``("probes", 0, "timeout")`` and the message comes out
    at that probe's line with ``field "probes.0.timeout"``.
    """

    def __init__(self, problems: Iterable[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


#: Problems found at named fields, each location relative to the model.
Problems = list[tuple[Loc, str]]


class CheckedModel(StrictModel):
    """A config model whose fields are also judged together, once each is valid alone."""

    @model_validator(mode="after")
    def _check_fields_together(self) -> Self:
        problems = self.field_problems()
        if problems:
            raise FieldProblems(problems)
        return self

    def field_problems(self) -> Problems:
        """Contradictions between fields, each at the field to change.

        Subclasses extend the list (call super); pydantic runs this once every
        field has validated on its own.
        """
        return []


#: Given a location and the value pydantic saw there, text to append to the
#: message (`` (got '5x')``), or None to append nothing.
Show = Callable[[Loc, Any], str | None]


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def _model_at(model: type[BaseModel], path: Loc) -> type[BaseModel] | None:
    """The model class whose fields live at ``path`` below ``model``."""
    tp: Any = model
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str) or part not in tp.model_fields:
                return None
            tp = tp.model_fields[part].annotation
        elif get_origin(tp) in (list, tuple) and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def unknown_key_message(model: type[BaseModel] | None, path: Loc) -> str:
    """``unknown key``, with the closest known key when one is close."""
    parent = _model_at(model, path[:-1]) if model is not None else None
    if parent is not None and path and isinstance(path[-1], str):
        close = difflib.get_close_matches(path[-1], list(parent.model_fields), n=1,
                                          cutoff=0.75)
        if close:
            return f'unknown key; did you mean "{close[0]}"?'
    return "unknown key"


def validation_problems(exc: ValidationError, prefix: Loc = (), *,
                        show: Show | None = None,
                        model: type[BaseModel] | None = None) -> list[Problem]:
    """One Problem per pydantic error; ``model`` (the validated class) adds hints."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        # pydantic adds union/validator names such as "function-after[...]" to loc.
        rel = tuple(p for p in err["loc"] if not isinstance(p, str) or "[" not in p)
        loc = prefix + rel
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, FieldProblems):
            out.extend(Problem(loc + sub, message) for sub, message in error.problems)
            continue
        if err["type"] == "extra_forbidden":
            out.append(Problem(loc, unknown_key_message(model, rel), key=True))
            continue
        message = err["msg"].removeprefix("Value error, ")
        if show is not None and err["type"] != "missing":
            message += show(loc, err.get("input")) or ""
        out.append(Problem(loc, message))
    return out


def format_validation(path: str, located: LocatedYaml, exc: ValidationError,
                      prefix: Loc = (), *, model: type[BaseModel] | None = None) -> list[str]:
    """The errors of a validation, one located line each; no value is echoed."""
    return located.format(validation_problems(exc, prefix, model=model))


def locate(path: str, located: LocatedYaml, loc: Loc) -> str:
    """``file:line:column: field "a.b"`` for a value's location."""
    return located.locate(loc)


def check_mapping(located: LocatedYaml, what: str) -> Mapping[str, Any]:
    """The top level, which must be a mapping (an empty file is an empty one)."""
    if located.data is None:
        return {}
    if not isinstance(located.data, dict):
        pos = located.position(())
        raise ConfigError(f"{located.path}{':' + str(pos) if pos else ''}: "
                          f"the top level must be a mapping ({what})")
    return located.data
