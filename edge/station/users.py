"""Console users: scrypt password hashes, roles, adding / listing / disabling, checking a login.

Why scrypt from the standard library: it is memory-hard (an attacker's GPU gains little), needs no extra
dependency on a Jetson-class box, and each hash carries its own parameters, so they can be raised later
without breaking stored hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from edge.station.store import Store
from edge.station.tables import ROLES, UserRow

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and ~50 ms per check on a laptop core
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
MIN_PASSWORD = 8


class UserError(ValueError):
    """A user that cannot be added or changed; the text says why."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    created_wall: float
    disabled: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; constant-time compare, False for any malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# Checked against when the username does not exist, so a wrong name costs as long as a wrong password
# (no user enumeration by timing).
_DUMMY_HASH = hash_password(secrets.token_hex(16))


def _view(row: UserRow) -> User:
    return User(id=row.id, username=row.username, role=row.role, created_wall=row.created_wall,
                disabled=bool(row.disabled))


def add_user(store: Store, username: str, password: str, role: str = "reviewer") -> User:
    if not USERNAME.match(username):
        raise UserError(f"username {username!r}: use 1 to 100 of letters, digits and _ . @ -")
    if role not in ROLES:
        raise UserError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
    with store.session(write=True) as s:
        if s.scalar(select(UserRow.id).where(UserRow.username == username)) is not None:
            raise UserError(f"user {username!r} exists already")
        row = UserRow(username=username, password_hash=hash_password(password), role=role,
                      created_wall=time.time(), disabled=False)
        s.add(row)
        s.flush()
        return _view(row)


def set_disabled(store: Store, username: str, disabled: bool = True) -> User:
    with store.session(write=True) as s:
        row = s.scalar(select(UserRow).where(UserRow.username == username))
        if row is None:
            raise UserError(f"no user {username!r}")
        row.disabled = disabled
        return _view(row)


def list_users(store: Store) -> list[User]:
    with store.session() as s:
        return [_view(r) for r in s.scalars(select(UserRow).order_by(UserRow.username))]


def get_active(store: Store, user_id: int) -> User | None:
    """The user behind a session, or None when it no longer exists or was disabled (the session dies with it)."""
    with store.session() as s:
        row = s.get(UserRow, user_id)
        return None if row is None or row.disabled else _view(row)


def authenticate(store: Store, username: str, password: str) -> User | None:
    """The active user with this name and password, else None (same cost whether or not the name exists)."""
    with store.session() as s:
        row = s.scalar(select(UserRow).where(UserRow.username == username))
        stored = row.password_hash if row is not None else _DUMMY_HASH
        ok = verify_password(password, stored)
        if row is None or not ok or row.disabled:
            return None
        return _view(row)
