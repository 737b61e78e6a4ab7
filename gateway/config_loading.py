"""Reading the config file: bytes -> text -> YAML -> plain data with the line of every key.

Bounded against hostile or broken files (size, aliases, nesting, encodings, control
characters) and with YAML syntax errors said in plain words, with the line and a caret.
`${NAME}` references are protected from the YAML parser by placeholders, so that they work in
any YAML context (`{password: ${P}}`), and are replaced in string values after parsing, so
that a substituted value can never change the structure of the file.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Mapping
from sys import intern
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from gateway.errors import ConfigError, ConfigProblem

Path = tuple[str | int, ...]
Lines = dict[Path, int]

MAX_FILE_BYTES = 32 * 2**20
"""A 200,000-tag file is about 17 MB; past this the file is refused before it is parsed."""
MAX_ALIAS_NODES = 250_000
"""Values that aliases (`*name`) may add in all: bounds a "billion laughs" file."""

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
_PROTECTED = "\ue000"
# Characters YAML 1.1 refuses anywhere in a stream (PyYAML's Reader.NON_PRINTABLE).
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd"
                            "\U00010000-\U0010ffff]")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster


class FileProblem(ConfigProblem):
    """A problem of the file as a whole, or of its text at a line and column (no key path)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__("", message, line)
        self.column = column

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else ""
        where += f", column {self.column}" if self.line and self.column else ""
        return f"{where}: {self.message}" if where else self.message


def read_config_bytes(path: str, source: str) -> bytes:
    """The file's bytes; refused past `MAX_FILE_BYTES` (checked before reading it all)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError as exc:
        raise _refused(source, "this is a directory, not a config file") from exc
    except OSError as exc:
        raise _refused(source, f"cannot read file: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise _refused(source, f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB: "
                       "a config file is text of a few hundred KB")
    return data


def decode_config(data: bytes, source: str) -> str:
    """Text from UTF-8 (a byte order mark is allowed), or UTF-16/32 with a byte order mark."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding).removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                raise _refused(source, f"the file starts with a {encoding.upper()} byte order "
                               f"mark but is not valid {encoding.upper()}: save it as "
                               "UTF-8") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data[:exc.start].decode("utf-8", "replace"))
        if data[1::2].count(0) > len(data) // 4:
            hint = "it looks like UTF-16 without a byte order mark"
        else:
            hint = f"byte 0x{data[exc.start]:02X} is not UTF-8 (Latin-1 or Windows-1252?)"
        raise ConfigError([FileProblem(f"the file is not UTF-8 text: {hint}; save it as UTF-8",
                                       line, column)], source) from exc


def load_yaml(text: str, source: str, env: Mapping[str, str],
              problems: list[ConfigProblem]) -> tuple[Any, KeyLines]:
    """Plain data and the line of every key path. Unset `${NAME}`s are appended to `problems`;
    anything that stops the file being read at all raises `ConfigError`."""
    _refuse_non_printable(text, source)
    protected, originals = _protect_references(text)
    reader = _EventReader(protected, env, originals)
    lines = KeyLines(protected, env, originals)
    try:
        data = reader.read()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([syntax_problem(exc, text, protected, originals)], source) from exc
    except yaml.YAMLError as exc:
        raise _refused(source, f"YAML: {exc}") from exc
    except _Refused as exc:
        raise ConfigError([ConfigProblem(_dotted(exc.path), exc.message, exc.line)],
                          source) from exc
    if data is _NO_KEY:
        raise ConfigError([FileProblem("the file is empty")], source)
    if reader.structure:
        raise ConfigError(reader.structure, source)
    problems += [ConfigProblem(_dotted(path), message, line_of(path, lines))
                 for path, message in reader.env_problems]
    return data, lines


