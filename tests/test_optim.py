"""Optimizers: fused kernels against twins, closed forms, torch.optim, clipping, schedules."""

import math

import numpy as np
import pytest
from _helpers import DTYPES, tol

import fastbp
from fastbp import kernels as K
from fastbp import reference as R
from fastbp.optim import SGD, Adam, AdamW, clip_grad_norm
from fastbp.schedules import ConstantLR, CosineLR, ReduceLROnPlateau, StepLR


@pytest.mark.parametrize("version", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17, 1000])
@pytest.mark.parametrize("variant", ["plain", "momentum", "nesterov"])
def test_sgd_kernel_matches_twin(rng, version, dtype, n, variant):
    t = np.dtype(dtype).type
    w, g, buf = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    if variant == "plain":
        buf = buf[:0]
    args = lambda: (w.copy(), g.copy(), buf.copy(), t(0.1), t(0.9), t(0.01), variant == "nesterov")  # noqa: E731
    a, b = args(), args()
    getattr(K.sgd, version)(*a)
    R.sgd(*b)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_allclose(x, y, **tol(dtype))
        assert x.dtype == dtype


@pytest.mark.parametrize("version", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17, 1000])
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_kernel_matches_twin(rng, version, dtype, n, decoupled):
    t = np.dtype(dtype).type
    w, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m, v = rng.standard_normal(n).astype(dtype) * 0.1, rng.random(n).astype(dtype) * 0.1
    scal = (
        t(0.01),
        t(1.2),
        t(1e-8),
        t(0.9),
        t(0.999),
        t(1 - 0.9),
        t(1 - 0.999),
        t(0 if decoupled else 0.01),
        t(0.999 if decoupled else 1),
    )
    a = [w.copy(), g.copy(), m.copy(), v.copy()]
    b = [w.copy(), g.copy(), m.copy(), v.copy()]
    getattr(K.adam, version)(*a, *scal)
    R.adam(*b, *scal)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **tol(dtype))
        assert x.dtype == dtype


def _param(values):
    return fastbp.Parameter(np.array(values, np.float64))


def test_sgd_closed_form():
    p = _param([1.0, -2.0])
    opt = SGD([p], lr=0.1, momentum=0.5)
    p.grad[...] = [1.0, 2.0]
    opt.step()  # buf = g = [1, 2]; w = w - 0.1 buf
    np.testing.assert_allclose(p.data, [0.9, -2.2], rtol=1e-15)
    p.grad[...] = [0.0, 1.0]
    opt.step()  # buf = 0.5 [1, 2] + [0, 1] = [0.5, 2]
    np.testing.assert_allclose(p.data, [0.85, -2.4], rtol=1e-15)
    q = _param([1.0])
    nest = SGD([q], lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1)
    q.grad[...] = [1.0]
    nest.step()  # g = 1 + 0.1*1 = 1.1; buf = 1.1; step = g + 0.5 buf = 1.65
    np.testing.assert_allclose(q.data, [1 - 0.165], rtol=1e-15)


def test_adam_closed_form_first_steps():
    p = _param([1.0, 1.0])
    opt = Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    g1 = np.array([0.5, -3.0])
    p.grad[...] = g1
    opt.step()  # m_hat = g, v_hat = g^2: w -= lr g / (|g| + eps)
    np.testing.assert_allclose(p.data, 1 - 0.01 * g1 / (np.abs(g1) + 1e-8), rtol=1e-14)
    g2 = np.array([1.0, 1.0])
    p.grad[...] = g2
    before = p.data.copy()
    opt.step()
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    expected = before - 0.01 / (1 - 0.9**2) * m / (np.sqrt(v) / math.sqrt(1 - 0.999**2) + 1e-8)
    np.testing.assert_allclose(p.data, expected, rtol=1e-13)


def test_adamw_closed_form_decay_is_decoupled():
    p = _param([2.0])
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad[...] = [0.0]
    opt.step()  # zero gradient: only the decay acts, w *= 1 - lr wd
    np.testing.assert_allclose(p.data, [2.0 * (1 - 0.05)], rtol=1e-15)


