"""The canonical digest encoding: versioned, type-tagged and length-prefixed, so no two
different inputs encode the same; and the sha256 helpers built on it."""

from __future__ import annotations

import hashlib
import struct

from imaged.digest.files import DIR, FILE, SYMLINK

ENCODING_VERSION = "imaged-digest-v1"
EXEC_SUFFIX = (
    "+x"  # a file's content digest with its executable bit, as trees and staging record it
)
_U64 = struct.Struct(">Q").pack


def encode(value: object) -> bytes:
    """Canonical, type-tagged, length-prefixed bytes for str/bytes/int/bool/None/list/tuple."""
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)


def _encode_into(out: bytearray, value: object) -> None:
    if value is None:
        out += b"N"
    elif isinstance(value, bool):
        out += b"T" if value else b"F"
    elif isinstance(value, int):
        raw = str(value).encode()
        out += b"i" + struct.pack(">Q", len(raw)) + raw
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        out += b"s" + struct.pack(">Q", len(raw)) + raw
    elif isinstance(value, bytes):
        out += b"b" + struct.pack(">Q", len(value)) + value
    elif isinstance(value, list | tuple):
        out += b"l" + struct.pack(">Q", len(value))
        for item in value:
            _encode_into(out, item)
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def sha256_hex(value: object) -> str:
    return hashlib.sha256(encode(value)).hexdigest()


def encode_dir(rows: list[tuple[str, str, bool, str]]) -> bytes:
    """``encode(("dir", rows))`` without the generic recursion (a folder's Merkle node)."""
    out = bytearray(_DIR_HEAD)
    out += _U64(len(rows))
    for name, kind, executable, value in rows:
        raw_name = name.encode("utf-8", "surrogatepass")
        raw_value = value.encode("utf-8", "surrogatepass")
        out += _ROW_HEAD
        out += _U64(len(raw_name))
        out += raw_name
        out += _ROW_KIND[kind, executable]
        out += _U64(len(raw_value))
        out += raw_value
    return bytes(out)


_DIR_HEAD = encode(("dir", []))[:-8]
_ROW_HEAD = b"l" + _U64(4) + b"s"
_ROW_KIND = {
    (kind, executable): encode([kind, executable]).removeprefix(b"l" + _U64(2)) + b"s"
    for kind in (FILE, SYMLINK, DIR)
    for executable in (False, True)
}