class KeyLines(Mapping[Path, int]):
    """The line of every key path of a config, found the first time one is asked for, by
    reading the text again. Recorded while the file was read, they cost about 780 bytes a tag
    (a path tuple and a dict entry per key: 7.8 of the 13 MiB that reading a 10,000-tag file
    held at once, more than the models it makes; measured), and a config that loads without a
    problem never asks for one."""

    def __init__(self, protected: str, env: Mapping[str, str], originals: list[str]) -> None:
        self._source = (protected, env, originals)
        self._lines: Lines | None = None

    def _table(self) -> Lines:
        if self._lines is None:
            reader = _EventReader(*self._source, record_lines=True)
            reader.read()
            self._lines = reader.lines
        return self._lines

    def __getitem__(self, path: Path) -> int:
        return self._table()[path]

    def __contains__(self, path: object) -> bool:
        return path in self._table()

    def __iter__(self) -> Iterator[Path]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def line_of(loc: Path, lines: Mapping[Path, int]) -> int | None:
    """The line of `loc`, or of its nearest parent in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


# ---------------------------------------------------------------------------------------------
# Text-level checks and `${NAME}` protection


def _refuse_non_printable(text: str, source: str) -> None:
    found = _NON_PRINTABLE.search(text)
    if found is None:
        return
    char = found[0]
    line, column = _line_column(text[:found.start()])
    what = ("a NUL byte (is this a binary file, or UTF-16 without a byte order mark?)"
            if char == "\0" else f"the control character U+{ord(char):04X}, "
            "which YAML does not allow (pasted from a terminal or a PDF?)")
    raise ConfigError([FileProblem(what, line, column)], source)


def _protect_references(text: str) -> tuple[str, list[str]]:
    """Each one-line `${...}` replaced by a placeholder that is plain text in any YAML context."""
    originals: list[str] = []
    if _PROTECTED in text:  # a private-use character in the file itself: leave it as it is
        return text, originals

    def placeholder(match: re.Match[str]) -> str:
        if "\n" in match[0]:
            return match[0]
        originals.append(match[0])
        return f"\ue000{len(originals) - 1}\ue001"

    return ENV_REFERENCE.sub(placeholder, text), originals


def _restore(text: str, originals: list[str]) -> str:
    return _PLACEHOLDER.sub(lambda match: originals[int(match[1])], text)


def _line_column(before: str) -> tuple[int, int]:
    """1-based line and column of the character after `before`."""
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


# ---------------------------------------------------------------------------------------------
# Parser events to plain data


class _Refused(Exception):
    def __init__(self, path: Path, message: str, line: int | None) -> None:
        super().__init__(message)
        self.path, self.message, self.line = path, message, line


_NO_KEY: Any = object()  # a mapping waiting for its next key
_BAD_KEY: Any = object()  # a key already reported: its value is dropped
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE_EVENTS = (ScalarEvent, AliasEvent, MappingStartEvent, SequenceStartEvent)


class _Frame:
    """A mapping or list being read."""

    __slots__ = ("anchor", "is_key", "is_map", "key", "line", "path", "start", "value")

    def __init__(self, value: Any, path: Path, line: int, is_key: bool, anchor: str | None,
                 start: int) -> None:
        self.value, self.path, self.line, self.is_key = value, path, line, is_key
        self.anchor, self.start = anchor, start
        self.is_map = isinstance(value, dict)
        self.key: Any = _NO_KEY


class _EventReader:
    """Plain data straight from the parser's events (4x faster than composing YAML nodes and
    walking them, measured with 40,000 tags), recording the line of every key and item.

    An alias (`*name`) shares the anchored value instead of copying it; what it would add when
    expanded is counted and bounded (`MAX_ALIAS_NODES`), so a "billion laughs" file is
    refused at once, and an alias inside its own anchor is refused as a loop."""

    def __init__(self, text: str, env: Mapping[str, str], originals: list[str],
                 record_lines: bool = False) -> None:
        self._loader = _LOADER(text)
        self.env, self.originals = env, originals
        self.record_lines = record_lines
        self.lines: Lines = {}  # when record_lines (see KeyLines)
        self.structure: list[ConfigProblem] = []
        self.env_problems: list[tuple[Path, str]] = []
        self._stack: list[_Frame] = []
        self._values = 0  # values read so far, aliases counted expanded
        self._aliased = 0
        self._anchors: dict[str, tuple[Any, int]] = {}
        self._open_anchors: set[str] = set()
        self._constructor = SafeConstructor()
        self._plain_tags: dict[str, str] = {}
        self._root: Any = _NO_KEY
        self._documents = 0

    def read(self) -> Any:
        """The document's data (`_NO_KEY` for an empty file)."""
        try:
            get_event = self._loader.get_event
            while (event := get_event()) is not None:
                if type(event) is ScalarEvent and self._plain_in_mapping(event):
                    continue
                if isinstance(event, _VALUE_EVENTS):
                    self._value(event)
                elif isinstance(event, MappingEndEvent | SequenceEndEvent):
                    self._close()
                elif isinstance(event, DocumentStartEvent):
                    self._document(event)
            return self._root
        finally:
            self._loader.dispose()

    def _plain_in_mapping(self, event: Any) -> bool:
        """The common case, a key or a value of a mapping that is a plain word, a quoted string
        or a decimal number, read in one step; False: `_value` must read this event."""
        stack = self._stack
        if not stack or event.anchor is not None or not stack[-1].is_map:
            return False
        value, tag = event.value, event.tag
        if tag is not None:
            return False
        if event.implicit[0]:
            tag = self._plain_tags.get(value)
            if tag is None:
                tag = self._plain_tags[value] = self._loader.resolve(
                    yaml.ScalarNode, value, event.implicit)
            if tag == _INT and value.isdigit() and (value[0] != "0" or len(value) == 1) \
                    and len(value) < 19:
                value = int(value)  # YAML 1.1 reads 0123 as octal: that one goes the long way
            elif tag != _STR:
                return False
        if type(value) is str:
            if _PROTECTED in value or "${" in value:
                return False
            value = intern(value)  # "table", "holding": one string each, not one per tag
        top = stack[-1]
        if top.key is _NO_KEY:
            if value in top.value:
                return False  # a duplicate: reported by _key
            top.key = value
            if self.record_lines:
                self.lines[(*top.path, value)] = event.start_mark.line + 1
        else:
            if top.key is not _BAD_KEY:
                top.value[top.key] = value
            top.key = _NO_KEY
        self._values += 1
        return True

    def _document(self, event: Any) -> None:
        self._documents += 1
        if self._documents > 1:
            raise ComposerError("expected a single document in the stream", None,
                                "but found another document", event.start_mark)

    def _value(self, event: Any) -> None:
        top = self._stack[-1] if self._stack else None
        is_key = top is not None and top.key is _NO_KEY and isinstance(top.value, dict)
        if top is None:
            path: Path = ()
        elif is_key:
            path = top.path
        elif isinstance(top.value, dict):
            path = (*top.path, top.key)
        else:
            path = (*top.path, len(top.value))
        line = event.start_mark.line + 1
        if self.record_lines and not is_key and not (top is not None
                                                     and isinstance(top.value, dict)):
            self.lines[path] = line  # list items and the root; keys are recorded in _place
        if isinstance(event, ScalarEvent):
            self._values += 1
            value = self._scalar(event, path, is_key)
            if event.anchor is not None:
                self._anchors[event.anchor] = (value, 1)
            self._place(value, is_key, path, line)
        elif isinstance(event, AliasEvent):
            self._place(self._alias(event, path, line), is_key, path, line)
        else:
            self._values += 1
            container: Any = {} if isinstance(event, MappingStartEvent) else []
            if event.anchor is not None:
                self._open_anchors.add(event.anchor)
            self._stack.append(_Frame(container, path, line, is_key, event.anchor, self._values))

    def _close(self) -> None:
        frame = self._stack.pop()
        if frame.anchor is not None:
            self._anchors[frame.anchor] = (frame.value, self._values - frame.start + 1)
            self._open_anchors.discard(frame.anchor)
        self._place(frame.value, frame.is_key, frame.path, frame.line)

    def _place(self, value: Any, is_key: bool, path: Path, line: int) -> None:
        if not self._stack:
            self._root = value
            return
        top = self._stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
        elif is_key:
            top.key = self._key(value, top, line)
        else:
            if top.key is not _BAD_KEY:
                top.value[top.key] = value
            top.key = _NO_KEY

    def _key(self, key: Any, top: _Frame, line: int) -> Any:
        if isinstance(key, dict | list):
            kind = "list" if isinstance(key, list) else "mapping"
            self.structure.append(ConfigProblem(
                _dotted(top.path), f"a key must be a plain name, not a {kind}", line))
            return _BAD_KEY
        if key is _BAD_KEY:
            return key
        child = (*top.path, key)
        if key in top.value:
            self.structure.append(ConfigProblem(_dotted(child), "duplicate key", line))
        if self.record_lines:
            self.lines[child] = line
        return key

    def _alias(self, event: Any, path: Path, line: int) -> Any:
        name = event.anchor
        if name in self._open_anchors:
            raise _Refused(path, "an alias refers to a value that contains it (a loop)", line)
        if name not in self._anchors:
            raise ComposerError(None, None, f"found undefined alias {name!r}", event.start_mark)
        value, size = self._anchors[name]
        self._aliased += size
        self._values += size
        if self._aliased > MAX_ALIAS_NODES:
            raise _Refused(path, f"aliases (*name) expand to more than {MAX_ALIAS_NODES:,} "
                           "values: refused (a config never needs that many)", line)
        return value

    def _scalar(self, event: Any, path: Path, is_key: bool) -> Any:
        tag, value = event.tag, event.value
        if tag is None or tag == "!":
            if event.implicit[0]:  # plain: "holding", "uint16" repeat thousands of times
                tag = self._plain_tags.get(value)
                if tag is None:
                    tag = self._plain_tags[value] = self._loader.resolve(
                        yaml.ScalarNode, value, event.implicit)
            else:
                tag = self._loader.resolve(yaml.ScalarNode, value, event.implicit)
        if tag == _MERGE and is_key:
            self.structure.append(ConfigProblem(
                _dotted(path), "merge keys (<<) are not supported: write the keys out",
                event.start_mark.line + 1))
            return _BAD_KEY
        if tag != _STR:
            return self._construct(yaml.ScalarNode(tag, value, event.start_mark,
                                                   event.end_mark, event.style), path)
        if _PROTECTED in value:
            value = _restore(value, self.originals)
        if is_key or "${" not in value:
            return value
        return ENV_REFERENCE.sub(lambda match: self._env_value(match, path), value)

    def _construct(self, node: yaml.ScalarNode, path: Path) -> Any:
        build: Any = self._constructor.yaml_constructors.get(
            node.tag, self._constructor.yaml_constructors[None])
        try:
            return build(self._constructor, node)
        except (ConstructorError, ValueError, OverflowError):
            known = node.tag in self._constructor.yaml_constructors
            self.structure.append(ConfigProblem(
                _dotted(path), "this value cannot be read as " + node.tag.rsplit(":", 1)[-1]
                if known else f"the YAML tag {node.tag} is not supported",
                node.start_mark.line + 1))
            return None

    def _env_value(self, match: re.Match[str], path: Path) -> str:
        name, default = match[1], match[2]
        if name in self.env:
            return self.env[name]
        if default is not None:
            return default
        self.env_problems.append((path, f"environment variable {name} is not set "
                                  f"(use ${{{name}:-default}} for an optional one)"))
        return ""


