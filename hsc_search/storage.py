"""The search's storage: a local or shared path (NFS) or any URI pyarrow understands (s3://, gs://, ...).

Ray Tune writes trials and experiment state there; we keep a few small files of our own beside them
(`hsc_search.json`, `asha_rungs.json`, `best_config.yaml`, `summary/`). On a cluster every node must see the
same storage; `check_visible_from_all_nodes` proves it before any trial starts.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs


class StorageError(RuntimeError):
    """The storage cannot be used; the message names the path and what to do."""


def is_uri(path: str) -> bool:
    return "://" in str(path)


def _query(uri: str) -> tuple[str, str]:
    """A URI's location and its query (`?endpoint_override=...&scheme=http`, how pyarrow takes an S3-compatible
    server such as MinIO), which stays at the end when names are joined (as Ray's own URI class keeps it)."""
    base, sep, query = uri.partition("?")
    return base, sep + query


def resolve(storage: str | None) -> str:
    """The storage root as an absolute local path or a URI (default ./ray_results)."""
    if storage and is_uri(storage):
        base, query = _query(storage)
        return base.rstrip("/") + query
    return str(Path(storage or "ray_results").expanduser().resolve())


def split(path: str) -> tuple[str, str]:
    """(its folder, its name) of a path or URI; a URI's query stays with the folder (what Ray's storage_path and
    URI class take), not with the name."""
    base, query = _query(path) if is_uri(path) else (path, "")
    parent, name = base.rstrip("/").rsplit("/", 1)
    return parent + query, name


def join(root: str, *parts: str) -> str:
    if not is_uri(root):
        return str(Path(root, *parts))
    base, query = _query(root)
    return "/".join([base.rstrip("/"), *parts]) + query


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(path):
        try:
            return pafs.FileSystem.from_uri(path)
        except Exception as e:  # unknown scheme, missing credentials, unreachable endpoint
            raise StorageError(f"storage '{path}': pyarrow cannot open it ({e})") from None
    return pafs.LocalFileSystem(), path


def exists(path: str) -> bool:
    fs, p = _fs(path)
    try:
        return fs.get_file_info(p).type != pafs.FileType.NotFound
    except OSError as e:  # an endpoint that does not answer, a name the file system refuses: one line, not 45
        if not is_uri(path):
            raise StorageError(f"{path}: cannot be looked up ({e.strerror or e})") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"storage '{path}': cannot be reached ({first[:300]}); check the URI, the endpoint and "
                           "the credentials") from None  # fmt: skip


def has_experiment_state(exp_dir: str) -> bool:
    """Whether Ray Tune saved the experiment's state there (`experiment_state-<time>.json`): what a restore needs.
    Its `tuner.pkl` comes first, so a driver killed between the two left a folder `Tuner.can_restore` accepts and
    whose restore starts the search from nothing (the restored searcher then ran only the first trial)."""
    fs, p = _fs(exp_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
    except OSError:
        return False
    return any(i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json") for i in infos)


def cut_off_experiment_state(exp_dir: str) -> str | None:
    """The experiment state Ray would restore from (the newest `experiment_state-*.json`, as Ray picks it) when it
    is not whole JSON (a full disk cut it off): Ray's restore then logged a traceback, started the search's state
    over and ran a new trial, and every `resume` after that ran nothing and said "interrupted" (a walkthrough).
    None when it reads (or there is none: `has_experiment_state` says that)."""
    import json

    fs, p = _fs(exp_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
    except OSError:
        return None
    names = [i.base_name for i in infos
             if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json")]  # fmt: skip
    if not names:
        return None
    newest = join(exp_dir, max(names))
    try:
        json.loads(read_text(newest))
    except ValueError:
        return newest
    except OSError:
        return None
    return None


def write_text(path: str, text: str) -> None:
    """Writes the file whole; on a local path through a temporary file and a rename, so that a crash mid-write
    leaves the old content (object stores replace an object whole on their own)."""
    if not is_uri(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:  # a full disk, a second Ctrl-C: no temporary file stays behind
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0] if is_uri(path) else os.path.dirname(p), recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def delete_file(path: str) -> None:
    fs, p = _fs(path)
    fs.delete_file(p)


def read_text(path: str) -> str:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def upload_dir(local: str | Path, remote: str) -> None:
    """Copies a local folder into the storage (no-op when it is the same place)."""
    if not is_uri(remote) and Path(local).resolve() == Path(remote).resolve():
        return
    fs, p = _fs(remote)
    fs.create_dir(p, recursive=True)
    pafs.copy_files(str(local), p, destination_filesystem=fs)


def _read_marker(path: str) -> str:
    """Runs on a node: the marker's content, or a one-line reason it cannot be read."""
    try:
        return read_text(path)
    except Exception as e:
        return f"!{type(e).__name__}: {e}"


def check_visible_from_all_nodes(root: str, timeout_s: float = 120.0, marker_dir: str | None = None) -> int:
    """Writes a marker into the storage and has a small task on every alive Ray node read it back.

    Args:
        root: the storage root the search will use.
        marker_dir: where the nodes look for the marker (default: root); tests point it elsewhere to play a node
            that cannot see the storage.

    Returns:
        the number of nodes checked.

    Raises:
        StorageError naming each node that cannot read it, instead of Ray's failure at the first checkpoint.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    name = f".hsc_storage_check_{token[:8]}"
    marker = join(root, name)
    write_text(marker, token)
    look_at = join(marker_dir or root, name)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        reader = ray.remote(num_cpus=0, max_retries=0)(_read_marker)
        refs = {
            n["NodeManagerAddress"] + f" (node {n['NodeID'][:12]})": reader.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(look_at)
            for n in nodes
        }
        ready, not_ready = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        bad, gone = [], 0
        for label, ref in refs.items():
            if ref in not_ready:
                bad.append(f"{label}: no answer within {timeout_s:.0f} s")
                continue
            try:
                seen = ray.get(ref)
            except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError,
                    ray.exceptions.WorkerCrashedError):  # "the node ... doesn't exist any more": it died after Ray
                gone += 1  # listed it as alive (for ~30 s it does), or during the check; no trial goes there either
                continue  # (a traceback before; nor is a dead node the storage's fault)
            except ray.exceptions.RayError as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                bad.append(f"{label}: the check failed there ({type(e).__name__}: {first[:200]})")
                continue
            if seen != token:
                bad.append(f"{label}: {seen.lstrip('!') if seen.startswith('!') else 'sees a different marker'}")
        if bad:
            raise StorageError(
                f"storage '{root}' is not visible from every Ray node (marker {look_at}):\n  "
                + "\n  ".join(bad)
                + "\nOn a cluster --storage must be shared: a path mounted on every node (NFS/EFS) or a URI such as "
                "s3://bucket/prefix that every node can reach."
            )
        return len(nodes) - gone
    finally:
        try:
            fs, p = _fs(marker)
            fs.delete_file(p)
        except Exception:
            pass
