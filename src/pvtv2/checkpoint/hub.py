"""Where checkpoints come from: local files and folders, Hugging Face Hub ids, the published weights.

:func:`resolve_source` is the one place a ``pretrained=`` / ``--checkpoint`` value becomes
something to read, so a hub id works wherever a checkpoint is accepted.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..registry import REGISTRY

#: Where ``pretrained=True`` downloads each variant from (timm's Hugging Face mirror of
#: the official ImageNet-1K weights). Any other hub id may be given explicitly.
HUB_IDS: dict[str, str] = {name: v.hub_id for name, v in REGISTRY.items() if v.hub_id}
#: The official release files (github.com/whai362/PVT releases).
OFFICIAL_URLS: dict[str, str] = {name: v.url for name, v in REGISTRY.items() if v.url}

#: Suffixes that make a string a file name, never a hub id (``runs/x/last.pt`` is a path).
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".onnx", ".json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(source: str) -> bool:
    return bool(_HUB_ID.fullmatch(source)) and not source.lower().endswith(FILE_SUFFIXES)


def resolve_source(source: Any, name: str | None = None) -> Any:
    """A ``pretrained=`` / ``--checkpoint`` value -> a local path (files and folders as they
    are, hub ids downloaded or found in the cache), or ``source`` itself when it is already
    in memory (a state dict). ``True`` means the published weights of variant ``name``."""
    if source is True:
        if name not in HUB_IDS:
            raise CheckpointError(f"no published weights known for {name!r}; pass a file, folder or hub id")
        return resolve_hub(HUB_IDS[name], filename=REGISTRY[name].hub_file)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.exists():
            return path
        if isinstance(source, str) and looks_like_hub_id(source):
            return resolve_hub(source, also_a_path=True)
        raise CheckpointError(f"{source}: no such file or folder (and not a hub id of the form 'org/name')")
    return source


def _offline() -> bool:
    from huggingface_hub import constants

    # The constant is read once at import; the variable may have been set since.
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or flag


def _local_copy_hint(repo_id: str) -> str:
    url = OFFICIAL_URLS.get(repo_id.split("/")[-1].split(".")[0], "the model's release page")
    return (f"download the weights on a machine with access (e.g. {url}) and pass the local file or folder: "
            f"create_model(name, pretrained='path/to/weights.pth'), "
            f"or --pretrained (train) / --checkpoint (eval, predict) path/to/weights")


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def resolve_hub(repo_id: str, *, filename: str | None = None, also_a_path: bool = False) -> Path:
    """The local path of hub repo ``repo_id`` (a snapshot folder) or of one ``filename`` in it:
    from the cache when it is there, else downloaded. An unreachable hub fails at once
    (huggingface_hub alone would retry for about 25 seconds first). ``also_a_path``: the
    string was first looked for as a local path, which messages then mention."""
    try:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise CheckpointError("huggingface_hub is needed to download checkpoints") from e
    prefix = f"{repo_id}: " + ("no such local file or folder, and as a Hugging Face Hub id: " if also_a_path else "")

    def fetch(local_only: bool) -> Path:
        if filename:
            return Path(hf_hub_download(repo_id, filename, local_files_only=local_only))
        # Safetensors weights when the repo has them (timm repos also hold a .bin copy).
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"], local_files_only=local_only))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.bin", "*.pth", "*.pt"],
                                            local_files_only=local_only))
        if not any(f.suffix in (".safetensors", ".bin", ".pth", ".pt") for f in folder.iterdir()):
            raise CheckpointError(f"{prefix}the repo has no weights file (.safetensors, .bin, .pth or .pt)")
        return folder

    try:
        return fetch(local_only=True)
    except Exception:  # not (completely) in the cache
        pass
    if _offline():
        raise CheckpointError(f"{prefix}not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub is "
                              f"offline (HF_HUB_OFFLINE is set); {_local_copy_hint(repo_id)}")
    try:  # one request without retries tells an unreachable hub from a missing repo
        get_hf_file_metadata(hf_hub_url(repo_id, filename or "config.json"), retry_on_errors=False)
    except RepositoryNotFoundError:
        raise CheckpointError(f"{prefix}no such model on the Hugging Face Hub (or it is private or gated: "
                              f"log in with `hf auth login`)") from None
    except HfHubHTTPError:
        pass  # e.g. a repo without config.json: the download below says what is wrong
    except Exception as e:
        raise CheckpointError(f"{prefix}cannot reach the Hugging Face Hub ({_first_line(e)}); this machine looks "
                              f"offline; {_local_copy_hint(repo_id)}") from None
    try:
        return fetch(local_only=False)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{prefix}could not download it from the Hugging Face Hub ({_first_line(e)}); "
                              f"{_local_copy_hint(repo_id)}") from None