def _dotted(loc: Path) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _refused(source: str, message: str) -> ConfigError:
    return ConfigError([FileProblem(message)], source)


# ---------------------------------------------------------------------------------------------
# YAML syntax errors in plain words

_INDENTATION = ("this line does not line up with the lines above it: the keys of one mapping "
                "(and the items of one list) must start in the same column")


def syntax_problem(exc: yaml.MarkedYAMLError, text: str, protected: str,
                   originals: list[str]) -> ConfigProblem:
    """One problem for a YAML syntax error: what is wrong in plain words, the line, a caret."""
    mark = exc.problem_mark or exc.context_mark
    problem, context = str(exc.problem or ""), str(exc.context or "")
    lines, protected_lines = text.split("\n"), protected.split("\n")
    if exc.context_mark is not None and ("could not find expected ':'" in problem
                                         or "quoted scalar" in context):
        mark = exc.context_mark  # the key without its colon, the quote never closed
    if mark is None:
        return FileProblem(f"YAML syntax: {problem or context}")
    line_text = lines[mark.line] if mark.line < len(lines) else ""
    protected_line = protected_lines[mark.line] if mark.line < len(protected_lines) else ""
    column = len(_restore(protected_line[:mark.column], originals))
    opened = exc.context_mark.line + 1 if exc.context_mark is not None else None
    words = _plain_words(problem, context, line_text, column, opened)
    caret = _caret(line_text, column)
    return FileProblem(f"YAML syntax: {words}{caret}", mark.line + 1, column + 1)


