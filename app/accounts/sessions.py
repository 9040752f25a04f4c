"""Server-side sessions in Redis: the cookie holds only a random id, so sign-out, deactivation and lockout end a
session at once (every session id is indexed under its user), and idle / absolute limits are enforced here.

Redis keys hold a SHA-256 of the session id, so a Redis dump yields no usable cookie. Each write sets the key's
TTL to the smaller of the idle timeout and the time left of the absolute lifetime; the stored last-seen time is
checked as well, so a session is never honoured past either limit.

A request that changes nothing in the session writes nothing back unless the stored last-seen time is older than
`touch_interval` (a tablet posts a value every few seconds: one Redis round trip per request instead of two).
The idle limit then counts from activity at most that interval earlier than the last request, so a session can
end up to that much sooner than its idle timeout, never later.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Flask, Request, Response, current_app
from flask.sessions import SessionInterface, SessionMixin, TaggedJSONSerializer
from werkzeug.datastructures import CallbackDict

SESSION_PREFIX = "bl:sess:"
USER_INDEX_PREFIX = "bl:usess:"
_SID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")

#: Keys the interface keeps inside the session (created, last seen, idle and absolute limits, persistent cookie).
CREATED, LAST_SEEN, IDLE, ABSOLUTE, PERSISTENT = "_bl_c", "_bl_l", "_bl_idle", "_bl_abs", "_bl_persist"


def _key(sid: str) -> str:
    return SESSION_PREFIX + hashlib.sha256(sid.encode()).hexdigest()


def _index(user_id: int | str) -> str:
    return f"{USER_INDEX_PREFIX}{int(user_id)}"


class ServerSession(CallbackDict, SessionMixin):  # type: ignore[type-arg]
    """A session whose data lives in Redis under an opaque id."""

    def __init__(self, initial: dict[str, Any] | None = None, sid: str | None = None) -> None:
        def on_update(_self: Any) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.modified = False
        #: Set at sign-in and user switch: the old id is dropped and a new one issued (no session fixation).
        self.rotate = False
        #: True when the browser presented a session id that no longer exists (ended, timed out or unknown).
        self.ended = False


def touch_interval(idle_s: float) -> float:
    """How stale the stored last-seen time may get before an unchanged session is written back: 30 s, or a tenth
    of a short idle timeout."""
    return min(30.0, idle_s / 10)


def rotate_session(session: Any, *, idle_s: int, absolute_s: int, persistent: bool = False) -> None:
    """Start a fresh authenticated session: nothing before survives, a new id is issued, limits are set."""
    session.clear()
    session.rotate = True
    now = time.time()
    session[CREATED] = now
    session[IDLE] = int(idle_s)
    session[ABSOLUTE] = int(absolute_s)
    if persistent:
        session[PERSISTENT] = True


def end_user_sessions(user_id: int, *, app: Flask | None = None, keep_sid: str | None = None) -> int:
    """End every live session of a user at once (sign-out everywhere, deactivation, lockout); return how many."""
    conn: redis.Redis = (app or current_app).extensions["batchline.redis"]
    index = _index(user_id)
    keep = _key(keep_sid)[len(SESSION_PREFIX):] if keep_sid else None
    members = [m.decode() if isinstance(m, bytes) else m for m in conn.smembers(index)]
    doomed = [m for m in members if m != keep]
    if not doomed:
        return 0
    pipe = conn.pipeline()
    pipe.delete(*[SESSION_PREFIX + m for m in doomed])
    pipe.srem(index, *doomed)
    deleted = pipe.execute()[0]
    return int(deleted)


def live_session_count(user_id: int, *, app: Flask | None = None) -> int:
    """How many sessions of the user exist right now (admin pages, tests)."""
    conn: redis.Redis = (app or current_app).extensions["batchline.redis"]
    members = conn.smembers(_index(user_id))
    return sum(1 for m in members if conn.exists(SESSION_PREFIX + (m.decode() if isinstance(m, bytes) else m)))


class RedisSessionInterface(SessionInterface):
    """Flask session interface on the app's Redis."""

    serializer = TaggedJSONSerializer()

    def _redis(self, app: Flask) -> redis.Redis:
        return app.extensions["batchline.redis"]

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if not sid:
            return ServerSession()
        raw = self._redis(app).get(_key(sid)) if _SID_RE.match(sid) else None
        if raw is None:
            fresh = ServerSession()
            fresh.ended = True
            return fresh
        data = self.serializer.loads(raw.decode())
        now = time.time()
        idle = data.get(IDLE, app.config["SESSION_IDLE_TIMEOUT_S"])
        absolute = data.get(ABSOLUTE, app.config["SESSION_ABSOLUTE_LIFETIME_S"])
        if now - data.get(LAST_SEEN, now) > idle or now - data.get(CREATED, now) > absolute:
            self._drop(app, sid, data)
            fresh = ServerSession()
            fresh.ended = True
            return fresh
        return ServerSession(data, sid=sid)

    def _drop(self, app: Flask, sid: str, data: dict[str, Any]) -> None:
        pipe = self._redis(app).pipeline()
        pipe.delete(_key(sid))
        if data.get("_user_id"):
            pipe.srem(_index(data["_user_id"]), _key(sid)[len(SESSION_PREFIX):])
        pipe.execute()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)  # noqa: S101  (set by open_session above)
        name = self.get_cookie_name(app)
        domain, path = self.get_cookie_domain(app), self.get_cookie_path(app)
        if session.rotate and session.sid:
            old = self._redis(app).get(_key(session.sid))
            self._drop(app, session.sid, self.serializer.loads(old.decode()) if old else {})
            session.sid = None
        if not session:
            if session.sid:
                self._drop(app, session.sid, {})
            if session.sid or session.ended or session.rotate:
                response.delete_cookie(name, domain=domain, path=path)
            return
        now = time.time()
        if session.sid is not None and not session.modified and not session.rotate:
            idle = float(session.get(IDLE, app.config["SESSION_IDLE_TIMEOUT_S"]))
            if now - float(session.get(LAST_SEEN, 0)) < touch_interval(idle):
                # Unchanged and seen recently: the stored copy, its TTL and the cookie stand as they are.
                response.vary.add("Cookie")
                return
        if session.sid is None:
            session.sid = secrets.token_urlsafe(32)
        data = dict(session)
        data.setdefault(CREATED, now)
        data[LAST_SEEN] = now
        idle = int(data.get(IDLE, app.config["SESSION_IDLE_TIMEOUT_S"]))
        absolute = int(data.get(ABSOLUTE, app.config["SESSION_ABSOLUTE_LIFETIME_S"]))
        remaining = data[CREATED] + absolute - now
        ttl = max(1, int(min(idle, remaining)))
        pipe = self._redis(app).pipeline()
        pipe.set(_key(session.sid), self.serializer.dumps(data), ex=ttl)
        if data.get("_user_id"):
            pipe.sadd(_index(data["_user_id"]), _key(session.sid)[len(SESSION_PREFIX):])
            pipe.expire(_index(data["_user_id"]), int(app.config["SESSION_ABSOLUTE_LIFETIME_S"]) + 3600)
        pipe.execute()
        expires = datetime.fromtimestamp(data[CREATED] + absolute, UTC) if data.get(PERSISTENT) else None
        # Secure whenever served over HTTPS (behind the proxy, gunicorn's forwarded headers say so), or forced.
        secure = bool(app.config["SESSION_COOKIE_SECURE"]) or _request_is_secure()
        response.set_cookie(name, session.sid, expires=expires, httponly=self.get_cookie_httponly(app),
                            domain=domain, path=path, secure=secure, samesite=self.get_cookie_samesite(app))
        response.vary.add("Cookie")


def _request_is_secure() -> bool:
    from flask import request

    return request.is_secure
