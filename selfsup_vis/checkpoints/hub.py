"""``model.pretrained=true`` for a timm model: use the cached weights, or find out in a few
seconds that they cannot be had, before timm asks the Hub.

timm downloads through ``huggingface_hub``, which on a machine without network retries each file
with back-off (about 50 s here) and then raises ``LocalEntryNotFoundError``, which reached the
user as a "config error". Here the local caches are looked at first (the Hugging Face cache and
torch.hub's); without the weights there, ``HF_HUB_OFFLINE=1`` or an endpoint that does not
answer one TCP connection within :data:`PROBE_SECONDS` fails at once with a message naming the
cache, ``HF_HUB_OFFLINE`` and ``model.checkpoint=``.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass

import torch.hub
from huggingface_hub import try_to_load_from_cache
from timm.models import get_pretrained_cfg

from selfsup_vis.checkpoints.formats.hf import WeightsNotHereError, hf_cache_dir

__all__ = ["PROBE_SECONDS", "cached_timm_weights", "endpoint_reachable", "require_timm_weights",
           "weights_missing"]

PROBE_SECONDS = 2.0
# the file names timm's hub loader tries, in its order (timm/models/_hub.py)
_HUB_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
              "open_clip_pytorch_model.bin")


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def cached_timm_weights(model_name: str) -> str | None:
    """The local file timm would load for ``model_name``'s pretrained weights, else None."""
    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        return None
    if cfg.file and Path(cfg.file).is_file():
        return str(cfg.file)
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=str(hf_cache_dir()),
                                           revision=revision or None)
            if isinstance(found, str):
                return found
    if cfg.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if local.is_file():
            return str(local)
    return None


def endpoint_reachable(url: str, seconds: float = PROBE_SECONDS) -> bool:
    """One TCP connection to ``url``'s host, or to the proxy requests would use for it
    (``HTTPS_PROXY`` / ``HTTP_PROXY``, unless ``NO_PROXY`` exempts the host), within ``seconds``
    (name lookup included: it runs in a daemon thread, since ``getaddrinfo`` has no timeout)."""
    parsed = urlparse(url)
    proxy = getproxies().get(parsed.scheme)
    if proxy and parsed.hostname and not proxy_bypass(parsed.hostname):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` as set now (huggingface_hub read it once, at its import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def require_timm_weights(model_name: str) -> None:
    """Return if timm can get ``model_name``'s pretrained weights (cached, or the Hub answers);
    else raise :func:`offline_error` at once."""
    if cached_timm_weights(model_name):
        return
    if _offline_flag():
        raise weights_missing(model_name, "HF_HUB_OFFLINE is set")
    endpoint = hub_endpoint()
    if not endpoint_reachable(endpoint):
        raise weights_missing(model_name, f"the Hub ({endpoint}, HF_ENDPOINT) did not answer "
                                          f"within {PROBE_SECONDS:g} s")


def weights_missing(model_name: str, reason: str) -> WeightsNotHereError:
    """The message a user without network needs: where we looked, why we did not download,
    and the two ways out (a cache filled elsewhere, or ``model.checkpoint=``)."""
    cfg = get_pretrained_cfg(model_name)
    repo = (cfg.hf_hub_id or "").partition("@")[0] if cfg is not None else ""
    fetch = f"`huggingface-cli download {repo}`" if repo else "timm.create_model(..., pretrained=True)"
    return WeightsNotHereError(
        f"model.pretrained=true ({model_name}): its weights are not in the Hugging Face cache "
        f"{hf_cache_dir()} (HF_HUB_CACHE / HF_HOME) nor in torch.hub's "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'}, and {reason} "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Where there is network, "
        f"run {fetch} and copy the cache here (or point HF_HUB_CACHE at it), or pass "
        f"model.checkpoint=<weights file> model.pretrained=false.")
