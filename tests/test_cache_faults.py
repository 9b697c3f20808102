"""A damaged or unwritable kernel cache never stops fastbp.

Every check runs fresh interpreters on a copy of one warm cache folder. A
damaged entry (truncated, overwritten, a flipped byte) is a miss: the process
recompiles, gets the right result and warns once, and the next process loads
cleanly from disk. A cache that cannot be written (a full disk, a read-only
folder) warns once and runs on the kernels compiled in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fastbp import jit

# Three entries in two index files: bias_act in float64 and float32, act_backward in float64.
CHILD = textwrap.dedent("""
    import errno, json, sys, warnings
    import numpy as np

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning is recorded: fastbp must give one, not one per kernel
        import fastbp
        from fastbp import jit, kernels as K

        if sys.argv[1] != "-":  # the cache's writes fail: ENOSPC halfway through, or EROFS at the open
            real_open = open

            class Full:
                def __init__(self, fh):
                    self.fh = fh
                def __enter__(self):
                    return self
                def __exit__(self, *exc):
                    self.fh.close()
                def write(self, data):
                    self.fh.write(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")

            def failing_open(path, mode="r", *args, **kwargs):
                if "r" in mode:
                    return real_open(path, mode, *args, **kwargs)
                if sys.argv[1] == "EROFS":
                    raise OSError(errno.EROFS, "Read-only file system", str(path))
                return Full(real_open(path, mode, *args, **kwargs))

            jit.open = failing_open  # what fastbp.jit's writer opens its files with

        y64, y32, dx = np.zeros((2, 3)), np.zeros((2, 3), np.float32), np.empty((2, 3))
        K.bias_act.serial(y64, np.zeros(3), K.SIGMOID)
        K.bias_act.serial(y32, np.zeros(3, np.float32), K.SIGMOID)
        K.act_backward.serial(np.ones((2, 3)), y64, K.SIGMOID, dx)
    stats = [K.bias_act.serial.stats, K.act_backward.serial.stats]
    print(json.dumps({
        "values": [float(y64[0, 0]), float(y32[0, 0]), float(dx[0, 0])],
        "hits": sum(sum(s.cache_hits.values()) for s in stats),
        "misses": sum(sum(s.cache_misses.values()) for s in stats),
        "warnings": [str(w.message) for w in caught if issubclass(w.category, jit.KernelCacheWarning)],
        "other warnings": [str(w.message) for w in caught if not issubclass(w.category, jit.KernelCacheWarning)],
    }))
""")
VALUES = [0.5, 0.5, 0.25]  # sigmoid(0) in float64 and float32, and its derivative


def run(cache: Path, mode: str = "-") -> dict:
    env = dict(os.environ, FASTBP_CACHE_DIR=str(cache))
    res = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["values"] == VALUES and out["other warnings"] == [], out
    return out


def cache_files(cache: Path, pattern: str) -> list[Path]:
    return sorted(p for p in cache.rglob(pattern) if p.is_file())


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("warm")
    first = run(cache)
    assert first["misses"] == 3 and first["hits"] == 0 and first["warnings"] == []
    assert len(cache_files(cache, "*.nbi")) == 2 and len(cache_files(cache, "*.nbc")) == 3
    # fastbp's own checksummed files, not numba's: numba still reads and writes through Cache._cache_file
    assert all(p.read_bytes().startswith(jit._MAGIC) for p in cache_files(cache, "*.nb?"))
    return cache


def _truncate(data: bytes, rng) -> bytes:
    return data[: len(data) // 2]


def _random(data: bytes, rng) -> bytes:
    return rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()


def _empty(data: bytes, rng) -> bytes:
    return b""


def _flip(data: bytes, rng) -> bytes:
    """One bit of the machine code or its pickle: numba's bare pickles would load it and run it."""
    raw = bytearray(data)
    raw[len(raw) // 2] ^= 0x10
    return bytes(raw)


DAMAGE = {
    "truncated index": ("*.nbi", _truncate),
    "random data": ("*.nbc", _random),
    "everything empty": ("*.nb?", _empty),
    "one bit of data": ("*.nbc", _flip),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_recompiles_warns_once_and_heals(warm, tmp_path, damage):
    pattern, spoil = DAMAGE[damage]
    cache = tmp_path / "cache"
    shutil.copytree(warm, cache)
    rng = np.random.default_rng(0)
    files = cache_files(cache, pattern)
    assert files
    for path in files:
        path.write_bytes(spoil(path.read_bytes(), rng))
    hurt = run(cache)
    assert hurt["misses"] == 3 and hurt["hits"] == 0  # every entry recompiled, none loaded damaged
    assert len(hurt["warnings"]) == 1, hurt["warnings"]
    assert str(cache) in hurt["warnings"][0] and "recompile" in hurt["warnings"][0]
    healed = run(cache)
    assert healed == {**healed, "hits": 3, "misses": 0, "warnings": []}
    assert not list(cache.rglob("*.tmp")) and len(cache_files(cache, "*.nbc")) == 3


@pytest.mark.parametrize("error", ["ENOSPC", "EROFS"])
def test_a_cache_that_cannot_be_written_warns_once_and_runs(warm, tmp_path, error):
    cache = tmp_path / "cache"
    shutil.copytree(warm, cache)
    for path in cache_files(cache, "*.nbi"):  # all three entries must be compiled, then saved
        path.unlink()
    full = run(cache, error)
    assert full["misses"] == 3 and len(full["warnings"]) == 1, full["warnings"]
    reason = {"ENOSPC": "No space left on device", "EROFS": "Read-only file system"}[error]
    assert "cannot write the kernel cache" in full["warnings"][0] and reason in full["warnings"][0]
    assert not list(cache.rglob("*.tmp"))  # a write that failed halfway leaves nothing behind
    after = run(cache)  # disk space again: nothing half-written was kept to be loaded, and no warning
    assert after["misses"] == 3 and after["warnings"] == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache_folder_compiles_in_memory(warm, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(warm, cache)
    for path in cache_files(cache, "*.nbi"):
        path.unlink()
    folders = [cache, *(p for p in cache.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        out = run(cache)
        assert out["misses"] == 3 and len(out["warnings"]) == 1
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_cache_files_are_checked_before_unpickling(tmp_path):
    path = tmp_path / "f.nbc"
    jit._write(path, b"payload")
    assert jit._unpack(path.read_bytes(), path) == b"payload" and os.listdir(tmp_path) == ["f.nbc"]
    for raw in (b"", path.read_bytes()[:-1], path.read_bytes()[:10], b"\x80\x04K\x01." * 20):
        with pytest.raises(jit.CorruptCacheFile, match="f.nbc: "):
            jit._unpack(raw, path)
