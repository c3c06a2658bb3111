"""What a request may carry: the types every route declares its inputs with, checked at the boundary.

Python integers have no size limit, but SQLite, numpy and pyarrow hold 64 bits, so an unbounded
integer from a request ends as an OverflowError deep inside a route. Text reaches file names and
paths, where a NUL byte or a name over 255 bytes fails the same way, and a ``.npy`` header may claim
any shape. Routes take ``Int64`` (or ``Count``) for every integer, ``Index`` for point indices in a body, ``Text`` for paths and ``Name``
for anything that becomes a file name, and read uploaded arrays with :func:`read_npy`; a bad value is
refused with a short 4xx that names it. A test walks the OpenAPI document so no integer input is
left unbounded.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import unicodedata
from typing import Annotated, Any

import numpy as np
from annotated_types import Interval
from pydantic import AfterValidator, Strict, ValidatorFunctionWrapHandler, WithJsonSchema, WrapValidator

from corral.api.errors import ApiError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: longest file or folder name most file systems allow, in bytes (UTF-8)
MAX_NAME_BYTES = 255

#: any integer input: what numpy, pyarrow and SQLite can hold
Int64 = Annotated[int, Interval(ge=INT64_MIN, le=INT64_MAX)]
#: versions, counts, limits and positions: 0 and up, within 64 bits
Count = Annotated[int, Interval(ge=0, le=INT64_MAX)]
#: a point index in a request body: a JSON integer only. Lax parsing reads ``"1"``, ``true`` and
#: ``1.0`` as the point 1, so a client's type slip (or a string from a form) would label real points.
Index = Annotated[int, Strict(), Interval(ge=INT64_MIN, le=INT64_MAX)]


#: how a packed selection starts (see :data:`Points`)
BITMAP_PREFIX = "bitmap:"


def unpack_bitmap(value: str) -> np.ndarray:
    """The point indices of a packed selection, ``"bitmap:"`` and the base64 of one bit per point
    of the map (point ``i`` is bit ``i % 8``, least significant first, of byte ``i // 8``), as int64;
    ValueError (a 422 naming the field) when it is not that."""
    if not value.startswith(BITMAP_PREFIX):
        raise ValueError(f"a packed selection starts with {BITMAP_PREFIX!r}; else send a list of point indices")
    try:
        raw = base64.b64decode(value[len(BITMAP_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"the bitmap is not base64 ({e})") from None
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    return np.flatnonzero(bits).astype(np.int64)


def _points(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A packed selection is unpacked here; anything else is validated as the list of indices, so
    its errors name the element (``indices.0``) as before."""
    if isinstance(value, str):
        return unpack_bitmap(value)
    return handler(value)


#: A selection of points in a request body: a JSON list of indices, or, for a large selection, the
#: packed ``"bitmap:<base64>"`` (one bit per point of the map, see :func:`unpack_bitmap`). The
#: server parses a request's JSON on its event loop, and 900,000 indices as JSON (4 MB) took a
#: quarter of a second there while every other request waited; the same selection as a bitmap of
#: a million-point map is 167 KB and is unpacked in a few milliseconds, so label actions fit the
#: small body limit. The route receives a list, or for the packed form a numpy array.
Points = Annotated[
    list[Index],
    WrapValidator(_points),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}},
                {"type": "string", "pattern": r"^bitmap:[A-Za-z0-9+/]*={0,2}$"},
            ],
            "description": "point indices, or for a large selection 'bitmap:' and the base64 of one bit per point of the map (point i is bit i % 8, least significant first, of byte i // 8)",
        }
    ),
]


def no_nul(value: str) -> str:
    """Text that may reach the file system (a path): no NUL byte, which no path can hold."""
    if "\x00" in value:
        raise ValueError("holds a NUL byte, which no file path can contain")
    return value


def check_name(value: Any, what: str = "name") -> str:
    """A name that may become a file or folder name: text of 1 to 255 UTF-8 bytes with no control
    characters; :class:`ApiError` (400) saying why not."""
    if not isinstance(value, str) or not value:
        raise ApiError(f"{what}: expected a non-empty name, got {value!r:.60}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise ApiError(f"{what}: the name is {size:,} bytes long; names are at most {MAX_NAME_BYTES} bytes (UTF-8)")
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cs")), None)
    if bad is not None:
        raise ApiError(f"{what}: the name holds the control character U+{ord(bad):04X}; use printable text")
    return value


def _name(value: str) -> str:
    try:
        return check_name(value)
    except ApiError as e:  # pydantic reports ValueErrors as a 422 naming the field
        raise ValueError(str(e).removeprefix("name: ")) from None


#: a path given in a request (its folder checks come after)
Text = Annotated[str, AfterValidator(no_nul)]
#: a name that becomes a file or folder name (a map, an embedding set)
Name = Annotated[str, AfterValidator(_name)]


def read_npy(body: bytes, *, what: str = "body") -> np.ndarray:
    """The array of a ``.npy`` file sent in a request, read without trusting its header: the shape
    and dtype must describe exactly the bytes that follow, so a header claiming petabytes is refused
    (422) before anything is allocated. Only plain numeric arrays are accepted (no pickles)."""
    fp = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ApiError(f"{what}: .npy format version {version[0]}.{version[1]} is not supported; save with numpy.save", status=422)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise ApiError(f"{what} is not a .npy array ({str(e)[:120]})", status=422) from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ApiError(f"{what}: .npy arrays of dtype {dtype} are not accepted; send numbers", status=422)
    if any(d < 0 for d in shape):
        raise ApiError(f"{what}: the .npy header has a negative dimension in shape {shape}", status=422)
    count = math.prod(shape)
    need, have = count * dtype.itemsize, len(body) - fp.tell()
    if need != have:
        raise ApiError(f"{what}: the .npy header describes {need:,} bytes of data (shape {shape}, {dtype}), but {have:,} follow", status=422)
    arr = np.frombuffer(body, dtype=dtype, count=count, offset=fp.tell())
    return arr.reshape(shape, order="F" if fortran else "C")
