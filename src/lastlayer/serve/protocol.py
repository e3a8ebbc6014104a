"""The HTTP side of the web API: errors answered with the status of their kind, and every input validated at the edge.

This is the one validation layer: a handler never checks a value itself, it declares what it takes and
gets it checked here, so every bad input gets a 4xx with a sentence (never a 500) and the connection
stays open:

* a JSON body (:func:`read_json`): at most :data:`MAX_JSON` bytes, UTF-8, an object, nested at most
  :data:`MAX_DEPTH` levels, no ``NaN`` / ``Infinity``, no number beyond a float's range or with more
  than :data:`MAX_DIGITS` digits, no lone surrogate (``"\\ud800"``) in any string;
* its fields (:class:`Body` of :class:`Whole`, :class:`Number`, :class:`Text`): the type, a finite value
  and the range;
* an id in a path (the ``{name:id}`` convertor, :class:`IdConvertor`): ASCII digits up to 2^63 - 1,
  else 404 (no such thing can exist);
* a count in a query string (:func:`query_count`): ASCII digits only (``"²"`` and ``"٣"`` are digits to
  Python, not here), at most :data:`MAX_DIGITS` of them, in range.

Nothing here imports Starlette at module level, so the status table is cheap to read and test.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lastlayer.errors import BusyError, ConflictError, LastLayerError, NotFoundError, StorageError

if TYPE_CHECKING:
    from starlette.requests import Request

# The HTTP status of each kind of library error (the one table; a new kind that needs a status is one row
# here): the twin of the command line's exit codes, where every kind exits 1 with its one-line message.
# Other errors answer their own ``status``, else 400.
STATUS_BY_KIND: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),  # a class or example that does not exist (any more)
    (ConflictError, 409),  # a name taken, a class that takes no examples, nothing to export yet
    (BusyError, 503),  # another process held the write lock past the busy timeout: retry
    (StorageError, 507),  # disk full, state read-only, database deleted: nothing was stored
)
MAX_JSON = 64 * 1024  # bytes of a JSON body
MAX_DEPTH = 8  # nesting of a JSON body (the API's own bodies are one level deep)
MAX_DIGITS = 18  # of a whole number in a body or a query: below 2^63, and far below Python's 4,300-digit limit
MAX_ID = 2**63 - 1  # the largest id SQLite stores


def status_of(error: Exception) -> int:
    """The HTTP status answering ``error`` (see :data:`STATUS_BY_KIND`)."""
    for kind, status in STATUS_BY_KIND:
        if isinstance(error, kind):
            return status
    return int(getattr(error, "status", 400))


class ApiError(LastLayerError):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, subject="web")
        self.status = status


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole request body, refused with 413 beyond ``limit`` bytes (declared or counted while it arrives)."""
    declared = request.headers.get("content-length")
    too_big = f"more than the {limit / 2**20:.3g} MiB allowed; send fewer or smaller photos"
    if declared is not None and declared.isascii() and declared.isdigit() and len(declared) <= MAX_DIGITS and int(declared) > limit:
        raise ApiError(f"the request is {int(declared) / 2**20:.1f} MiB, {too_big}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(f"the request is {too_big}", 413)
        chunks.append(chunk)
    return b"".join(chunks)


# ----------------------------------------------------------------------------- JSON bodies
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _refuse_constant(name: str) -> Any:
    raise ApiError(f"{name} is not a number JSON allows; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ApiError(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is out of range; send a finite number")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise ApiError(f"a whole number with {digits} digits is out of range; send at most {MAX_DIGITS} digits")
    return int(text)


def _depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (strings skipped)."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_text(value: Any) -> None:
    """Refuse a lone surrogate anywhere in a parsed JSON value (it is not text: it cannot be stored or shown)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            code = ord(value[error.start])
            raise ApiError(f"the request holds a lone surrogate (\\u{code:04x}), which is not text; send UTF-8 text") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body under the module's rules (``{}`` for an empty body), else :class:`ApiError`."""
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(f"the request body is not UTF-8 (byte 0x{body[error.start]:02x} at offset {error.start})") from None
    if _depth(text) > MAX_DEPTH:
        raise ApiError(f"the request body nests deeper than {MAX_DEPTH} levels; send a flat JSON object")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except (ValueError, RecursionError):
        raise ApiError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError("the request body must be a JSON object")
    _check_text(data)
    return data


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body), checked as :func:`parse_json` says; 413 beyond :data:`MAX_JSON`."""
    return parse_json(await read_limited(request, MAX_JSON))


# ----------------------------------------------------------------------------- fields
def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, which JSON keeps apart)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Whole:
    """A whole number from ``low`` to ``high`` (``default`` when missing; ``None``: optional)."""

    low: int
    high: int
    default: int | None = None

    def value(self, key: str, given: Any) -> int:
        if not _is_number(given) or int(given) != given or not self.low <= given <= self.high:
            raise ApiError(f"{key} must be a whole number from {self.low} to {self.high}")
        return int(given)


@dataclass(frozen=True)
class Number:
    """A finite number above ``low`` (or from it, with ``closed``) up to ``high``."""

    low: float
    high: float
    default: float | None = None
    closed: bool = False

    def value(self, key: str, given: Any) -> float:
        above = _is_number(given) and (self.low <= given if self.closed else self.low < given)
        if not (above and given <= self.high):
            limit = "at least" if self.closed else "above"
            raise ApiError(f"{key} must be a number {limit} {self.low:g} and at most {self.high:g}")
        return float(given)


@dataclass(frozen=True)
class Text:
    """A string (required); ``what`` names it in the message."""

    what: str
    default: None = None

    def value(self, key: str, given: Any) -> str:
        if not isinstance(given, str):
            raise ApiError(f"send {self.what} as {{\"{key}\": \"...\"}}")
        return given


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false`` (required)."""

    default: None = None

    def value(self, key: str, given: Any) -> bool:
        if not isinstance(given, bool):
            raise ApiError(f'send {{"{key}": true}} or {{"{key}": false}}')
        return given


