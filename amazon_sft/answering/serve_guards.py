"""What stands between the network and ``serve``'s app: the body limit, the ``Host`` check and
a uvicorn protocol that bounds connections.

- ``BodyLimit`` counts the body bytes that really arrive (a chunked body has no Content-Length
  to trust): 413 past the limit (within ``DECLARED_GRACE_S`` when the Content-Length already
  says so), 408 when the whole body takes longer than ``BODY_TIMEOUT_S``.
- ``HostCheck``: the ``Host`` header must name this server (DNS rebinding), read the way RFC
  3986 writes hosts, so ``[::1]:8765`` is ``::1`` (Starlette's check splits at the first colon
  and never matches an IPv6 address); an allowed name given with a port matches without it.
- ``guarded_protocol``: uvicorn reads request headers without a time limit and accepts as many
  connections as the process has file descriptors, so a client trickling header lines held
  them all (1,100 took the server down and flooded its log with accept errors). Headers must
  complete within ``HEADER_TIMEOUT_S`` of a connection (or of the previous response on a kept
  connection), and connections beyond ``max_connections`` are closed as they are accepted;
  the listening backlog (``listen_backlog``) keeps a burst from running the process out of
  files before they are (a burst of 600 under a limit of 256 left the server unanswering).
"""

from __future__ import annotations

import asyncio
import resource

from amazon_sft.answering.client_errors import encoded_body
from amazon_sft.terminal import json_line

MAX_BODY_BYTES = 16_384
BODY_TIMEOUT_S = 10.0
"""The whole request body must arrive within this: a body sent a byte at a time would hold a
connection (and its memory) open for as long as the client likes."""
HEADER_TIMEOUT_S = 10.0
"""A request's headers must arrive within this of the connection (or the previous response)."""
MAX_CONNECTIONS = 256
"""Open connections at most (fewer when the process may open fewer than twice this many files)."""
DISCARD_BYTES = 1 << 20
"""How much of an oversized body is read and dropped before the 413 (never kept in memory)."""
DECLARED_GRACE_S = 1.0
"""A body whose Content-Length is already past the limit is read and dropped for this long at
most before the 413: enough for bytes in flight (so no reset loses the reply), not the whole
body deadline (a client that declared 100 TB and waited was held 10 s, then told 408)."""


def safe_json(payload) -> bytes:
    """JSON with <, > and & escaped, so product text can never become markup where it lands,
    and control characters and bidirectional overrides escaped as ``ask --json`` escapes them
    (a title's raw U+202E reached the page, shown reversed: a review).

    >>> safe_json({"t": "<b>Invoice \\u202etxt.exe"})
    b'{"t": "\\\\u003cb\\\\u003eInvoice \\\\u202etxt.exe"}'
    >>> safe_json({"t": "Tom & Jerry"})
    b'{"t": "Tom \\\\u0026 Jerry"}'
    """
    text = json_line(payload)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