def _caret(line: str, column: int, width: int = 72) -> str:
    """The line (a window of it around `column` if it is long) and a caret under `column`."""
    start = max(0, min(column - width // 2, len(line) - width))
    shown = line[start:start + width].rstrip()
    return f"\n      {shown}\n      {' ' * min(column - start, len(shown))}^"


def _plain_words(problem: str, context: str, line: str, column: int,
                 opened: int | None) -> str:
    indentation = line[:len(line) - len(line.lstrip(" \t"))]
    if "tab" in problem or "\t" in indentation or line[column:column + 1] == "\t":
        return "a tab character: YAML indents with spaces only (replace the tab by spaces)"
    if line[column:column + 1] in ("]", "}") and "flow" not in context:
        opening = "[" if line[column] == "]" else "{"
        return f"a '{line[column]}' without its opening '{opening}'"
    if "could not find expected ':'" in problem:
        return "a key without a colon: write `key: value` (a space after the colon)"
    if "mapping values are not allowed" in problem:
        return ("a ':' where no key can start: is this line indented deeper than the one "
                "above, is the colon missing on the line above, or does a value contain ': ' "
                "(then quote it)?")
    if "block end" in problem or ("did not find expected key" in problem
                                  and "block" in context):
        return _INDENTATION
    if "'-'" in problem or "did not find expected '-'" in problem:
        return _INDENTATION
    if "flow mapping" in context or "flow sequence" in context:
        closing = "}" if "mapping" in context else "]"
        return (f"a ',' or '{closing}' is missing in the {'{...}' if closing == '}' else '[...]'}"
                f" opened on line {opened}; a value containing ':', ',', '[', ']', '{{' or "
                "'}' needs quotes")
    if "quoted scalar" in context:
        return f"the quote opened on line {opened} is never closed"
    if "undefined alias" in problem:
        return "an alias (*name) without an anchor (&name) before it"
    if "single document" in context:
        return "the file holds more than one YAML document (a second '---'): keep one"
    if "cannot start any token" in problem:
        return ("a value cannot start with this character ('@', '`' or '%'): put the value "
                "in quotes")
    if "nesting depth" in problem:
        return "nested too deeply to be a config"
    return f"{problem} ({context})" if context else problem
