"""Reach the hub once, at once; where it cannot be reached, read the hub's cache alone.

A model or tokenizer named by a hub id (``model.path=org/name``, or a typo that is no local
folder) on a machine without the hub made huggingface_hub retry each file it asked for (1, 2,
4, 8 and 8 s): about a minute before the one-line error. One connection attempt decides
instead; unreachable, offline mode is set for this process and those it starts (ranks, the
demo's steps), so a model downloaded earlier still loads from the cache and anything else
fails at once. Where a proxy carries the request (the endpoint's scheme or ``all``, and the
host not in ``NO_PROXY``), a direct attempt proves nothing, so none is made; nor where the user
set ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` either way.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

log = logging.getLogger(__name__)

PROBE_SECONDS = 3.0
"""How long the one connection attempt may take (a reachable hub answers in well under 1 s)."""
_decided: bool | None = None  # this process's answer: the hub reachable or not


def _reachable(host: str, port: int) -> bool:
    """One connection attempt, beside the caller: the name lookup inside it has no timeout of
    its own, and a resolver that never answers must not hold the command."""
    answer: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return bool(answer and answer[0])


def _proxied(host: str, scheme: str) -> bool:
    """A proxy carries requests to ``host`` (``*_proxy`` variables, any case; ``NO_PROXY``)."""
    proxies = getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not proxy_bypass(host)


def read_cache_only_unless_hub_reachable(spec: str) -> None:
    """Before transformers looks ``spec`` up: a local path, the user's own offline setting or a
    proxy asks nothing; otherwise one attempt on the hub, and offline mode where it fails."""
    global _decided
    chosen = any(os.environ.get(k, "").strip() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if Path(spec).exists() or chosen:  # set but empty is no choice: the hub reads it as online
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlsplit(endpoint)
    host = url.hostname or "huggingface.co"
    if _proxied(host, url.scheme or "https"):
        return
    if _decided is None:
        port = url.port or (80 if url.scheme == "http" else 443)
        _decided = _reachable(host, port)
        if not _decided:
            log.debug(
                "%s cannot be reached: %r is read from the hub's cache only (HF_HUB_OFFLINE=1)",
                endpoint,
                spec,
            )
    if not _decided:
        _go_offline()


def _go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # processes started from here
    try:  # this one: huggingface_hub read the variable when it was imported
        import huggingface_hub.constants as hub

        hub.HF_HUB_OFFLINE = True
    except ImportError:
        pass
