"""A model named by a hub id on a machine that cannot reach the hub.

Offline (no ``HF_HUB_OFFLINE``), ``model.path=typo-model`` waited ~50-70 s in huggingface_hub's
retries (1, 2, 4, 8, 8 s for each file it asks for) before the one-line error. The hub is now
tried once, at once; unreachable, the hub's cache alone is read (offline mode), so a model
downloaded earlier still loads and a typo fails at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _offline_machine_env(**extra) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    for proxy in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        env.pop(proxy, None)
    # a name no resolver knows (RFC 2606): what this machine's DNS answers for huggingface.co
    return {**env, "HF_ENDPOINT": "https://hub.invalid", **extra}


def test_a_hub_id_on_a_machine_without_the_hub_fails_at_once_in_one_line(tmp_path):
    script = (
        "from amazon_sft.config import ModelConfig\n"
        "from amazon_sft.errors import UserError\n"
        "from amazon_sft.tokenizer import load_tokenizer\n"
        "try:\n"
        "    load_tokenizer(ModelConfig(path='typo-model'))\n"
        "except (UserError, OSError) as err:\n"
        "    print('ERROR', type(err).__name__, str(err).splitlines()[0])\n"
        "import os\n"
        "print('OFFLINE', os.environ.get('HF_HUB_OFFLINE'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_offline_machine_env(), "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert "Retrying in" not in proc.stderr, proc.stderr[-2000:]  # no backoff on the hub
    assert "ERROR" in proc.stdout and "typo-model" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "OFFLINE 1" in proc.stdout  # ranks and steps started from here read the cache too


def test_the_hub_is_not_probed_for_local_folders_or_when_offline_is_set(monkeypatch, tmp_path):
    from amazon_sft import hub_reach

    tried = []
    monkeypatch.setattr(hub_reach, "_reachable", lambda host, port: tried.append(host) or False)
    monkeypatch.setattr(hub_reach, "_decided", None)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
    hub_reach.read_cache_only_unless_hub_reachable(str(tmp_path))  # a folder: no hub
    assert tried == []
    hub_reach.read_cache_only_unless_hub_reachable("org/model")  # a hub id: one attempt
    assert tried == ["huggingface.co"] and os.environ.pop("HF_HUB_OFFLINE") == "1"
    for explicit in ("1", "0"):  # the user's own choice, either way, is left as it is
        tried.clear()
        monkeypatch.setattr(hub_reach, "_decided", None)
        monkeypatch.setenv("HF_HUB_OFFLINE", explicit)
        hub_reach.read_cache_only_unless_hub_reachable("org/model")
        assert tried == [] and os.environ["HF_HUB_OFFLINE"] == explicit
    tried.clear()  # set but empty is no choice: huggingface_hub reads it as online (a review)
    monkeypatch.setattr(hub_reach, "_decided", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    hub_reach.read_cache_only_unless_hub_reachable("org/model")
    assert tried == ["huggingface.co"] and os.environ["HF_HUB_OFFLINE"] == "1"


PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
PROXY_VARS += ("NO_PROXY", "no_proxy")


@pytest.mark.parametrize(
    "endpoint, env, probed",
    [
        ("http://mirror.invalid", {"HTTP_PROXY": "http://127.0.0.1:3128"}, False),
        ("http://mirror.invalid", {"http_proxy": "http://127.0.0.1:3128"}, False),
        ("https://hub.invalid", {"HTTP_PROXY": "http://127.0.0.1:3128"}, True),  # not its scheme
        ("https://hub.invalid", {"https_proxy": "http://p:3128", "NO_PROXY": "hub.invalid"}, True),
    ],
)
def test_the_probe_goes_direct_only_where_the_hub_is_reached_directly(
    monkeypatch, endpoint, env, probed
):
    """An HTTP mirror behind HTTP_PROXY was probed directly, failed, and went offline (a
    review); a host NO_PROXY names is reached directly, so it is probed."""
    from amazon_sft import hub_reach

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tried = []
    monkeypatch.setattr(hub_reach, "_reachable", lambda host, port: tried.append(host) or True)
    monkeypatch.setattr(hub_reach, "_decided", None)
    hub_reach.read_cache_only_unless_hub_reachable("org/model")
    assert bool(tried) == probed, tried


def test_a_resolver_that_never_answers_does_not_hold_the_probe(monkeypatch):
    """``create_connection``'s timeout does not bound the name lookup: a resolver that hangs
    held the command. The attempt runs beside the command, which waits PROBE_SECONDS."""
    import threading
    import time

    from amazon_sft import hub_reach

    release = threading.Event()

    def hanging_lookup(*args, **kwargs):
        release.wait(30)
        raise OSError("the resolver gave up")

    monkeypatch.setattr(hub_reach.socket, "create_connection", hanging_lookup)
    monkeypatch.setattr(hub_reach, "PROBE_SECONDS", 0.2)
    start = time.monotonic()
    assert hub_reach._reachable("hub.invalid", 443) is False
    assert time.monotonic() - start < 5
    release.set()


@pytest.mark.parametrize("proxy", ["HTTPS_PROXY", "https_proxy"])
def test_a_proxy_is_trusted_to_reach_the_hub(monkeypatch, proxy):
    """Behind a proxy a direct connection fails while the hub is reachable: no probe."""
    from amazon_sft import hub_reach

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(proxy, "http://proxy.example:3128")
    monkeypatch.setattr(hub_reach, "_decided", None)
    monkeypatch.setattr(hub_reach, "_reachable", lambda host, port: pytest.fail("probed"))
    hub_reach.read_cache_only_unless_hub_reachable("org/model")


@pytest.mark.parametrize("typo", ["/srv/models/smollm2-135mm", "./modls/smollm2", "runs/x/final"])
def test_a_path_that_is_no_folder_is_named_as_missing_not_as_a_bad_repo_id(tmp_path, typo):
    """A typo in a local path was answered with the hub library's "Repo id must be in the form
    'repo_name' or 'namespace/repo_name'" (a new user's trial): a path (absolute, ./, ../, ~, or
    more than one /) is no hub id, so it is named as missing."""
    from amazon_sft.config import ModelConfig
    from amazon_sft.errors import UserError
    from amazon_sft.tokenizer import load_tokenizer

    with pytest.raises(UserError, match="no such folder") as err:
        load_tokenizer(ModelConfig(path=typo))
    assert typo in str(err.value) and "\n" not in str(err.value)
