"""ESF (LWES Event Specification File) parsing and event validation.

An ESF declares which events exist and which typed attributes each may carry:

    MetaEventInfo {            # attributes every event may carry
        ip_addr SenderIP;
        int64   ReceiptTime;
    }
    MonDemand::StatsMsg {
        required string prog_id;
        uint16 num = 0;
        nullable int32 samples[16];
    }

The grammar is the union the Java, C and Erlang parsers agree on (see
wire-format.md §2): `#` comments, `Name { ... }` blocks (empty blocks
allowed), attributes `[required|optional] [nullable] type name [ [N] | [] ]
[= default] ;`. `nullable` is only valid on arrays and defaults only on
scalars, as in Java. `MetaEventInfo` may appear anywhere; its attributes are
looked up for every event, the way the C library does it, so file order does
not matter. Validation follows Java's `EventTemplateDB.validate`: every
problem is collected rather than stopping at the first.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mondemand.lwes.errors import EsfError, ValidationError
from mondemand.lwes.event import Event
from mondemand.lwes.types import INT_RANGES, MAX_ARRAY, LwesType

__all__ = [
    "META_EVENT",
    "EsfAttribute",
    "EsfDatabase",
    "EsfEventDef",
    "load_esf",
    "parse_esf",
]

#: The pseudo-event whose attributes every event may carry.
META_EVENT = "MetaEventInfo"

_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class EsfAttribute:
    """One declared attribute.

    `type` is the full wire type (an array type for `name[N]` / `name[]`,
    a nullable array type when `nullable` was given); `max_size` is N for
    `name[N]` and None otherwise; `default` is the parsed `= value` (None
    when absent), kept for emitters that want Java's default-filling.
    """

    name: str
    type: LwesType
    required: bool = False
    nullable: bool = False
    max_size: int | None = None
    default: object | None = None


@dataclass(frozen=True)
class EsfEventDef:
    """One `Name { ... }` block: its attributes in declaration order."""

    name: str
    attributes: dict[str, EsfAttribute]


@dataclass
class EsfDatabase:
    """A parsed ESF: the declared events plus the optional MetaEventInfo block.

    `events` never contains MetaEventInfo; its attributes are reached through
    `lookup`, which every validation goes through.
    """

    events: dict[str, EsfEventDef]
    meta: EsfEventDef | None = None

    def lookup(self, event_name: str, attr: str) -> EsfAttribute | None:
        """The declaration of `attr` for `event_name`, falling back to MetaEventInfo.

        An event's own declaration wins over MetaEventInfo's. Returns None when
        the event is unknown or neither declares the attribute.
        """
        if event_name == META_EVENT:
            return self.meta.attributes.get(attr) if self.meta else None
        event_def = self.events.get(event_name)
        if event_def is None:
            return None
        found = event_def.attributes.get(attr)
        if found is None and self.meta is not None:
            found = self.meta.attributes.get(attr)
        return found

    def problems(self, event: Event) -> list[str]:
        """Every way `event` disagrees with its declaration; empty when it is valid.

        Checks, in this order: the event is declared; each present attribute is
        declared (in the event or MetaEventInfo) with the identical type and,
        for `[N]` arrays, at most N elements; every `required` attribute of the
        event and of MetaEventInfo is present.
        """
        event_def = self.events.get(event.name)
        if event_def is None:
            return [f"unknown event {event.name}"]
        found: list[str] = []
        for key, (typ, value) in event.attrs.items():
            decl = self.lookup(event.name, key)
            if decl is None:
                found.append(f"unknown attribute {key}")
                continue
            if typ != decl.type:
                found.append(f"{key}: expected {decl.type.type_name}, got {_type_label(typ)}")
                continue
            if decl.max_size is not None and len(value) > decl.max_size:
                found.append(f"{key}: {len(value)} elements, more than the declared maximum of {decl.max_size}")
        for decl in self._declared(event_def):
            if decl.required and decl.name not in event.attrs:
                found.append(f"missing required attribute {decl.name}")
        return found

    def validate(self, event: Event) -> None:
        """Raise `ValidationError` listing every problem `problems` finds; return None if there are none."""
        found = self.problems(event)
        if found:
            raise ValidationError(event.name, found)

    def _declared(self, event_def: EsfEventDef) -> list[EsfAttribute]:
        """The event's declarations followed by MetaEventInfo's that it does not override."""
        decls = list(event_def.attributes.values())
        if self.meta is not None:
            decls.extend(a for n, a in self.meta.attributes.items() if n not in event_def.attributes)
        return decls


def _type_label(typ: object) -> str:
    """A type's ESF name, tolerating a raw int that is not an `LwesType`."""
    return typ.type_name if isinstance(typ, LwesType) else repr(typ)


