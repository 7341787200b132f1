"""The wire format: canonical CBOR messages with strict schemas, and signed envelopes.

Theory of operation:

Every message the mesh sends is a frozen dataclass registered with ``@message``.
On the wire it is one CBOR map ``{"t": tag, "v": version, <field>: <value>, ...}``
in canonical encoding (RFC 8949 §4.2.1 core deterministic: shortest integers and
floats, map keys sorted), so a message has exactly one byte string. ``decode``
enforces that by re-encoding what it read and comparing: a peer cannot produce
two encodings of one message, and signatures and replay caches can work on bytes.

Decoding is strict and total: a size cap per message type is checked before any
parsing, only plain CBOR types are accepted (no tags, no indefinite lengths, no
duplicate keys, bounded nesting), unknown or missing fields and wrong types or
ranges are rejected. Whatever goes wrong, the caller sees one ``WireError`` with
a message naming the field, never another exception.

A signed envelope ``{"t": "signed", "body": <encoded message>, "sig": <64 bytes>}``
carries an Ed25519 signature over a domain-separation prefix and the body bytes.
It says nothing about who signed it: the receiver names the signer (the job's
owner, the gossip origin, the result's executor) and ``open_signed`` checks the
signature against that peer ID.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, dataclass_transform

import cbor2
import nacl.exceptions
import nacl.signing

from ..errors import WireError
from .peer_id import PeerId

__all__ = [
    "Bool",
    "Bytes",
    "Float",
    "Int",
    "ListOf",
    "Nested",
    "Optional",
    "Peer",
    "Signed",
    "Str",
    "decode",
    "encode",
    "max_size",
    "message",
    "open_self_signed",
    "open_signed",
    "sign",
    "struct",
    "wire",
]

MAX_DEPTH: Final = 8
SIGNATURE_DOMAIN: Final = b"meshnode/signed/v1\x00"
_ENVELOPE_OVERHEAD: Final = 128  # CBOR map header, tag, version, sig and the body's length prefix

T = TypeVar("T")


# --- field specs -----------------------------------------------------------------------------


class Spec:
    """How one field looks on the wire. ``load`` validates a decoded value, ``dump`` prepares one."""

    def load(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        return value


def _fail(path: str, what: str) -> WireError:
    return WireError(f"{path}: {what}")


@dataclass(frozen=True, slots=True)
class Int(Spec):
    lo: int = 0
    hi: int = 2**63 - 1

    def load(self, value: Any, path: str) -> int:
        if type(value) is not int:  # bool is an int subclass; refuse it here
            raise _fail(path, f"expected an integer, got {type(value).__name__}")
        if not self.lo <= value <= self.hi:
            raise _fail(path, f"{value} is outside {self.lo}..{self.hi}")
        return value


@dataclass(frozen=True, slots=True)
class Float(Spec):
    lo: float = -math.inf
    hi: float = math.inf

    def load(self, value: Any, path: str) -> float:
        if type(value) is int:
            value = float(value)
        if type(value) is not float or not math.isfinite(value):
            raise _fail(path, "expected a finite number")
        if not self.lo <= value <= self.hi:
            raise _fail(path, f"{value} is outside {self.lo}..{self.hi}")
        return value


@dataclass(frozen=True, slots=True)
class Bool(Spec):
    def load(self, value: Any, path: str) -> bool:
        if type(value) is not bool:
            raise _fail(path, f"expected true or false, got {type(value).__name__}")
        return value


@dataclass(frozen=True, slots=True)
class Bytes(Spec):
    min_len: int = 0
    max_len: int = 2**20

    def load(self, value: Any, path: str) -> bytes:
        if type(value) is not bytes:
            raise _fail(path, f"expected bytes, got {type(value).__name__}")
        if not self.min_len <= len(value) <= self.max_len:
            want = self.min_len if self.min_len == self.max_len else f"{self.min_len}..{self.max_len}"
            raise _fail(path, f"expected {want} bytes, got {len(value)}")
        return value


@dataclass(frozen=True, slots=True)
class Str(Spec):
    max_len: int = 256
    pattern: str | None = None
    choices: tuple[str, ...] = ()

    def load(self, value: Any, path: str) -> str:
        if type(value) is not str:
            raise _fail(path, f"expected text, got {type(value).__name__}")
        if len(value) > self.max_len:
            raise _fail(path, f"text longer than {self.max_len} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _fail(path, f"{value[:40]!r} does not match {self.pattern}")
        if self.choices and value not in self.choices:
            raise _fail(path, f"{value[:40]!r} is not one of {', '.join(self.choices)}")
        return value


@dataclass(frozen=True, slots=True)
class Peer(Spec):
    def load(self, value: Any, path: str) -> PeerId:
        if type(value) is not bytes:
            raise _fail(path, "expected a peer ID")
        try:
            return PeerId(value)
        except WireError as exc:
            raise _fail(path, str(exc)) from None

    def dump(self, value: PeerId) -> bytes:
        return value.to_bytes()


@dataclass(frozen=True, slots=True)
class Optional(Spec):
    inner: Spec

    def load(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.load(value, path)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)


@dataclass(frozen=True, slots=True)
class ListOf(Spec):
    item: Spec
    max_items: int

    def load(self, value: Any, path: str) -> tuple[Any, ...]:
        if type(value) is not list:
            raise _fail(path, f"expected a list, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise _fail(path, f"more than {self.max_items} items")
        return tuple(self.item.load(v, f"{path}[{i}]") for i, v in enumerate(value))

    def dump(self, value: Any) -> list[Any]:
        return [self.item.dump(v) for v in value]


@dataclass(frozen=True, slots=True)
class Nested(Spec):
    cls: type

    def load(self, value: Any, path: str) -> Any:
        return _load_fields(self.cls, value, path, skip=())

    def dump(self, value: Any) -> dict[str, Any]:
        return _dump_fields(value)


def wire(spec: Spec) -> Any:  # a field specifier for @struct and @message (PEP 681)
    """Declare a dataclass field's wire spec: ``job_id: bytes = wire(Bytes(16, 16))``."""
    return dataclasses.field(metadata={"wire": spec})


