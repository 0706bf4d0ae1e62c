"""``--data-file``: load the namespaces at start, save them (atomically) after every write.

File format: ``{".standin": 1, "namespaces": {"<ns>": <tree>, ...}}``. A file without the
``".standin"`` marker (which can never be a database key) is read as the tree of the default
namespace, so a plain JSON export can seed the server.

Saving: the writer serialises the tree on the event loop (a consistent snapshot, since writes
are applied synchronously), then writes a temporary file and renames it over the data file in a
worker thread. Writes that arrive while a save is running are coalesced into the next save; a
write's response is only sent once a save that includes it has completed. There is no fsync:
the file survives the server process being stopped or killed, not a machine crash.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path as FilePath

import anyio
import anyio.lowlevel

from .tree import Node, now_ms, prepare_value

MARKER = ".standin"


def load_namespaces(path: FilePath, default_ns: str) -> dict[str, Node]:
    if not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8") or "null")
    if isinstance(raw, dict) and MARKER in raw:
        trees = raw.get("namespaces") or {}
        if not isinstance(trees, dict):
            raise ValueError(f"{path}: 'namespaces' must be an object")
    else:
        trees = {default_ns: raw}
    stamp = now_ms()
    loaded = {ns: prepare_value(tree, None, 0, stamp) for ns, tree in trees.items()}
    return {ns: tree for ns, tree in loaded.items() if tree is not None}


def dump_namespaces(namespaces: dict[str, Node]) -> str:
    trees = {ns: tree for ns, tree in namespaces.items() if tree is not None}
    return json.dumps({MARKER: 1, "namespaces": trees}, separators=(",", ":"), ensure_ascii=False)


def write_atomically(path: FilePath, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise


class Persister:
    """Saves snapshots of the data; :meth:`flush` returns once the current data is on disk."""

    def __init__(self, path: FilePath | None, snapshot: Callable[[], str]) -> None:
        self.path = path
        self._snapshot = snapshot
        self._requested = 0
        self._saved = 0
        self._saving = False
        self._saved_event = anyio.Event()
        self._file_lock = threading.Lock()

    async def flush(self) -> None:
        if self.path is None:
            return
        self._requested += 1
        target = self._requested
        while self._saved < target:
            if self._saving:
                await self._saved_event.wait()
                continue
            with anyio.CancelScope(shield=True):
                await self._save_round()

    async def _save_round(self) -> None:
        assert self.path is not None
        self._saving = True
        try:
            await anyio.lowlevel.checkpoint()  # writes arriving right now join this save
            generation = self._requested
            text = self._snapshot()
            await anyio.to_thread.run_sync(self._write, self.path, text)
            self._saved = generation
        finally:
            self._saving = False
            event, self._saved_event = self._saved_event, anyio.Event()
            event.set()

    def _write(self, path: FilePath, text: str) -> None:
        with self._file_lock:
            write_atomically(path, text)