async def _refuse(send, status: int, message: str) -> None:
    payload = safe_json({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an allowed name, without port or brackets, lower case.

    >>> [host_name(h) for h in ("[::1]:8765", "::1", "Shop.Example:8000", "127.0.0.1")]
    ['::1', '::1', 'shop.example', '127.0.0.1']
    """
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:  # name:port; more than one colon is a bare IPv6 address
        return value.split(":", 1)[0]
    return value


class HostCheck:
    """ASGI middleware: 400 unless the ``Host`` header names one of ``allowed_hosts``."""

    def __init__(self, app, allowed_hosts) -> None:
        self.app, self.allowed = app, {host_name(h) for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                return await _refuse(
                    send,
                    400,
                    "invalid host header: it names another server (serve --allowed-host NAME "
                    "accepts a name)",
                )
        return await self.app(scope, receive, send)


def _declared_past(scope, limit: int) -> bool:
    """The request's Content-Length is already over ``limit``.

    >>> _declared_past({"headers": [(b"content-length", b"99999")]}, 16)
    True
    >>> _declared_past({"headers": [(b"content-length", b" 16")]}, 16)
    False
    """
    declared = dict(scope.get("headers") or []).get(b"content-length", b"").strip()
    return declared.isdigit() and int(declared) > limit


def _waits_for_continue_past(scope, limit: int) -> bool:
    """The client declares a body over ``limit`` and waits for ``100 Continue`` before sending
    it: it can be refused at once, nothing in flight to be lost to a reset (it was sent the
    Continue, then waited on for 10 s and answered 408: a hostile user's trial).

    >>> head = [(b"expect", b"100-continue"), (b"content-length", b"99999999999999")]
    >>> waits = _waits_for_continue_past
    >>> waits({"headers": head}, 16), waits({"headers": head[1:]}, 16)
    (True, False)
    """
    expect = dict(scope.get("headers") or []).get(b"expect", b"")
    return expect.strip().lower() == b"100-continue" and _declared_past(scope, limit)


class BodyLimit:
    """ASGI middleware: read the request body, counting the bytes that really arrive (a chunked
    body has no Content-Length to trust), answer 413 past ``limit``, then hand the app the body
    it read. Later ``receive`` calls pass through, so the app still sees a disconnect."""

    def __init__(self, app, limit: int, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    @staticmethod
    async def _discard(receive, more: bool, deadline: float) -> None:
        """Read and drop the rest of an oversized body, up to ``DISCARD_BYTES`` and until the
        body's ``deadline``: a server that closes with unread data makes the client's kernel
        drop the 413 on the reset; without the deadline, a body that stopped arriving held its
        connection for ever (256 of them locked every client out)."""
        dropped, loop = 0, asyncio.get_running_loop()
        while more and dropped < DISCARD_BYTES:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                return
            if message["type"] == "http.disconnect":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _waits_for_continue_past(scope, self.limit):  # it sends nothing until told to
            return await _refuse(send, 413, f"request body over {self.limit} bytes")
        body, more = b"", True
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        if _declared_past(scope, self.limit):  # drop what is in flight, then answer
            grace = min(DECLARED_GRACE_S, self.timeout_s)
            await self._discard(receive, True, asyncio.get_running_loop().time() + grace)
            return await _refuse(send, 413, f"request body over {self.limit} bytes")
        while more:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.0))
            except asyncio.TimeoutError:
                sent = f"{len(body)} bytes in {self.timeout_s:g} s"
                return await _refuse(send, 408, f"request body too slow ({sent})")
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._discard(receive, more, deadline)  # so the reply is not lost to a reset
                return await _refuse(send, 413, f"request body over {self.limit} bytes")
        coding = dict(scope.get("headers") or []).get(b"content-encoding", b"")
        if body and (compressed := encoded_body(coding)) is not None:
            return await _refuse(send, 415, compressed)  # read whole first: no reset loses it
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def connection_cap() -> int:
    """``MAX_CONNECTIONS``, or half the files this process may open when that is fewer."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 2))


def listen_backlog(max_connections: int = 0) -> int:
    """The listening socket's backlog: asyncio accepts up to this many connections per wake-up
    before the cap can close any, so with uvicorn's 2,048 a burst ran the process out of files
    (and flooded the log with accept errors) below a file limit of ~2,300. At most the cap, and
    a sixteenth of the file limit: a connection accepted over the cap holds its descriptor for
    three more turns of the loop (the transport, ``connection_made``'s abort, the close), each
    of which may accept another backlog, so the cap's half of the files plus four backlogs stay
    under the limit. Clients beyond it wait in the kernel (SYN retries), never the process."""
    cap = max_connections or connection_cap()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(8, min(cap, soft // 16))


def guarded_protocol(header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = 0):
    """uvicorn's h11 protocol, with a time limit on headers and a cap on connections (module
    docstring); ``max_connections`` 0: ``connection_cap()``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    cap = max_connections or connection_cap()

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > cap:
                transport.abort()  # frees the descriptor now; nothing was read
                return
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()  # the next request on a kept connection, too

        def _arm_header_timer(self) -> None:
            self.loop.call_later(header_timeout_s, self._headers_late, self.cycle)

        def _headers_late(self, cycle) -> None:
            waiting = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if waiting and not self.transport.is_closing():
                self.transport.close()  # no request began since the timer was armed

    return GuardedH11Protocol