# --- registration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MessageInfo:
    cls: type
    tag: str
    version: int
    max_size: int


_REGISTRY: dict[str, _MessageInfo] = {}
_MAX_MESSAGE: list[int] = [0]  # the largest cap of any registered type (what an untyped decode allows)


def _fields(cls: type) -> tuple[tuple[str, Spec], ...]:
    cached: tuple[tuple[str, Spec], ...] | None = cls.__dict__.get("_wire_fields")
    if cached is None:
        cached = tuple((f.name, f.metadata["wire"]) for f in dataclasses.fields(cls))
        type.__setattr__(cls, "_wire_fields", cached)
    return cached


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def struct(cls: type[T]) -> type[T]:
    """Make a frozen dataclass usable as a nested part of messages (no tag, no version)."""
    dc = dataclass(frozen=True, slots=True)(cls)
    _fields(dc)
    return dc


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def message(tag: str, *, version: int, max_size: int) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a top-level wire message.

    Args:
        tag: the ``"t"`` value on the wire; unique per message type.
        version: the ``"v"`` value; a decoder accepts exactly this version.
        max_size: the largest encoding accepted, checked before parsing.
    """

    def register(cls: type[T]) -> type[T]:
        dc = struct(cls)
        if tag in _REGISTRY:
            raise ValueError(f"message tag {tag!r} registered twice")
        info = _MessageInfo(dc, tag, version, max_size)
        _REGISTRY[tag] = info
        type.__setattr__(dc, "_wire_info", info)
        _MAX_MESSAGE[0] = max(_MAX_MESSAGE[0], max_size + _ENVELOPE_OVERHEAD)
        return dc

    return register


def _info(cls: type) -> _MessageInfo:
    info: _MessageInfo | None = cls.__dict__.get("_wire_info")
    if info is None:
        raise TypeError(f"{cls.__name__} is not a registered wire message")
    return info


# --- encode / decode ------------------------------------------------------------------------


def max_size(cls: type) -> int:
    """The largest encoding of message type ``cls`` a decoder accepts."""
    return _info(cls).max_size


def _dump_fields(obj: Any) -> dict[str, Any]:
    return {name: spec.dump(getattr(obj, name)) for name, spec in _fields(type(obj))}


def _load_fields(cls: type[T], raw: Any, path: str, skip: tuple[str, ...]) -> T:
    if type(raw) is not dict:
        raise _fail(path, f"expected a map, got {type(raw).__name__}")
    fields = _fields(cls)
    known = {name for name, _ in fields}
    for key in raw:
        if key not in known and key not in skip:
            raise _fail(path, f"unknown field {str(key)[:40]!r}")
    values = {}
    for name, spec in fields:
        if name not in raw:
            raise _fail(path, f"missing field {name!r}")
        values[name] = spec.load(raw[name], f"{path}.{name}")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise _fail(path, problem)
    return obj


def _dumps(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def encode(msg: Any) -> bytes:
    """Encode a registered message canonically.

    Raises:
        WireError: a field is out of its declared range, or the encoding is over the cap.
    """
    info = _info(type(msg))
    raw = {"t": info.tag, "v": info.version, **_dump_fields(msg)}
    _load_fields(info.cls, raw, info.tag, skip=("t", "v"))  # what we send, a peer must accept
    data = _dumps(raw)
    if len(data) > info.max_size:
        raise WireError(f"{info.tag}: {len(data)} bytes is over the {info.max_size}-byte limit")
    return data


def _no_tags(decoder: Any, tag: Any) -> Any:
    raise WireError(f"CBOR tag {tag.tag} is not allowed")


_PLAIN = (str, bytes, int, float, bool, type(None))


def _check_plain(obj: Any, depth: int = 0) -> None:
    t = type(obj)
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise WireError("map keys must be text")
            _check_plain(v, depth + 1)
    elif t is list:
        for v in obj:
            _check_plain(v, depth + 1)
    elif t not in _PLAIN:
        raise WireError(f"CBOR item of type {t.__name__} is not allowed")


def decode(data: bytes, expected: type[T] | None = None) -> T:
    """Decode one message, strictly.

    Args:
        data: the bytes as received.
        expected: the message class the caller wants; anything else is refused.

    Returns:
        The message, with every field validated.

    Raises:
        WireError: anything wrong with ``data``; the message says what.
    """
    if type(data) is not bytes:
        data = bytes(data)
    cap = _info(expected).max_size if expected is not None else _MAX_MESSAGE[0]
    if len(data) > cap:
        raise WireError(f"message of {len(data)} bytes is over the {cap}-byte limit")
    try:
        raw = cbor2.loads(
            data,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            tag_hook=_no_tags,
        )
    except WireError:
        raise
    except Exception as exc:  # cbor2 raises several types (and RecursionError, MemoryError) on bad input
        raise WireError(f"malformed CBOR: {str(exc)[:200]}") from None
    _check_plain(raw)
    if type(raw) is not dict:
        raise WireError("a message must be a CBOR map")
    tag = raw.get("t")
    info = _REGISTRY.get(tag) if type(tag) is str else None
    if info is None:
        raise WireError(f"unknown message type {str(tag)[:40]!r}")
    if expected is not None and info.cls is not expected:
        raise WireError(f"expected a {_info(expected).tag} message, got {tag}")
    if len(data) > info.max_size:
        raise WireError(f"{tag}: {len(data)} bytes is over the {info.max_size}-byte limit")
    if raw.get("v") != info.version or type(raw.get("v")) is not int:
        raise WireError(f"{tag}: unsupported version {str(raw.get('v'))[:20]} (this node speaks {info.version})")
    msg: T = _load_fields(info.cls, raw, info.tag, skip=("t", "v"))
    if _dumps(raw) != data:
        raise WireError(f"{tag}: not in canonical CBOR encoding (or trailing bytes)")
    return msg


# --- signed envelopes -----------------------------------------------------------------------


@message("signed", version=1, max_size=64 << 20)
class Signed:
    """An Ed25519 signature by an unnamed signer over ``body``, an encoded message."""

    body: bytes = wire(Bytes(1, 64 << 20))
    sig: bytes = wire(Bytes(64, 64))


@functools.lru_cache(maxsize=4096)
def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(public_key)


def sign(msg: Any, key: nacl.signing.SigningKey) -> bytes:
    """Encode ``msg`` and wrap it in an envelope signed with ``key``."""
    body = encode(msg)
    sig = key.sign(SIGNATURE_DOMAIN + body).signature
    return encode(Signed(body=body, sig=sig))


def _check_signature(env: Signed, signer: PeerId) -> None:
    try:
        _verify_key(signer.public_key).verify(SIGNATURE_DOMAIN + env.body, env.sig)
    except nacl.exceptions.BadSignatureError:
        raise WireError(f"bad signature: not signed by {signer}") from None


def _open_envelope(data: bytes, expected: type) -> Signed:
    cap = _info(expected).max_size + _ENVELOPE_OVERHEAD
    if len(data) > cap:
        raise WireError(f"signed {_info(expected).tag}: {len(data)} bytes is over the {cap}-byte limit")
    return decode(data, Signed)


def open_signed(data: bytes, signer: PeerId, expected: type[T]) -> T:
    """Check an envelope's signature against ``signer`` and decode the message inside.

    Raises:
        WireError: malformed envelope or body, wrong message type, or a signature
            that is not ``signer``'s.
    """
    env = _open_envelope(data, expected)
    _check_signature(env, signer)
    return decode(env.body, expected)


def open_self_signed(data: bytes, expected: type[T], signer_field: str) -> T:
    """Open an envelope whose body names its own signer (a manifest's ``owner``, a result's ``executor``).

    The caller still decides whether it trusts that signer; this only proves the
    body was signed by the peer it names.

    Raises:
        WireError: as ``open_signed``.
    """
    env = _open_envelope(data, expected)
    msg = decode(env.body, expected)
    signer = getattr(msg, signer_field)
    if not isinstance(signer, PeerId):
        raise TypeError(f"{signer_field} is not a peer ID field")
    _check_signature(env, signer)
    return msg
