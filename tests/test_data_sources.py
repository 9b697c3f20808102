"""Batch sources of fit (fastbp/data.py): memmaps, .npy paths, iterables, conversion, prefetch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _helpers import ctrl_c_in_batch

import fastbp
from fastbp import checkpoint as ckpt
from fastbp import data
from fastbp.training import TrainingInterrupted, evaluate, predict

N, D, K = 600, 12, 3


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))  # float64: the model is float32
    y = rng.integers(0, K, N)
    return X, y


def _model():
    return fastbp.Sequential(fastbp.Linear(D, 16, activation="relu", seed=0), fastbp.Linear(16, K, seed=1))


def _fit(X, y, **kw):
    model = _model()
    opt = fastbp.optim.Adam(model.parameters(), lr=1e-2)
    kw = {"epochs": 2, "batch_size": 50, "seed": 0, "progress": False, **kw}
    history = fastbp.fit(model, X, y, loss=fastbp.SoftmaxCrossEntropy(), optimizer=opt, **kw)
    return model, history


def _same(a, b):
    (ma, ha), (mb, hb) = a, b
    assert ha.loss == hb.loss and ha.accuracy == hb.accuracy and ha.val_loss == hb.val_loss
    for k, w in ma.state_dict().items():
        assert np.array_equal(w, mb.state_dict()[k]), k


@pytest.fixture(scope="module")
def reference(xy):
    X, y = xy
    return _fit(np.ascontiguousarray(X, dtype=np.float32), y)


def test_float64_and_fortran_input_train_as_preconverted(xy, reference):
    X, y = xy
    _same(_fit(X, y), reference)
    _same(_fit(np.asfortranarray(X), y), reference)
    _same(_fit(np.asfortranarray(X.astype(np.float32)), y), reference)
    _same(_fit(X.astype(np.float16).astype(np.float64), y), _fit(X.astype(np.float16).astype(np.float32), y))


def test_memmap_and_npy_path_train_as_in_memory(xy, reference, tmp_path):
    X, y = xy
    x_path, y_path = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x_path, X.astype(np.float32))
    np.save(y_path, y)
    _same(_fit(str(x_path), str(y_path)), reference)
    _same(_fit(x_path, y), reference)  # a PathLike
    _same(_fit(np.load(x_path, mmap_mode="r"), y), reference)
    np.save(tmp_path / "x64.npy", X)  # float64 on disk, converted batch by batch
    _same(_fit(tmp_path / "x64.npy", y), reference)


def test_validation_split_and_data_from_memmap(xy, tmp_path):
    X, y = xy
    np.save(tmp_path / "x.npy", X)
    X32 = X.astype(np.float32)
    _same(_fit(tmp_path / "x.npy", y, validation_split=0.25), _fit(X32, y, validation_split=0.25))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    _same(
        _fit(mm[:400], y[:400], validation_data=(tmp_path / "x.npy", y)),
        _fit(X32[:400], y[:400], validation_data=(X32, y)),
    )


def test_prefetch_is_bitwise_the_same(xy, reference, monkeypatch):
    X, y = xy
    X32 = X.astype(np.float32)
    for flag in (True, False):
        monkeypatch.setattr(data.ArraySource, "default_prefetch", flag)
        _same(_fit(X32, y), reference)
        _same(_fit(X, y), reference)


def _batches(X, y, size=50):
    return [(X[i : i + size], y[i : i + size]) for i in range(0, X.shape[0], size)]


def test_iterable_equals_array_without_shuffle(xy):
    X, y = xy
    X32 = X.astype(np.float32)
    expected = _fit(X32, y, shuffle=False)
    _same(_fit(_batches(X32, y), None, shuffle=False), expected)
    _same(_fit(_batches(X, y), None, shuffle=False), expected)  # float64 batches, converted
    _same(_fit(data.Stream(_batches(X32, y), prefetch=False), None, shuffle=False), expected)
    model, history = _fit(_batches(X32, y), None, shuffle=False, validation_data=data.Stream(_batches(X32, y, 128)))
    assert history.val_loss == _fit(X32, y, shuffle=False, validation_data=(X32, y))[1].val_loss


def test_iterable_reusing_one_buffer_is_not_overwritten_by_prefetch(xy):
    X, y = xy
    X32 = X.astype(np.float32)

    class Reused:  # yields the same arrays every batch, refilled: the prefetcher must copy them
        def __iter__(self):
            xb, yb = np.empty((50, D), np.float32), np.empty(50, np.int64)
            for i in range(0, N, 50):
                xb[...], yb[...] = X32[i : i + 50], y[i : i + 50]
                yield xb, yb

    _same(_fit(Reused(), None, shuffle=False), _fit(X32, y, shuffle=False))


def test_one_shot_generator_fails_clearly_in_epoch_two(xy):
    X, y = xy
    gen = ((X[i : i + 50], y[i : i + 50]) for i in range(0, N, 50))
    with pytest.raises(ValueError, match=r"X: the iterable of batches yielded none in epoch 2: it is an iterator"):
        _fit(gen, None, shuffle=False)
    _fit(((X[i : i + 50], y[i : i + 50]) for i in range(0, N, 50)), None, shuffle=False, epochs=1)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({}, "shuffle: an iterable of batches"),
        ({"shuffle": False, "validation_split": 0.2}, "validation_split: an iterable of batches"),
        ({"shuffle": False, "checkpoint": "CKPT"}, "checkpoint: an iterable of batches"),
    ],
)
def test_iterable_refuses_what_needs_rows(xy, tmp_path, kw, match):
    X, y = xy
    if kw.get("checkpoint"):
        kw["checkpoint"] = str(tmp_path / "c.npz")
    with pytest.raises(ValueError, match=match):
        _fit(_batches(X, y), None, **kw)


def _raising_at(k, X, y):
    class Source:
        def __iter__(self):
            for i, batch in enumerate(_batches(X, y)):
                if i == k:
                    raise RuntimeError(f"source broke at batch {k}")
                yield batch

    return Source()


@pytest.mark.parametrize("prefetch", [True, False])
def test_source_error_surfaces_and_thread_is_joined(xy, prefetch):
    X, y = xy
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="source broke at batch 3"):
        _fit(data.Stream(_raising_at(3, X, y), prefetch=prefetch), None, shuffle=False)
    assert threading.active_count() == before


def test_bad_batch_is_named(xy):
    X, y = xy
    batches = _batches(X, y)
    batches[4] = (X[:50, :-1], y[:50])
    with pytest.raises(ValueError, match=r"X batch 4 \(X_batch\): expected shape \(batch, 12\), got \(50, 11\)"):
        _fit(batches, None, shuffle=False)
    batches[4] = (X[:50], y[:49])
    with pytest.raises(ValueError, match=r"X batch 4 \(y_batch\): expected 50 rows to match X batch 4"):
        _fit(batches, None, shuffle=False)
    batches[4] = (X[:50].astype(int), y[:50])
    with pytest.raises(TypeError, match=r"X batch 4 \(X_batch\): expected a floating-point array"):
        _fit(batches, None, shuffle=False)
    batches[4] = X[:50]
    with pytest.raises(ValueError, match=r"X batch 4: expected a pair \(X_batch, y_batch\)"):
        _fit(batches, None, shuffle=False)


def test_interrupt_joins_the_prefetch_thread(xy, monkeypatch):
    X, y = xy
    monkeypatch.setattr(data.ArraySource, "default_prefetch", True)
    before = threading.active_count()
    monkeypatch.setattr(fastbp.training, "defer_interrupts", ctrl_c_in_batch(3))
    with pytest.raises(TrainingInterrupted, match="after batch 3 of 12"):
        _fit(X, y)
    assert threading.active_count() == before


def test_nonfinite_loss_joins_the_prefetch_thread(xy, monkeypatch):
    X, y = xy
    monkeypatch.setattr(data.ArraySource, "default_prefetch", True)
    bad = X.copy()
    bad[120] = np.nan
    before = threading.active_count()
    with pytest.raises(fastbp.training.NonFiniteLossError):
        _fit(bad, y, shuffle=False)
    assert threading.active_count() == before


def test_feed_never_overwrites_the_batch_in_use():
    made = []

    def produce(slot):
        if len(made) == 20:
            return None
        made.append(slot)
        return len(made) - 1, slot

    with data.Feed(produce, prefetch=True) as feed:
        seen = []
        while (item := feed.next()) is not None:
            seen.append(item)
            # the thread has filled at most one batch ahead, into the other slot
            assert len(made) <= len(seen) + 1
            assert made[-1] != item[1] or len(made) == len(seen)
    assert [i for i, _ in seen] == list(range(20))


def test_predict_and_evaluate_convert_block_by_block(xy, reference, tmp_path):
    X, y = xy
    model = reference[0]
    X32 = X.astype(np.float32)
    expected = model.predict(X32, batch_size=128)
    for given in (X, np.asfortranarray(X), np.asfortranarray(X32)):
        assert np.array_equal(predict(model, given, batch_size=128), expected)
        assert np.array_equal(model.predict(given, batch_size=128), expected)
    np.save(tmp_path / "x.npy", X)
    assert np.array_equal(predict(model, tmp_path / "x.npy", batch_size=128), expected)
    loss = fastbp.SoftmaxCrossEntropy()
    ev = evaluate(model, X32, y, loss=loss, batch_size=128)
    assert evaluate(model, np.asfortranarray(X), y, loss=loss, batch_size=128) == ev
    assert evaluate(model, tmp_path / "x.npy", y, loss=loss, batch_size=128) == ev
    assert evaluate(model, _batches(X32, y, 128), None, loss=loss) == ev


def test_digest_is_unchanged_and_needs_no_contiguous_copy(xy):
    X, y = xy
    import hashlib

    def old_digest(*arrays):  # the digest fastbp computed before it hashed in blocks
        h = hashlib.blake2b(digest_size=16)
        for a in arrays:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data.cast("B"))
        return h.hexdigest()

    X32 = X.astype(np.float32)
    assert ckpt.digest(X32, y) == old_digest(X32, y)
    assert ckpt.digest(np.asfortranarray(X32), y) == old_digest(X32, y)
    assert ckpt.digest(X32[::2]) == old_digest(X32[::2])
    assert ckpt.digest(np.float32(3)) == old_digest(np.float32(3))
    # Rows hash as the array converted to their dtype: a float64 fit resumes a checkpoint of the float32 one
    assert ckpt.digest(data.Rows(np.asfortranarray(X), np.float32), y) == old_digest(X32, y)
    assert ckpt.digest(data.Rows(X, np.float32)[100:300]) == old_digest(X32[100:300])
    big = np.asfortranarray(np.random.default_rng(1).standard_normal((3000, 700)))  # several 8 MB blocks
    assert ckpt.digest(big) == old_digest(big)


def test_resume_from_memmap_and_float64(xy, tmp_path):
    X, y = xy
    path = str(tmp_path / "run.npz")
    X32 = X.astype(np.float32)
    full = _fit(X32, y, epochs=3)
    _fit(X32, y, epochs=2, checkpoint=path)  # written from C-ordered float32 in memory
    np.save(tmp_path / "x.npy", X)
    _same(_fit(tmp_path / "x.npy", y, epochs=3, checkpoint=path, resume=True), full)


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="X: expected an array or the path of a .npy file"):
        _fit(str(tmp_path / "missing.npy"), np.zeros(3, int))
    np.savez(tmp_path / "a.npz", x=np.zeros((3, D)))
    with pytest.raises(ValueError, match="X: expected a .npy file holding one array, got an .npz archive"):
        _fit(tmp_path / "a.npz", np.zeros(3, int))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="X: expected a .npy file, could not read"):
        _fit(tmp_path / "junk.npy", np.zeros(3, int))
    np.save(tmp_path / "i.npy", np.zeros((3, D), np.int32))
    with pytest.raises(TypeError, match="X: expected a floating-point array, got dtype int32"):
        _fit(tmp_path / "i.npy", np.zeros(3, int))


def test_estimators_on_float64_match_float32_input(xy):
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier, MLPRegressor

    X, y = xy
    for solver in ("adam", "lbfgs"):
        kw = {"hidden_layer_sizes": (8,), "max_iter": 5, "random_state": 0, "dtype": "float32", "solver": solver}
        a = MLPClassifier(**kw).fit(X, y)
        b = MLPClassifier(**kw).fit(X.astype(np.float32), y)
        for ca, cb in zip(a.coefs_, b.coefs_):
            assert np.array_equal(ca, cb)
        assert np.array_equal(a.predict_proba(X), b.predict_proba(X.astype(np.float32)))
    kw = {"hidden_layer_sizes": (8,), "max_iter": 5, "random_state": 0, "dtype": "float32", "early_stopping": True}
    a = MLPRegressor(**kw).fit(np.asfortranarray(X), X[:, 0])
    b = MLPRegressor(**kw).fit(X.astype(np.float32), X[:, 0])
    assert a.validation_scores_ == b.validation_scores_
    assert np.array_equal(a.predict(X), b.predict(X.astype(np.float32)))


def test_gathering_rows_of_a_subset_allocates_nothing_after_warmup():
    """The estimators' early-stopping split trains on a subset (Rows with an index): its row numbers
    are composed into a reused buffer, not a new array per batch."""
    import tracemalloc

    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 64))  # float64, read as float32: the staging path too
    rows = data.Rows(X, np.float32).subset(rng.permutation(3000)[:2400])
    source = data.ArraySource(rows, np.arange(2400))
    order = rng.permutation(2400)
    for start in range(0, 2400, 200):  # warm-up: the buffers of one batch size
        source.gather(order[start : start + 200])
    tracemalloc.start()
    try:
        for start in range(0, 2400, 200):
            xb, _ = source.gather(order[start : start + 200])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 8, f"a gather allocated {peak} bytes at its peak"  # one batch of row numbers is 1600
    np.testing.assert_array_equal(xb, X[rows.index[order[2200:]]].astype(np.float32))
