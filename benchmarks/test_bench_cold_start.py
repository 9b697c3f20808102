"""Cold start: a fresh process imports fastbp and runs one training step.

With an empty kernel cache (``FASTBP_CACHE_DIR`` pointing at a new folder)
everything compiles; with a warm cache the compiled kernels are loaded.
"""

import pytest

from fastbp.bench.report import cold_start


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cold_and_warm_start(benchmark, optimizer):
    result = benchmark.pedantic(cold_start, kwargs=dict(opt=optimizer, repeats=1), rounds=1, iterations=1)
    benchmark.extra_info.update(
        {f"{k}_import_and_first_step_s": v["import_and_first_step_s"] for k, v in result.items()}
    )
    assert result["warm"]["import_and_first_step_s"] < result["cold"]["import_and_first_step_s"]
