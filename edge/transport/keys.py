"""ZeroMQ CURVE keys for the edge–station link: create key pairs, load them, apply them to sockets.

A key pair is two files written by ``zmq.auth.create_certificates``: ``NAME.key`` (public key only: give it to the
other side) and ``NAME.key_secret`` (public + secret: keep it on this box, mode 0600). The station needs its own
secret file and a folder of allowed edge public files; an edge needs its own secret file and the station's public
file. Anything that cannot be read is a ``KeyFileError`` naming the file, raised at start-up, never later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class KeyFileError(ValueError):
    """A CURVE key file that is missing, unreadable or not a certificate; the text names the file."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A Z85-encoded CURVE key pair (40 bytes each)."""

    public: bytes
    secret: bytes


def create_keypair(out_dir: Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into out_dir; return (public file, secret file).

    Refuses to overwrite an existing pair unless asked: replacing a station's key silently locks every edge out.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a plain file name")
    out_dir = Path(out_dir)
    public, secret = out_dir / f"{name}.key", out_dir / f"{name}.key_secret"
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not overwrite:
        raise KeyFileError(f"{existing[0]} exists; use --overwrite to replace it (peers holding the old key "
                           "will be refused)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        pub, sec = zmq.auth.create_certificates(str(out_dir), name)
        os.chmod(sec, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot write keys into {out_dir}: {exc.strerror or exc}") from None
    return Path(pub), Path(sec)


def _load(path: Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"CURVE key file {path} does not exist")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"CURVE key file {path} is not a ZeroMQ certificate: {exc}") from None
    if not public or len(public) != 40:
        raise KeyFileError(f"CURVE key file {path} has no valid public-key line")
    return public, secret


def load_secret(path: Path) -> KeyPair:
    """This box's own key pair from its NAME.key_secret file."""
    public, secret = _load(path)
    if not secret or len(secret) != 40:
        raise KeyFileError(f"CURVE key file {path} holds no secret key (did you pass the public .key file?)")
    return KeyPair(public, secret)


def load_public(path: Path) -> bytes:
    """The other side's public key from its NAME.key file."""
    return _load(path)[0]


def count_public_keys(directory: Path) -> int:
    """How many readable public certificates an allow-list folder holds; raises KeyFileError if it is unusable."""
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyFileError(f"allowed_keys_dir {directory} is not a folder")
    return sum(1 for p in directory.glob("*.key") if load_public(p))


def make_curve_server(sock: zmq.Socket[bytes], own: KeyPair) -> None:
    """Make `sock` a CURVE server (before bind): it then only talks to clients that the ZAP handler allows."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_server = True


def make_curve_client(sock: zmq.Socket[bytes], own: KeyPair, server_public: bytes) -> None:
    """Make `sock` a CURVE client of the server with `server_public` (before connect)."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_serverkey = server_public
