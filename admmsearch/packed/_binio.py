"""Little-endian binary fields for the packed file's header, read with bounds checks.

Every read names what it was reading, so a short or damaged header fails with a message such
as ``header ends inside tensor 3's shape`` rather than an IndexError or a huge allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["ByteReader", "ByteWriter", "Malformed"]


class Malformed(ValueError):
    """The bytes do not hold what the format says; the message says what and where."""


class ByteWriter:
    """Appends fixed-width little-endian fields to a growing buffer."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def put(self, fmt: str, *values: object) -> None:
        self.buffer += struct.pack("<" + fmt, *values)

    def text(self, value: str) -> None:
        """A string: its UTF-8 byte length as uint16, then the bytes."""
        data = value.encode()
        if len(data) > 0xFFFF:
            raise ValueError(f"a string of {len(data)} bytes exceeds 65535: {value[:40]!r}...")
        self.put("H", len(data))
        self.buffer += data

    def floats(self, values: Sequence[float]) -> None:
        self.put(f"{len(values)}f", *values)

    def varint(self, value: int) -> None:
        """An unsigned LEB128 integer below 2**32: 7 bits a byte, low first, bit 7 set on every
        byte but the last (300 is ``ac 02``)."""
        if not 0 <= value < 1 << 32:
            raise ValueError(f"{value} does not fit an unsigned 32-bit varint")
        while value >= 0x80:
            self.buffer.append(value & 0x7F | 0x80)
            value >>= 7
        self.buffer.append(value)


class ByteReader:
    """Reads fields from ``data[start:end]``; reading past ``end`` raises :class:`Malformed`."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, start
        self.end = len(data) if end is None else end

    def get(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > self.end:
            raise Malformed(f"header ends inside {what}")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def one(self, fmt: str, what: str) -> int | float:
        return self.get(fmt, what)[0]

    def text(self, what: str) -> str:
        size = int(self.one("H", f"the length of {what}"))
        if self.pos + size > self.end:
            raise Malformed(f"header ends inside {what}")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise Malformed(f"{what} is not UTF-8 ({exc.reason})") from None

    def varint(self, what: str) -> int:
        """An unsigned LEB128 integer of at most 5 bytes and below 2**32 (see ByteWriter)."""
        value = 0
        for shift in range(0, 35, 7):
            byte = int(self.one("B", what))
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value >= 1 << 32:
                    break
                return value
        raise Malformed(f"{what} is not a varint below 2**32")

    def floats(self, count: int, what: str) -> tuple[float, ...]:
        if count < 0 or self.pos + 4 * count > self.end:
            raise Malformed(f"header ends inside {what}")
        return self.get(f"{count}f", what)
