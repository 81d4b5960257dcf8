"""Ruby Marshal 4.8, restricted to plain data: what MCollective's ``psk`` plugin puts on the wire.

MCollective 2.x serialises every request and reply with ``Marshal.dump`` and the nodes
``Marshal.load`` whatever arrives. A full Marshal loader instantiates arbitrary classes
(``o``, ``u``/``_load``, ``U``/``marshal_load``, ``S`` structs, ``e`` extended modules):
loading an untrusted payload that way is remote code execution. This decoder reads only
the plain data a reply carries and refuses everything else, before building it:

* ``nil``, ``true``, ``false``, fixnums, bignums (at most ``MAX_BIGNUM_BYTES``), floats;
* strings: without an encoding they are binary (``bytes``: a reply's serialised body is
  one), with the ``E``/``encoding`` instance variable (and no other) they are ``str``;
* symbols (``Symbol``, a ``str`` subclass) and symbol links; arrays and hashes (no
  default value); object links to those, as long as they are complete (no cycles).

Limits keep a hostile payload cheap: nesting depth, total elements, and every length is
checked against the bytes that are left before anything is allocated. Anything else
raises ``MarshalError`` with a short ``reason`` (a metric label), never another error.

``dumps`` writes the same subset, as Ruby 3.1's ``Marshal.dump`` does, for requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MAX_DEPTH = 32
MAX_ITEMS = 100_000  # array elements plus hash entries over the whole payload
MAX_BIGNUM_BYTES = 32
FIXNUM_MIN, FIXNUM_MAX = -(2**30), 2**30 - 1  # what Ruby writes as 'i' on 64-bit hosts

RubyValue = (None | bool | int | float | str | bytes | list["RubyValue"]
             | dict["RubyValue", "RubyValue"])


class MarshalError(ValueError):
    """The payload is not Marshal data this decoder accepts; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Symbol(str):
    """A Ruby symbol. Equal to (and hashed as) the ``str`` of its name, so ``reply["body"]``
    finds ``:body``; the decoder refuses a hash holding both ``:a`` and ``"a"``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f":{str.__str__(self)}"


_PENDING = object()  # an array or hash still being read: a link to it would be a cycle
_REFUSED = {
    b"o": "object", b"u": "user_dump", b"U": "user_marshal", b"S": "struct",
    b"e": "extended", b"C": "user_class", b"c": "class", b"m": "module", b"M": "class_or_module",
    b"d": "data", b"/": "regexp", b"}": "hash_with_default",
}
_ENCODINGS = {"UTF-8": "utf-8", "US-ASCII": "ascii", "ASCII-8BIT": "latin-1",
              "ISO-8859-1": "latin-1", "BINARY": "latin-1"}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.symbols: list[Symbol] = []
        self.objects: list[object] = []
        self.items = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise MarshalError("truncated", f"ends at byte {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, count: int) -> bytes:
        if count < 0 or count > len(self.data) - self.pos:
            raise MarshalError("truncated", f"{count} bytes wanted at {self.pos}, "
                                            f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def long(self) -> int:
        c = self.byte()
        c = c - 256 if c > 127 else c
        if c == 0:
            return 0
        if c > 4:
            return c - 5
        if c < -4:
            return c + 5
        if c > 0:
            return int.from_bytes(self.take(c), "little")
        raw = self.take(-c)
        value = -1
        for i, octet in enumerate(raw):
            value &= ~(0xFF << (8 * i))
            value |= octet << (8 * i)
        return value

    def length(self, *, each: int = 1) -> int:
        """A count of things of at least ``each`` bytes: never more than the bytes left."""
        count = self.long()
        if count < 0 or count * each > len(self.data) - self.pos:
            raise MarshalError("bad_length", f"{count} at byte {self.pos}")
        return count

    def count(self, items: int) -> None:
        self.items += items
        if self.items > MAX_ITEMS:
            raise MarshalError("too_many_items", f"more than {MAX_ITEMS} elements")

    def register(self, value: object) -> int:
        self.objects.append(value)
        return len(self.objects) - 1

    def symbol_body(self) -> Symbol:
        raw = self.take(self.length())
        try:
            name = Symbol(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise MarshalError("bad_string", "symbol is not UTF-8") from exc
        self.symbols.append(name)
        return name

    def symbol(self) -> Symbol:
        kind = self.take(1)
        if kind == b":":
            return self.symbol_body()
        if kind == b";":
            index = self.long()
            if not 0 <= index < len(self.symbols):
                raise MarshalError("bad_link", f"symbol link {index}")
            return self.symbols[index]
        if kind == b"I" and self.take(1) == b":":  # a non-ASCII symbol with its encoding
            name = self.symbol_body()
            self.ivars()
            return name
        raise MarshalError("bad_symbol", f"expected a symbol at byte {self.pos - 1}")

    def ivars(self) -> str | None:
        """Read instance variables; only a string's encoding is allowed. Its codec name."""
        codec: str | None = None
        for _ in range(self.length(each=2)):
            name = self.symbol()
            value = self.value(depth=MAX_DEPTH - 1)
            if name == "E" and isinstance(value, bool):
                codec = "utf-8" if value else "ascii"
            elif name == "encoding" and isinstance(value, bytes | str):
                label = value.decode("latin-1") if isinstance(value, bytes) else value
                if label not in _ENCODINGS:
                    raise MarshalError("refused_encoding", label[:40])
                codec = _ENCODINGS[label]
            else:
                raise MarshalError("refused_ivar", f"instance variable {name!r}")
        return codec

    def value(self, *, depth: int) -> RubyValue:
        if depth > MAX_DEPTH:
            raise MarshalError("too_deep", f"nested more than {MAX_DEPTH} levels")
        kind = self.take(1)
        if kind == b"0":
            return None
        if kind == b"T":
            return True
        if kind == b"F":
            return False
        if kind == b"i":
            return self.long()
        if kind in (b":", b";"):
            self.pos -= 1
            return self.symbol()
        if kind == b"l":
            return self.bignum()
        if kind == b"f":
            return self.float()
        if kind == b'"':
            raw = self.take(self.length())
            self.register(raw)
            return raw
        if kind == b"I":
            return self.with_ivars()
        if kind == b"[":
            return self.array(depth)
        if kind == b"{":
            return self.hash(depth)
        if kind == b"@":
            index = self.long()
            if not 0 <= index < len(self.objects):
                raise MarshalError("bad_link", f"object link {index}")
            target = self.objects[index]
            if target is _PENDING:
                raise MarshalError("cyclic", f"object link {index} to a container being read")
            return target  # type: ignore[return-value]  # only RubyValues are registered
        if kind in _REFUSED:
            raise MarshalError("refused_type", _REFUSED[kind])
        raise MarshalError("bad_type", f"type byte {kind!r} at {self.pos - 1}")

    def bignum(self) -> int:
        sign = self.take(1)
        if sign not in (b"+", b"-"):
            raise MarshalError("bad_bignum", f"sign {sign!r}")
        shorts = self.length(each=2)
        if shorts * 2 > MAX_BIGNUM_BYTES:
            raise MarshalError("bignum_too_large", f"{shorts * 2} bytes")
        magnitude = int.from_bytes(self.take(shorts * 2), "little")
        value = magnitude if sign == b"+" else -magnitude
        self.register(value)
        return value

    def float(self) -> float:
        raw = self.take(self.length())
        text = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        special = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
        try:
            value = special[text] if text in special else float(text)
        except ValueError as exc:
            raise MarshalError("bad_float", text[:40]) from exc
        self.register(value)
        return value

    def with_ivars(self) -> str | Symbol:
        kind = self.take(1)
        if kind == b":":
            name = self.symbol_body()
            self.ivars()
            return name
        if kind != b'"':
            raise MarshalError("refused_ivar", f"instance variables on type {kind!r}")
        raw = self.take(self.length())
        index = self.register(raw)
        codec = self.ivars()
        if codec is None:
            return raw  # type: ignore[return-value]  # no encoding given: binary after all
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise MarshalError("bad_string", f"not valid {codec}") from exc
        self.objects[index] = text
        return text

    def array(self, depth: int) -> list[RubyValue]:
        size = self.length()
        self.count(size)
        index = self.register(_PENDING)
        items = [self.value(depth=depth + 1) for _ in range(size)]
        self.objects[index] = items
        return items

    def hash(self, depth: int) -> dict[RubyValue, RubyValue]:
        size = self.length(each=2)
        self.count(size)
        index = self.register(_PENDING)
        result: dict[RubyValue, RubyValue] = {}
        for _ in range(size):
            key = self.value(depth=depth + 1)
            if isinstance(key, list | dict):
                raise MarshalError("refused_key", f"{type(key).__name__} as a hash key")
            if key in result:
                raise MarshalError("duplicate_key", repr(key)[:60])
            result[key] = self.value(depth=depth + 1)
        self.objects[index] = result
        return result


