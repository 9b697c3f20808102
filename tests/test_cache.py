"""fastbp's on-disk kernel cache, across processes.

Each check runs fresh interpreters on an empty cache folder. Whether a process
ran parallel machine code is observed through numba's threading layer: serial
code never loads it, ``prange`` code always does. ``cache_hits`` shows the code
came from disk rather than from a compile in that process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastbp

# One child process: run the serial or the parallel path, report what was loaded and what ran.
CHILD = textwrap.dedent("""
    import json, sys
    import numba, numpy as np
    import fastbp
    from fastbp import kernels as K, threads

    path = sys.argv[1]
    model = fastbp.Sequential(fastbp.Linear(16, 32, activation="relu", seed=0), fastbp.Linear(32, 4, seed=1))
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    if path == "parallel":
        with threads.parallel_min_work(0):  # every kernel takes its prange version
            fastbp.predict_proba(model, x)
    else:
        fastbp.predict_proba(model, x)  # 64 x 32 elements: far below the threshold, the serial version
    try:
        layer = numba.threading_layer()
    except ValueError:  # no threading layer loaded: no parallel code ran
        layer = None
    disp = getattr(K.bias_act, path)
    print(json.dumps({"layer": layer, "hits": sum(disp.stats.cache_hits.values()),
                      "misses": sum(disp.stats.cache_misses.values())}))
""")


def _run(script: str, args, cache: Path, cwd=None, **env) -> dict:
    # NUMBA_NUM_THREADS=2 gives the parallel path two threads on any machine (numba allows more than the cores).
    full_env = dict(os.environ, FASTBP_CACHE_DIR=str(cache), NUMBA_NUM_THREADS="2", **env)
    res = subprocess.run(
        [sys.executable, "-c", script, *args], env=full_env, capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("first", ["parallel", "serial"])
def test_serial_and_parallel_never_share_a_cache_entry(tmp_path, first):
    second = "serial" if first == "parallel" else "parallel"
    warm = _run(CHILD, [first], tmp_path)
    assert warm["misses"] == 1 and (warm["layer"] is not None) == (first == "parallel")
    # A new process takes the other path: it must compile its own version, not load the first one.
    other = _run(CHILD, [second], tmp_path)
    assert other["hits"] == 0 and other["misses"] == 1
    assert (other["layer"] is not None) == (second == "parallel")
    # Both are on disk now; each loads its own.
    for path in ("serial", "parallel"):
        again = _run(CHILD, [path], tmp_path)
        assert again["hits"] == 1 and again["misses"] == 0
        assert (again["layer"] is not None) == (path == "parallel"), f"{path} loaded the wrong machine code"


def test_cache_lives_outside_the_package(tmp_path):
    _run(CHILD, ["serial"], tmp_path)
    assert list(tmp_path.rglob("*.nbi")), "nothing was cached"
    package = Path(fastbp.__file__).parent
    assert not [p for p in tmp_path.rglob("*") if package in p.parents]


OPTIONS_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import mod_a, mod_b
    from fastbp.jit import jit

    out = {}
    for name, fn, opts in (("a", mod_a.scale, {}), ("a_exact", mod_a.scale, {"fastmath": False}),
                           ("b", mod_b.scale, {})):
        disp = jit(fn, **opts)
        x = np.ones(3)
        disp(x)
        out[name] = {"value": float(x[0]), "hits": sum(disp.stats.cache_hits.values())}
    print(json.dumps(out))
""")


def test_same_name_in_two_files_and_other_options_do_not_collide(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # The same function name on the same line in two files, computing different things.
    (src / "mod_a.py").write_text("def scale(x):\n    x *= 2.0\n")
    (src / "mod_b.py").write_text("def scale(x):\n    x *= 3.0\n")
    cache = tmp_path / "cache"
    first = _run(OPTIONS_CHILD, [str(src)], cache)
    assert {k: r["value"] for k, r in first.items()} == {"a": 2.0, "a_exact": 2.0, "b": 3.0}
    assert all(r["hits"] == 0 for r in first.values())  # three entries: none loaded another's
    second = _run(OPTIONS_CHILD, [str(src)], cache)
    assert {k: r["value"] for k, r in second.items()} == {"a": 2.0, "a_exact": 2.0, "b": 3.0}
    assert all(r["hits"] == 1 for r in second.values())  # and each finds its own


HELPER_CHILD = textwrap.dedent("""
    import json
    import numpy as np
    import fastbp
    from fastbp import kernels as K

    y = np.zeros((2, 3))  # float64: sigmoid(0) = 1 / (1 + exp(-0))
    K.bias_act.serial(y, np.zeros(3), K.SIGMOID)
    print(json.dumps({"value": float(y[0, 0]), "file": fastbp.__file__}))
""")


def test_an_edited_helper_in_another_file_is_seen(tmp_path):
    """``bias_act`` (kernels/activations.py) calls ``exp`` from kernels/vmath.py: editing vmath must recompile it."""
    copy = tmp_path / "pkg"
    shutil.copytree(
        Path(fastbp.__file__).parent, copy / "fastbp", ignore=shutil.ignore_patterns("__pycache__", "*.nb?")
    )
    cache = tmp_path / "cache"
    before = _run(HELPER_CHILD, [], cache, cwd=copy, PYTHONPATH=str(copy))
    assert before["file"].startswith(str(copy)) and before["value"] == 0.5
    vmath = copy / "fastbp" / "kernels" / "vmath.py"
    text = vmath.read_text()
    assert "return lambda x: np.exp(x)" in text
    vmath.write_text(text.replace("return lambda x: np.exp(x)", "return lambda x: np.exp(x) + 1.0"))
    after = _run(HELPER_CHILD, [], cache, cwd=copy, PYTHONPATH=str(copy))
    assert after["value"] == pytest.approx(1 / 3)  # 1 / (1 + (exp(0) + 1)): the edit took effect


def test_unwritable_cache_folder_falls_back_to_compiling(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache folder would go: it cannot be created
    res = _run(HELPER_CHILD, [], blocker / "cache")
    assert res["value"] == 0.5
