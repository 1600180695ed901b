"""What stands between a stranger and the app: login throttling and upload quotas, as ASGI middleware.

Both pages are Gradio apps mounted on one FastAPI app; their login (``.../login``) and upload
(``.../gradio_api/upload``) routes are Gradio's own. Rather than patch Gradio, this middleware
watches those two kinds of request on the way in:

- **Login**: after ``free_failures`` wrong passwords from one address, or for one user name, each
  further try must wait ``2 ** (failures - free_failures)`` seconds (capped at ``max_delay``);
  an early try is refused with HTTP 429 and ``Retry-After`` without looking at the password. A
  success clears the user's and the address's record.
- **Uploads**: every address may upload ``per_address_bytes`` per ``window`` seconds and all
  addresses together ``total_bytes``; beyond that HTTP 429. Gradio's own ``max_file_size`` still
  caps each file.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_LOGIN_BODY = 16 * 1024  # a login form is a name and a password


@dataclass
class GuardPolicy:
    """Limits for strangers; the defaults suit a checkout demo on one machine."""

    free_failures: int = 5
    max_delay: float = 300.0
    per_address_bytes: int = 200 * 1024 * 1024
    total_bytes: int = 2 * 1024 * 1024 * 1024
    window: float = 3600.0


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


@dataclass
class LoginThrottle:
    """Failure counts per address and per user name, with growing delays after ``free_failures``."""

    policy: GuardPolicy
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Failures] = field(default_factory=lambda: defaultdict(_Failures))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_needed(self, address: str, user: str | None) -> float:
        """Seconds before this address (or this user) may try again; 0 when it may try now."""
        now = self.clock()
        with self._lock:
            return max(
                (self._delay(self._records[key], now) for key in self._keys(address, user) if key in self._records),
                default=0.0,
            )

    def failed(self, address: str, user: str | None) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(address, user):
                record = self._records[key]
                record.count += 1
                record.last = now
        logger.warning("failed annotator login from %s for %r", address, (user or "")[:40])

    def succeeded(self, address: str, user: str | None) -> None:
        with self._lock:
            for key in self._keys(address, user):
                self._records.pop(key, None)

    def _delay(self, record: _Failures, now: float) -> float:
        extra = record.count - self.policy.free_failures
        if extra < 0:
            return 0.0
        delay = min(self.policy.max_delay, 2.0**extra)
        return max(0.0, record.last + delay - now)

    @staticmethod
    def _keys(address: str, user: str | None) -> list[str]:
        return [f"addr:{address}"] + ([f"user:{user.strip().lower()}"] if user and user.strip() else [])


@dataclass
class UploadQuota:
    """Bytes uploaded per address and in total over a sliding window."""

    policy: GuardPolicy
    clock: Callable[[], float] = time.monotonic
    _events: deque[tuple[float, str, int]] = field(default_factory=deque)
    _per_address: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, address: str, size: int) -> str | None:
        """Book ``size`` bytes for ``address``; returns why not (and books nothing) when over a limit."""
        now = self.clock()
        with self._lock:
            while self._events and self._events[0][0] < now - self.policy.window:
                _, old_address, old_size = self._events.popleft()
                self._per_address[old_address] -= old_size
                self._total -= old_size
            minutes = max(1, round(self.policy.window / 60))
            if self._per_address[address] + size > self.policy.per_address_bytes:
                return (
                    f"Upload limit reached: at most {_mb(self.policy.per_address_bytes)} per {minutes} minutes from "
                    "one "
                    "address. Try again later."
                )
            if self._total + size > self.policy.total_bytes:
                return (
                    f"The server takes at most {_mb(self.policy.total_bytes)} of uploads per {minutes} minutes. "
                    "Try again later."
                )
            self._events.append((now, address, size))
            self._per_address[address] += size
            self._total += size
            return None


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB"


class GuardMiddleware:
    """ASGI middleware applying :class:`LoginThrottle` and :class:`UploadQuota` to Gradio's routes."""

    def __init__(
        self,
        app: ASGIApp,
        policy: GuardPolicy | None = None,
        throttle: LoginThrottle | None = None,
        quota: UploadQuota | None = None,
    ) -> None:
        self.app = app
        self.policy = policy or GuardPolicy()
        self.throttle = throttle or LoginThrottle(self.policy)
        self.quota = quota or UploadQuota(self.policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.endswith("/login"):
            return await self._login(scope, receive, send)
        if path.endswith("/gradio_api/upload"):
            return await self._upload(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = _address(scope)
        body, complete = await _read_body(receive, MAX_LOGIN_BODY)
        if not complete:
            return await _refuse(send, 413, "A login form is a user name and a password.")
        user = _form_user(body, _header(scope, b"content-type"))
        wait = self.throttle.wait_needed(address, user)
        if wait > 0:
            return await _refuse(
                send,
                429,
                f"Too many failed logins: wait {math.ceil(wait)} s before the next try.",
                retry_after=math.ceil(wait),
            )
        status: list[int] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, _replay(body), watch)
        if status and status[0] < 300:
            self.throttle.succeeded(address, user)
        elif status and status[0] in (400, 401, 403):
            self.throttle.failed(address, user)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = _address(scope)
        declared = _header(scope, b"content-length")
        size = int(declared) if declared and declared.isdigit() else None
        if size is None:  # chunked: read it whole, within the per-address allowance
            body, complete = await _read_body(receive, self.policy.per_address_bytes)
            if not complete:
                return await _refuse(
                    send, 429, f"Upload limit reached: at most {_mb(self.policy.per_address_bytes)} from one address."
                )
            size, receive = len(body), _replay(body)
        refusal = self.quota.take(address, size)
        if refusal:
            logger.warning("upload of %d bytes from %s refused: %s", size, address, refusal)
            return await _refuse(send, 429, refusal)
        await self.app(scope, receive, send)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _form_user(body: bytes, content_type: str | None) -> str | None:
    if content_type and "application/json" in content_type:
        try:
            value = json.loads(body or b"{}").get("username")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    values = parse_qs(body.decode("utf-8", "replace")).get("username")
    return values[0] if values else None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), True


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _refuse(send: Send, status: int, detail: str, retry_after: int | None = None) -> None:
    body = json.dumps({"detail": detail, "error": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["GuardPolicy", "GuardMiddleware", "LoginThrottle", "UploadQuota"]