def loads(data: bytes, *, max_size: int = 1 << 20) -> RubyValue:
    """Decode one Marshal 4.8 payload of plain data; ``MarshalError`` on anything else."""
    if len(data) > max_size:
        raise MarshalError("too_large", f"{len(data)} bytes > {max_size}")
    if data[:2] != b"\x04\x08":
        raise MarshalError("bad_version", repr(data[:2]))
    reader = _Reader(data)
    reader.pos = 2
    try:
        value = reader.value(depth=0)
    except RecursionError as exc:  # cannot happen within MAX_DEPTH; belt and braces
        raise MarshalError("too_deep", "recursion") from exc
    if reader.pos != len(data):
        raise MarshalError("trailing_bytes", f"{len(data) - reader.pos} bytes after the value")
    return value


# -- encoder -------------------------------------------------------------------------
def _long(value: int) -> bytes:
    if value == 0:
        return b"\x00"
    if 0 < value < 123:
        return bytes([value + 5])
    if -124 < value < 0:
        return bytes([(value - 5) & 0xFF])
    out = bytearray()
    for i in range(1, 5):
        out.append(value & 0xFF)
        value >>= 8
        if value == 0:
            return bytes([i]) + bytes(out)
        if value == -1:
            return bytes([256 - i]) + bytes(out)
    raise ValueError("length does not fit in 32 bits")


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray(b"\x04\x08")
        self.symbols: dict[str, int] = {}

    def symbol(self, name: str) -> None:
        if name in self.symbols:
            self.out += b";" + _long(self.symbols[name])
            return
        self.symbols[name] = len(self.symbols)
        raw = name.encode("utf-8")
        if raw.isascii():
            self.out += b":" + _long(len(raw)) + raw
        else:
            self.out += b"I:" + _long(len(raw)) + raw + _long(1)
            self.symbol("E")
            self.out += b"T"

    def value(self, value: object, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} levels")
        if value is None:
            self.out += b"0"
        elif value is True:
            self.out += b"T"
        elif value is False:
            self.out += b"F"
        elif isinstance(value, int):
            self.integer(value)
        elif isinstance(value, float):
            text = ("nan" if math.isnan(value) else "inf" if value == math.inf
                    else "-inf" if value == -math.inf else repr(value))
            self.out += b"f" + _long(len(text)) + text.encode("ascii")
        elif isinstance(value, Symbol):
            self.symbol(value)
        elif isinstance(value, str):
            raw = value.encode("utf-8")
            self.out += b'I"' + _long(len(raw)) + raw + _long(1)
            self.symbol("E")
            self.out += b"T"
        elif isinstance(value, bytes):
            self.out += b'"' + _long(len(value)) + value
        elif isinstance(value, Mapping):
            self.out += b"{" + _long(len(value))
            for key, item in value.items():
                self.value(key, depth + 1)
                self.value(item, depth + 1)
        elif isinstance(value, Sequence):
            self.out += b"[" + _long(len(value))
            for item in value:
                self.value(item, depth + 1)
        else:
            raise TypeError(f"cannot marshal {type(value).__name__}")

    def integer(self, value: int) -> None:
        if FIXNUM_MIN <= value <= FIXNUM_MAX:
            self.out += b"i" + _long(value)
            return
        magnitude = abs(value)
        size = (magnitude.bit_length() + 15) // 16
        if size * 2 > MAX_BIGNUM_BYTES:
            raise ValueError(f"integer too large: {size * 2} bytes")
        self.out += (b"l" + (b"+" if value >= 0 else b"-") + _long(size)
                     + magnitude.to_bytes(size * 2, "little"))


def dumps(value: object) -> bytes:
    """Marshal ``value`` (None, bool, int, float, str, bytes, Symbol, lists, dicts)."""
    writer = _Writer()
    writer.value(value)
    return bytes(writer.out)