class Body:
    """The fields a JSON body may hold (others are ignored), each a :class:`Whole`, :class:`Number`, :class:`Text` or
    :class:`Flag`."""

    def __init__(self, **fields: Whole | Number | Text | Flag) -> None:
        self.fields = fields

    def parse(self, data: dict[str, Any]) -> dict[str, Any]:
        """``{key: value}`` of every field: checked, or its default when missing (a :class:`Text` or :class:`Flag` is
        required)."""
        values = {}
        for key, field in self.fields.items():
            given = data.get(key)
            if given is None and not isinstance(field, (Text, Flag)):
                values[key] = field.default
            else:
                values[key] = field.value(key, given)
        return values

    async def read(self, request: Request) -> dict[str, Any]:
        """The request's JSON body read (:func:`read_json`) and parsed."""
        return self.parse(await read_json(request))


# ----------------------------------------------------------------------------- paths and queries
def ascii_number(text: str, what: str, low: int, high: int) -> int:
    """``text`` as a whole number written in ASCII digits from ``low`` to ``high``, else :class:`ApiError` naming ``what``."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_DIGITS or not low <= int(text) <= high:
        raise ApiError(f"{what} must be a whole number from {low} to {high}, written in digits 0-9")
    return int(text)


def query_count(request: Request, name: str, high: int = 10**6) -> int | None:
    """The query parameter ``name`` as a count from 1 to ``high`` (``None`` when absent), else 400."""
    value = request.query_params.get(name)
    return None if value is None else ascii_number(value, name, 1, high)


class IdConvertor:
    """The ``{name:id}`` path convertor: ASCII digits of an id SQLite can hold; a larger one cannot exist (404)."""

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        if len(value) > 19 or int(value) > MAX_ID:
            from starlette.exceptions import HTTPException

            raise HTTPException(404, f"there is nothing with id {value[:24]}{'...' if len(value) > 24 else ''}: "
                                     f"ids are whole numbers up to {MAX_ID}")
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


def register_id_convertor() -> None:
    """Make ``{name:id}`` available in route paths (Starlette's registry is process-wide; registering twice is harmless)."""
    from starlette.convertors import register_url_convertor

    register_url_convertor("id", IdConvertor())  # type: ignore[arg-type]
