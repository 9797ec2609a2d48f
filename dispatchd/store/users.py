"""Accounts and bearer tokens."""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("duty_officer", "leader", "squad_member", "grid_worker", "department_handler", "admin", "ops")
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str
    org: str
    department: str | None
    display_name: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "org": self.org,
            "department": self.department,
            "display_name": self.display_name,
        }


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password, made with the same parameters as real ones: a login with an
    unknown name verifies against it, so that it takes as long as one with a known name."""
    return _hasher.hash(secrets.token_urlsafe(24))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _user(row: asyncpg.Record) -> User:
    return User(
        row["id"], row["username"], row["role"], row["org_code"], row["department_code"], row["display_name"]
    )


async def create_user(
    conn: asyncpg.Connection,
    username: str,
    password_hash: str,
    role: str,
    org: str,
    department: str | None = None,
    display_name: str = "",
    created_at: datetime | None = None,
) -> User:
    """Create an account (``created_at``: when, by the caller's clock; default the database's)."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise UserError("username must be 1–64 characters without spaces")
    if not await conn.fetchval("SELECT 1 FROM org_units WHERE code = $1", org):
        raise UserError(f"unknown organisation unit {org!r}")
    if department and not await conn.fetchval("SELECT 1 FROM departments WHERE code = $1", department):
        raise UserError(f"unknown department {department!r}")
    try:
        row = await conn.fetchrow(
            "INSERT INTO users (username, password_hash, role, org_code, department_code, display_name, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now())) RETURNING *",
            username,
            password_hash,
            role,
            org,
            department,
            display_name or username,
            created_at,
        )
    except asyncpg.UniqueViolationError:
        raise UserError(f"user {username!r} already exists") from None
    return _user(row)


async def find_for_login(conn: asyncpg.Connection, username: str) -> tuple[User, str] | None:
    row = await conn.fetchrow("SELECT * FROM users WHERE username = $1 AND NOT disabled", username)
    return (_user(row), row["password_hash"]) if row else None


async def get_user(conn: asyncpg.Connection, user_id: int) -> User | None:
    row = await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    return _user(row) if row else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue_token(
    conn: asyncpg.Connection, user_id: int, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires = now + ttl
    await conn.execute(
        "INSERT INTO auth_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        _digest(token),
        user_id,
        now,
        expires,
    )
    await conn.execute("DELETE FROM auth_tokens WHERE expires_at < $1", now - timedelta(days=1))
    return token, expires


async def user_for_token(conn: asyncpg.Connection, token: str, now: datetime) -> User | None:
    row = await conn.fetchrow(
        "SELECT u.* FROM auth_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = $1 AND t.expires_at > $2 AND NOT u.disabled",
        _digest(token),
        now,
    )
    return _user(row) if row else None


async def revoke_token(conn: asyncpg.Connection, token: str) -> None:
    await conn.execute("DELETE FROM auth_tokens WHERE token_hash = $1", _digest(token))
