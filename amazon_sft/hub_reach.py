"""Reach the hub once, at once; where it cannot be reached, read the hub's cache alone.

A model or tokenizer named by a hub id (``model.path=org/name``, or a typo that is no local
folder) on a machine without the hub made huggingface_hub retry each file it asked for (1, 2,
4, 8 and 8 s): about a minute before the one-line error. One connection attempt decides
instead; unreachable, offline mode is set for this process and those it starts (ranks, the
demo's steps), so a model downloaded earlier still loads from the cache and anything else
fails at once. Behind a proxy the direct attempt proves nothing, so none is made.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PROBE_SECONDS = 3.0
"""How long the one connection attempt may take (a reachable hub answers in well under 1 s)."""
_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_decided: bool | None = None  # this process's answer: the hub reachable or not


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def _offline_set() -> bool:
    flags = (os.environ.get(k, "").upper() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "ON", "YES", "TRUE") for f in flags)


def read_cache_only_unless_hub_reachable(spec: str) -> None:
    """Before transformers looks ``spec`` up: a local path, offline mode already set, or a proxy
    asks nothing; otherwise one attempt on the hub, and offline mode where it fails."""
    global _decided
    if Path(spec).exists() or _offline_set() or any(os.environ.get(p) for p in _PROXIES):
        return
    if _decided is None:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        url = urlsplit(endpoint)
        host = url.hostname or "huggingface.co"
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