TORCH_CASES = [
    (SGD, "SGD", dict(lr=0.05)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    (SGD, "SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    (Adam, "Adam", dict(lr=1e-2)),
    (Adam, "Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    (AdamW, "AdamW", dict(lr=1e-2, weight_decay=0.1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(TORCH_CASES)))
def test_optimizers_match_torch(rng, dtype, case):
    torch = pytest.importorskip("torch")
    cls, tname, kw = TORCH_CASES[case]
    shapes = [(7, 5), (5,)]
    params = [fastbp.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt, topt = cls(params, **kw), getattr(torch.optim, tname)(tparams, **kw)
    for _ in range(20):
        for p, tp in zip(params, tparams):
            g = rng.standard_normal(p.data.shape).astype(dtype)
            p.grad[...] = g
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    # float32: 20 updates of O(1) weights, each rounded at ~6e-8, and torch divides by
    # sqrt(1 - b2^t) where the kernel multiplies by its inverse: allow 1e-5 absolute.
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(
            p.data,
            tp.detach().numpy(),
            rtol=1e-5 if dtype == np.float32 else 1e-12,
            atol=1e-5 if dtype == np.float32 else 1e-13,
        )


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_clip_grad_norm_matches_torch(rng, backend):
    torch = pytest.importorskip("torch")
    params = [fastbp.Parameter(rng.standard_normal(s)) for s in [(4, 3), (3,)]]
    for p in params:
        p.grad[...] = rng.standard_normal(p.data.shape) * 5
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    for p, tp in zip(params, tparams):
        tp.grad = torch.tensor(p.grad.copy())
    norm = clip_grad_norm(params, 1.0, backend=backend)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    np.testing.assert_allclose(norm, tnorm.item(), rtol=1e-12)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
    assert clip_grad_norm(params, 100.0) < 100  # under the limit: unchanged


def test_optimizer_validation():
    p = fastbp.Parameter(np.zeros(3, np.float32))
    for bad, match in (
        (dict(lr=0), "lr: expected a finite number > 0"),
        (dict(lr=float("nan")), "lr"),
        (dict(lr=0.1, momentum=-1), "momentum"),
        (dict(lr=0.1, nesterov=True), "nesterov"),
        (dict(lr=0.1, weight_decay=-0.1), "weight_decay"),
    ):
        with pytest.raises(ValueError, match=match):
            SGD([p], **bad)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas: expected a pair"):
        Adam([p], betas=0.9)
    with pytest.raises(ValueError, match="at least one Parameter"):
        Adam([])
    with pytest.raises(ValueError, match="appears twice"):
        Adam([p, p])
    with pytest.raises(TypeError, match=r"params\[0\]: expected a fastbp Parameter, got ndarray"):
        Adam([np.zeros(3)])


def test_optimizer_follows_rebound_parameter_data():
    p = fastbp.Parameter(np.ones(3, np.float32))
    opt = SGD([p], lr=1.0)
    p.data = np.full(3, 5.0, np.float32)  # rebinding, not in-place
    p.grad[...] = 1
    opt.step()
    np.testing.assert_array_equal(p.data, [4, 4, 4])


def test_optimizer_state_dict_resume(rng):
    def run(split):
        p = fastbp.Parameter(np.linspace(-1, 1, 6).astype(np.float32))
        opt = Adam([p], lr=0.05)
        grads = np.random.default_rng(0).standard_normal((10, 6)).astype(np.float32)
        for i, g in enumerate(grads):
            if i == split:
                sd, data = opt.state_dict(), p.data.copy()
                p = fastbp.Parameter(data)
                opt = Adam([p], lr=0.5)  # different lr: load_state_dict restores it
                opt.load_state_dict(sd)
            p.grad[...] = g
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(None), run(4))


def test_schedules():
    p = fastbp.Parameter(np.zeros(1))
    opt = SGD([p], lr=1.0)
    s = StepLR(opt, step_size=2, gamma=0.5)
    assert [s.step() for _ in range(4)] == [1.0, 0.5, 0.5, 0.25]
    opt.lr = 1.0
    c = CosineLR(opt, total=10, warmup=2)
    assert opt.lr == pytest.approx(1 / 3)
    lrs = [c.step() for _ in range(10)]
    assert lrs[1] == pytest.approx(1.0) and lrs[-1] == pytest.approx(1e-12, abs=1e-11)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    opt.lr = 1.0
    r = ReduceLROnPlateau(opt, factor=0.5, patience=1)
    assert [r.step(m) for m in (1.0, 0.5, 0.6, 0.7, 0.7)] == [1.0, 1.0, 1.0, 0.5, 0.5]
    opt.lr = 0.3
    assert ConstantLR(opt).step() == 0.3
    with pytest.raises(ValueError, match="metric"):
        r.step()