def parse_esf(text: str, source: str = "<esf>") -> EsfDatabase:
    """Parse ESF source text; `source` names it in error messages.

    Raises `EsfError` ("source:line:column: what was expected") on the first
    syntax or semantic error: unknown types, `nullable` on a scalar, defaults
    on arrays or out of range for their type, duplicate event or attribute
    names.
    """
    return _Parser(_tokenize(text, source), source).parse()


def load_esf(path: str | os.PathLike[str]) -> EsfDatabase:
    """Read and parse the UTF-8 ESF file at `path` (named by its path in errors).

    I/O failures propagate as `OSError`; undecodable bytes become `EsfError`.
    """
    source = os.fspath(path)
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EsfError(f"{source}: not valid UTF-8 at byte {exc.start}") from None
    return parse_esf(text, source)


# --------------------------------------------------------------------------
# Lexer


class _Token(NamedTuple):
    kind: str  # ident, number, string, punct, eof
    text: str
    line: int
    column: int

    def describe(self) -> str:
        """How the token reads in an error message."""
        if self.kind == "eof":
            return "end of file"
        return repr(self.text) if self.kind != "string" else f"string {self.text}"


_TOKEN_RE = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\[^\n])*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:.\-]*)
  | (?P<number>[-+]?\.?[0-9][A-Za-z0-9_.+\-]*)
  | (?P<punct>[{}\[\]=;])
    """,
    re.VERBOSE,
)


def _tokenize(text: str, source: str) -> list[_Token]:
    """Split `text` into tokens carrying 1-based line and column numbers."""
    tokens: list[_Token] = []
    pos = 0
    line = 1
    line_start = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        column = pos - line_start + 1
        if match is None:
            char = text[pos]
            if char == '"':
                raise EsfError(f"{source}:{line}:{column}: unterminated string")
            raise EsfError(f"{source}:{line}:{column}: unexpected character {char!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind == "newline":
            line += 1
            line_start = match.end()
        elif kind not in ("space", "comment"):
            tokens.append(_Token(kind, match.group(), line, column))
        pos = match.end()
    tokens.append(_Token("eof", "", line, pos - line_start + 1))
    return tokens


# --------------------------------------------------------------------------
# Parser

_QUALIFIERS = ("required", "optional")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "\\": "\\"}


class _Parser:
    """Recursive descent over the token list; one instance per parse."""

    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.pos = 0

    # -- helpers -------------------------------------------------------

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def error(self, token: _Token, message: str) -> EsfError:
        return EsfError(f"{self.source}:{token.line}:{token.column}: {message}")

    def expected(self, what: str) -> EsfError:
        token = self.peek()
        return self.error(token, f"expected {what}, got {token.describe()}")

    def at_punct(self, char: str) -> bool:
        token = self.peek()
        return token.kind == "punct" and token.text == char

    def expect_punct(self, char: str, context: str) -> _Token:
        if not self.at_punct(char):
            raise self.expected(f"{char!r} {context}")
        return self.advance()

    # -- grammar -------------------------------------------------------

    def parse(self) -> EsfDatabase:
        events: dict[str, EsfEventDef] = {}
        meta: EsfEventDef | None = None
        first_seen: dict[str, int] = {}
        while self.peek().kind != "eof":
            name_token = self.peek()
            if name_token.kind != "ident":
                raise self.expected("an event name")
            self.advance()
            if name_token.text in first_seen:
                raise self.error(
                    name_token,
                    f"duplicate event {name_token.text!r} (first defined on line {first_seen[name_token.text]})",
                )
            first_seen[name_token.text] = name_token.line
            event_def = self.event_body(name_token.text)
            if event_def.name == META_EVENT:
                meta = event_def
            else:
                events[event_def.name] = event_def
        return EsfDatabase(events=events, meta=meta)

    def event_body(self, event_name: str) -> EsfEventDef:
        self.expect_punct("{", f"after event name {event_name!r}")
        attributes: dict[str, EsfAttribute] = {}
        first_seen: dict[str, int] = {}
        while not self.at_punct("}"):
            if self.peek().kind == "eof":
                raise self.expected(f"an attribute or '}}' to close event {event_name!r}")
            name_token, attr = self.attribute()
            if attr.name in first_seen:
                raise self.error(
                    name_token,
                    f"duplicate attribute {attr.name!r} in event {event_name!r}"
                    f" (first declared on line {first_seen[attr.name]})",
                )
            first_seen[attr.name] = name_token.line
            attributes[attr.name] = attr
        self.advance()
        return EsfEventDef(event_name, attributes)

    def attribute(self) -> tuple[_Token, EsfAttribute]:
        qualifier: _Token | None = None
        nullable: _Token | None = None
        # Modifiers may come in either order (C accepts both), each at most once.
        while self.peek().kind == "ident" and self.peek().text in (*_QUALIFIERS, "nullable"):
            token = self.advance()
            if token.text == "nullable":
                if nullable is not None:
                    raise self.error(token, "'nullable' given twice")
                nullable = token
            else:
                if qualifier is not None:
                    raise self.error(token, f"{token.text!r} after {qualifier.text!r}: give at most one qualifier")
                qualifier = token

        type_token = self.peek()
        if type_token.kind != "ident":
            raise self.expected("a type name")
        try:
            scalar = LwesType.from_name(type_token.text)
        except ValueError:
            raise self.error(type_token, f"unknown type {type_token.text!r}") from None
        self.advance()

        name_token = self.peek()
        if name_token.kind != "ident":
            raise self.expected(f"an attribute name after type {type_token.text!r}")
        self.advance()
        name = name_token.text

        is_array = False
        max_size: int | None = None
        if self.at_punct("["):
            bracket = self.advance()
            is_array = True
            if not self.at_punct("]"):
                max_size = self.array_size()
            self.expect_punct("]", "to close the array size")
            if scalar is LwesType.LONG_STRING:
                raise self.error(bracket, "long_string cannot be an array")

        if nullable is not None and not is_array:
            raise self.error(nullable, f"'nullable' is only valid for arrays (declare {name!r} with [N] or [])")

        typ = scalar.array_of(nullable=nullable is not None) if is_array else scalar

        default: object | None = None
        if self.at_punct("="):
            equals = self.advance()
            if is_array:
                raise self.error(equals, f"array attribute {name!r} cannot have a default")
            default = self.default_value(scalar, name)

        self.expect_punct(";", "after attribute name" if default is None else "after default value")
        attr = EsfAttribute(
            name=name,
            type=typ,
            required=qualifier is not None and qualifier.text == "required",
            nullable=nullable is not None,
            max_size=max_size,
            default=default,
        )
        return name_token, attr

    def array_size(self) -> int:
        token = self.peek()
        if token.kind != "number" or not token.text.isdigit():
            raise self.expected("an array size or ']'")
        size = int(token.text)
        if not 1 <= size <= MAX_ARRAY:
            raise self.error(token, f"array size {size} out of range 1..{MAX_ARRAY}")
        self.advance()
        return size

    def default_value(self, typ: LwesType, name: str) -> object:
        token = self.peek()
        if token.kind not in ("number", "string", "ident"):
            raise self.expected(f"a default value for {name!r}")
        self.advance()
        what = f"default for {typ.type_name} {name!r}"

        if typ in INT_RANGES:
            if token.kind != "number" or not re.fullmatch(r"[-+]?[0-9]+", token.text):
                raise self.error(token, f"{what}: expected an integer, got {token.describe()}")
            value = int(token.text)
            low, high = INT_RANGES[typ]
            if not low <= value <= high:
                raise self.error(token, f"{what}: {value} is out of range {low}..{high}")
            return value

        if typ in (LwesType.FLOAT, LwesType.DOUBLE):
            number: float | None = None
            if token.kind == "number":
                try:
                    number = float(token.text)
                except ValueError:
                    number = None
            if number is None or not math.isfinite(number):
                raise self.error(token, f"{what}: expected a number, got {token.describe()}")
            if typ is LwesType.FLOAT and abs(number) > _FLOAT32_MAX:
                raise self.error(token, f"{what}: {token.text} does not fit in a float")
            return number

        if typ is LwesType.BOOLEAN:
            if token.kind != "ident" or token.text not in ("true", "false"):
                raise self.error(token, f"{what}: expected true or false, got {token.describe()}")
            return token.text == "true"

        if typ is LwesType.IP_ADDR:
            text = self.unquote(token) if token.kind == "string" else token.text
            try:
                return str(ipaddress.IPv4Address(text))
            except ValueError:
                raise self.error(token, f"{what}: expected a dotted IPv4 address, got {token.describe()}") from None

        # string and long_string
        if token.kind != "string":
            raise self.error(token, f"{what}: expected a quoted string, got {token.describe()}")
        return self.unquote(token)

    def unquote(self, token: _Token) -> str:
        """The value of a `"..."` token with backslash escapes resolved."""
        out: list[str] = []
        body = token.text[1:-1]
        i = 0
        while i < len(body):
            char = body[i]
            if char == "\\":
                escaped = body[i + 1]
                if escaped not in _ESCAPES:
                    column = token.column + 1 + i
                    raise EsfError(f"{self.source}:{token.line}:{column}: unknown escape '\\{escaped}' in string")
                out.append(_ESCAPES[escaped])
                i += 2
            else:
                out.append(char)
                i += 1
        return "".join(out)
