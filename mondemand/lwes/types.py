"""LWES attribute type ids and their names.

The ids are the wire tokens shared by the Java, C and Erlang libraries:
scalars 0x01..0x0D, arrays 0x80 + base, nullable arrays 0x8C + base.
"""

from __future__ import annotations

import enum


class LwesType(enum.IntEnum):
    """One attribute type, valued by its wire token."""

    UINT16 = 0x01
    INT16 = 0x02
    UINT32 = 0x03
    INT32 = 0x04
    STRING = 0x05
    IP_ADDR = 0x06
    INT64 = 0x07
    UINT64 = 0x08
    BOOLEAN = 0x09
    BYTE = 0x0A
    FLOAT = 0x0B
    DOUBLE = 0x0C
    LONG_STRING = 0x0D  # Erlang extension: u32 length; off unless asked for

    UINT16_ARRAY = 0x81
    INT16_ARRAY = 0x82
    UINT32_ARRAY = 0x83
    INT32_ARRAY = 0x84
    STRING_ARRAY = 0x85
    IP_ADDR_ARRAY = 0x86
    INT64_ARRAY = 0x87
    UINT64_ARRAY = 0x88
    BOOLEAN_ARRAY = 0x89
    BYTE_ARRAY = 0x8A
    FLOAT_ARRAY = 0x8B
    DOUBLE_ARRAY = 0x8C

    NULLABLE_UINT16_ARRAY = 0x8D
    NULLABLE_INT16_ARRAY = 0x8E
    NULLABLE_UINT32_ARRAY = 0x8F
    NULLABLE_INT32_ARRAY = 0x90
    NULLABLE_STRING_ARRAY = 0x91
    NULLABLE_IP_ADDR_ARRAY = 0x92
    NULLABLE_INT64_ARRAY = 0x93
    NULLABLE_UINT64_ARRAY = 0x94
    NULLABLE_BOOLEAN_ARRAY = 0x95
    NULLABLE_BYTE_ARRAY = 0x96
    NULLABLE_FLOAT_ARRAY = 0x97
    NULLABLE_DOUBLE_ARRAY = 0x98

    @property
    def is_array(self) -> bool:
        """True for plain and nullable arrays."""
        return self >= 0x81

    @property
    def is_nullable(self) -> bool:
        """True for nullable arrays (elements may be None)."""
        return self >= 0x8D

    @property
    def base(self) -> LwesType:
        """The scalar type of an array's elements (the type itself for scalars)."""
        if self >= 0x8D:
            return LwesType(self - 0x8C)
        if self >= 0x81:
            return LwesType(self - 0x80)
        return self

    def array_of(self, *, nullable: bool = False) -> LwesType:
        """The array type whose elements are this scalar type."""
        if self.is_array or self is LwesType.LONG_STRING:
            raise ValueError(f"no array of {self.type_name}")
        return LwesType(self + (0x8C if nullable else 0x80))

    @property
    def type_name(self) -> str:
        """The name used in ESF files and the test vectors: `int16`, `string[]`, `nullable int32[]`."""
        return _NAMES[self]

    @classmethod
    def from_name(cls, name: str) -> LwesType:
        """Inverse of `type_name`; also accepts ESF spellings such as `ip_addr` and `long_string`."""
        try:
            return _BY_NAME[" ".join(name.split())]
        except KeyError:
            raise ValueError(f"unknown LWES type name {name!r}") from None


SCALAR_NAMES: dict[LwesType, str] = {
    LwesType.UINT16: "uint16",
    LwesType.INT16: "int16",
    LwesType.UINT32: "uint32",
    LwesType.INT32: "int32",
    LwesType.STRING: "string",
    LwesType.IP_ADDR: "ip_addr",
    LwesType.INT64: "int64",
    LwesType.UINT64: "uint64",
    LwesType.BOOLEAN: "boolean",
    LwesType.BYTE: "byte",
    LwesType.FLOAT: "float",
    LwesType.DOUBLE: "double",
    LwesType.LONG_STRING: "long_string",
}

_NAMES: dict[LwesType, str] = dict(SCALAR_NAMES)
for _t in LwesType:
    if _t.is_nullable:
        _NAMES[_t] = f"nullable {SCALAR_NAMES[_t.base]}[]"
    elif _t.is_array:
        _NAMES[_t] = f"{SCALAR_NAMES[_t.base]}[]"
_BY_NAME: dict[str, LwesType] = {v: k for k, v in _NAMES.items()}

#: Integer ranges per integer type, for validation when encoding.
INT_RANGES: dict[LwesType, tuple[int, int]] = {
    LwesType.UINT16: (0, 0xFFFF),
    LwesType.INT16: (-0x8000, 0x7FFF),
    LwesType.UINT32: (0, 0xFFFFFFFF),
    LwesType.INT32: (-0x80000000, 0x7FFFFFFF),
    LwesType.INT64: (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
    LwesType.UINT64: (0, 0xFFFFFFFFFFFFFFFF),
    LwesType.BYTE: (0, 0xFF),
}

#: Wire ids that a decoder may meet; index by token, None for invalid tokens.
BY_ID: list[LwesType | None] = [None] * 256
for _t in LwesType:
    BY_ID[_t] = _t

#: Hard limits of the format and of UDP.
MAX_DATAGRAM = 65507  # 65535 - 20 (IP) - 8 (UDP)
MAX_DECODE_SIZE = 65535
MAX_NAME = 255
MAX_STRING = 65535
MAX_ARRAY = 65535
