"""fastbp.torch: PyTorch models to fastbp and back.

What is checked, for every supported module and for seeded random architectures:

- torch -> fastbp -> torch: the same module classes, modes and public attributes (the
  hyperparameters), and every state_dict tensor equal byte for byte;
- fastbp -> torch -> fastbp: the same layer classes, configs, modes and dtypes, and every
  state_dict array equal byte for byte;
- the outputs of both models in eval mode, at batch 1 and 7: ``max|fastbp - torch| / max|torch|``
  at most 1e-12 in float64 and 1e-5 in float32 (about 80 float32 ulps of the largest output);
  the torch model rebuilt from the fastbp one computes exactly what the original did;
- a model converted from torch and trained 5 SGD steps in fastbp: the same losses as in
  torch to 1e-10 (float64), and the same weights after;
- the errors: wrong argument types, unsupported modules and settings, dtypes.
"""

import copy
import importlib
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import fastbp

torch = pytest.importorskip("torch")
import fastbp.torch as ft  # noqa: E402

nn = torch.nn
TDTYPE = {np.float32: torch.float32, np.float64: torch.float64}
TOL = {np.float32: 1e-5, np.float64: 1e-12}  # max abs error relative to the largest output


# -- helpers ---------------------------------------------------------------------------------------------------


def leaves(module):
    """A torch model's modules in forward order, nested Sequentials flattened."""
    if type(module) is nn.Sequential:
        return [leaf for child in module for leaf in leaves(child)]
    return [module]


def hyper(m):
    """A module's class, mode and public attributes: its hyperparameters (``inplace`` and ``dim`` included)."""
    return type(m), m.training, {k: a for k, a in vars(m).items() if not k.startswith("_") and k != "training"}


def assert_same_bytes(a: np.ndarray, b: np.ndarray, what):
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), what


def assert_same_torch(a, b):
    """Same leaves (classes, modes, hyperparameters) and every state_dict tensor equal, bit for bit."""
    la, lb = leaves(a), leaves(b)
    assert [hyper(m) for m in la] == [hyper(m) for m in lb]
    for i, (ma, mb) in enumerate(zip(la, lb)):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert list(sa) == list(sb), i
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (i, k)
            assert_same_bytes(sa[k].numpy(), sb[k].numpy(), (i, k))


def assert_same_fastbp(a, b):
    """Same layer classes, configs, modes and dtypes, and every parameter and buffer equal, bit for bit."""
    assert [type(layer) for layer in a.layers] == [type(layer) for layer in b.layers]
    assert [layer.config() for layer in a.layers] == [layer.config() for layer in b.layers]
    assert [layer.training for layer in a.layers] == [layer.training for layer in b.layers]
    assert [layer.dtype for layer in a.layers] == [layer.dtype for layer in b.layers]
    assert a.dtype == b.dtype
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert_same_bytes(sa[k], sb[k], k)


def torch_out(tmodel, x):
    """The eval-mode output of a copy of ``tmodel`` (the model's own modes are left alone)."""
    t = copy.deepcopy(tmodel).eval()
    with torch.no_grad():
        return t(torch.from_numpy(x)).numpy()


def eval_forward(model, x):
    """fastbp's eval-mode forward (a copy), the model's modes restored after."""
    modes = [layer.training for layer in model.layers]
    model.eval()
    try:
        return model.forward(x).copy()
    finally:
        for layer, mode in zip(model.layers, modes):
            layer.train(mode)


def in_width(model):
    first = model.layers[0]
    return getattr(first, "in_features", None) or 5


def assert_outputs_agree(model, tmodel, dtype, rng, batches=(1, 7)):
    n_in = in_width(model)
    for n in batches:
        x = (rng.standard_normal((n, n_in)) * 2 + 0.5).astype(dtype)
        theirs = torch_out(tmodel, x)
        assert theirs.dtype == dtype
        scale = max(float(np.abs(theirs).max()), np.finfo(dtype).tiny)
        for ours in (model.predict(x), eval_forward(model, x)):
            assert ours.dtype == dtype and ours.shape == theirs.shape
            err = float(np.abs(ours.astype(np.float64) - theirs).max()) / scale
            assert err <= TOL[dtype], (n, err)


def warm_up(tmodel, n_in, dtype, seed, steps=3):
    """Nontrivial norm weights, then a few SGD steps in training mode (running statistics move)."""
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    with torch.no_grad():
        for m in leaves(tmodel):
            if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    tmodel.train()
    params = list(tmodel.parameters())
    opt = torch.optim.SGD(params, lr=0.05) if params else None
    for _ in range(steps):
        x = torch.from_numpy(gen.standard_normal((8, n_in)) * 2 + 1).to(TDTYPE[dtype])
        out = tmodel(x)
        if opt is not None:
            opt.zero_grad()
            (out**2).mean().backward()
            opt.step()
    return tmodel


def check_torch_model(tmodel, dtype, seed, batches=(1, 7)):
    """Every check of a torch model: both round trips and the outputs. Returns the fastbp model."""
    model = ft.from_torch(tmodel, seed=seed)
    has_tensors = any(t.is_floating_point() for t in tmodel.state_dict().values())
    assert model.dtype == (np.dtype(dtype) if has_tensors else None)
    back = ft.to_torch(model)
    assert_same_torch(tmodel, back)
    assert_same_fastbp(model, ft.from_torch(back))
    rng = np.random.default_rng(seed)
    assert_outputs_agree(model, tmodel, dtype, rng, batches)
    x = rng.standard_normal((7, in_width(model))).astype(dtype)
    np.testing.assert_array_equal(torch_out(back, x), torch_out(tmodel, x))  # the same module, the same weights
    return model


# -- every supported module ---------------------------------------------------------------------------------------

MODULES = {
    "relu": lambda n: nn.ReLU(),
    "relu_inplace": lambda n: nn.ReLU(inplace=True),
    "sigmoid": lambda n: nn.Sigmoid(),
    "tanh": lambda n: nn.Tanh(),
    "leaky_relu": lambda n: nn.LeakyReLU(0.2),
    "leaky_relu_negative": lambda n: nn.LeakyReLU(-0.3),
    "elu": lambda n: nn.ELU(alpha=0.7),
    "gelu": lambda n: nn.GELU(),
    "gelu_tanh": lambda n: nn.GELU(approximate="tanh"),
    "silu": lambda n: nn.SiLU(),
    "softplus": lambda n: nn.Softplus(beta=2.0, threshold=3.0),
    "softmax_1": lambda n: nn.Softmax(dim=1),
    "softmax_-1": lambda n: nn.Softmax(dim=-1),
    "identity": lambda n: nn.Identity(),
    "dropout": lambda n: nn.Dropout(0.3),
    "batchnorm": lambda n: nn.BatchNorm1d(n),
    "batchnorm_settings": lambda n: nn.BatchNorm1d(n, eps=1e-3, momentum=None),
    "batchnorm_no_affine": lambda n: nn.BatchNorm1d(n, affine=False),
    "batchnorm_no_stats": lambda n: nn.BatchNorm1d(n, track_running_stats=False),
    "layernorm": lambda n: nn.LayerNorm(n, eps=1e-4),
    "layernorm_no_affine": lambda n: nn.LayerNorm(n, elementwise_affine=False),
    "linear_no_bias": lambda n: nn.Linear(n, n, bias=False),
    "standardize": lambda n: ft.Standardize(np.linspace(-1, 2, n), np.linspace(0.5, 3, n)),
    "standardize_inverse": lambda n: ft.Standardize(np.linspace(-1, 2, n), np.linspace(0.5, 3, n), inverse=True),
}
FUSED = {
    "relu": ("relu", {}),
    "relu_inplace": ("relu", {}),
    "sigmoid": ("sigmoid", {}),
    "tanh": ("tanh", {}),
    "leaky_relu": ("leaky_relu", {"negative_slope": 0.2}),
    "leaky_relu_negative": ("leaky_relu", {"negative_slope": -0.3}),
    "elu": ("elu", {"alpha": 0.7}),
    "gelu": ("gelu", {"approximate": "none"}),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}),
    "silu": ("silu", {}),
    "softplus": ("softplus", {"beta": 2.0, "threshold": 3.0}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(MODULES))
def test_every_supported_module_round_trips(name, dtype):
    # The module first (after no Linear: a layer of its own) and after a Linear (fused, for an activation).
    make = MODULES[name]
    tmodel = nn.Sequential(make(5), nn.Linear(5, 6), make(6), nn.Linear(6, 4)).to(TDTYPE[dtype])
    warm_up(tmodel, 5, dtype, seed=len(name))
    tmodel.train(name != "dropout")  # eval mode in one case, so that both modes are carried
    model = check_torch_model(tmodel, dtype, seed=1, batches=(7,) if name == "batchnorm_no_stats" else (1, 7))
    if name in FUSED:
        assert len(model.layers) == 3
        activation, params = FUSED[name]
        assert (model.layers[1].activation, model.layers[1].activation_params) == (activation, params)
    else:
        assert len(model.layers) == 4 and model.layers[1].activation is None
    assert all(layer.training == (name != "dropout") for layer in model.layers)


# -- random architectures ------------------------------------------------------------------------------------------

POOL = [
    lambda n, r: nn.Sigmoid(),
    lambda n, r: nn.Tanh(),
    lambda n, r: nn.LeakyReLU(float(r.uniform(-0.5, 0.5))),
    lambda n, r: nn.ELU(float(r.uniform(0.1, 2.0))),
    lambda n, r: nn.GELU(approximate=str(r.choice(["none", "tanh"]))),
    lambda n, r: nn.SiLU(),
    lambda n, r: nn.Softplus(beta=float(r.uniform(0.5, 3.0)), threshold=float(r.uniform(1.0, 20.0))),
    lambda n, r: nn.Identity(),
    lambda n, r: nn.Dropout(float(r.uniform(0.0, 0.6))),
    lambda n, r: nn.BatchNorm1d(n, momentum=[0.1, 0.3, None][r.integers(3)], affine=bool(r.integers(2))),
    lambda n, r: nn.LayerNorm(n, eps=float(r.choice([1e-5, 1e-3])), elementwise_affine=bool(r.integers(2))),
]


def random_torch(r):
    widths = [int(w) for w in r.integers(1, 10, int(r.integers(2, 6)))]
    mods = []
    if r.random() < 0.3:
        mods.append(ft.Standardize(r.normal(size=widths[0]), r.uniform(0.5, 2.0, widths[0])))
    for a, b in zip(widths[:-1], widths[1:]):
        mods.append(nn.Linear(a, b, bias=bool(r.random() < 0.8)))
        if r.random() < 0.3:
            mods.append(nn.ReLU(inplace=bool(r.integers(2))))  # in place right after the Linear only
        for _ in range(int(r.integers(0, 3))):
            mods.append(POOL[r.integers(len(POOL))](b, r))
    if r.random() < 0.3:
        mods.append(nn.Softmax(dim=int(r.choice([1, -1]))))
    if len(mods) > 2 and r.random() < 0.5:  # nest a slice, flattened by from_torch
        i, j = sorted(int(k) for k in r.choice(len(mods) + 1, 2, replace=False))
        mods = mods[:i] + [nn.Sequential(*mods[i:j])] + mods[j:]
    return nn.Sequential(*mods), widths[0]


def test_random_torch_architectures():
    for seed in range(16):
        r = np.random.default_rng(seed)
        dtype = [np.float32, np.float64][seed % 2]
        tmodel, n_in = random_torch(r)
        warm_up(tmodel.to(TDTYPE[dtype]), n_in, dtype, seed)
        for m in leaves(tmodel):
            m.train(bool(r.integers(2)))  # each module its own mode, carried across
        check_torch_model(tmodel, dtype, seed)


ACTIVATIONS = [
    None,
    "identity",
    "relu",
    "sigmoid",
    "tanh",
    "leaky_relu",
    "elu",
    "gelu",
    "gelu_tanh",
    "silu",
    "softplus",
]


def activation_params(name, r):
    return {
        "leaky_relu": lambda: {"negative_slope": float(r.uniform(-0.5, 0.5))},
        "elu": lambda: {"alpha": float(r.uniform(0.1, 2.0))},
        "gelu": lambda: {"approximate": str(r.choice(["none", "tanh"]))},
        "softplus": lambda: {"beta": float(r.uniform(0.5, 3.0)), "threshold": float(r.uniform(1.0, 20.0))},
    }.get(name, lambda: None)()


def random_fastbp(r, dtype):
    def free():  # layers without parameters: sometimes a dtype all the same
        return dtype if r.random() < 0.3 else None

    standalone = [
        lambda n: fastbp.ReLU(free()),
        lambda n: fastbp.Sigmoid(free()),
        lambda n: fastbp.Tanh(free()),
        lambda n: fastbp.LeakyReLU(float(r.uniform(-0.5, 0.5)), dtype=free()),
        lambda n: fastbp.ELU(float(r.uniform(0.1, 2.0)), dtype=free()),
        lambda n: fastbp.GELU(str(r.choice(["none", "tanh"])), dtype=free()),
        lambda n: fastbp.SiLU(free()),
        lambda n: fastbp.Softplus(float(r.uniform(0.5, 3.0)), float(r.uniform(1.0, 20.0)), dtype=free()),
        lambda n: fastbp.Identity(free()),
        lambda n: fastbp.Dropout(float(r.uniform(0.0, 0.6)), seed=int(r.integers(2**63)), dtype=free()),
        lambda n: fastbp.BatchNorm1d(n, momentum=[0.1, None][r.integers(2)], affine=bool(r.integers(2)), dtype=dtype),
        lambda n: fastbp.LayerNorm(n, elementwise_affine=bool(r.integers(2)), dtype=dtype),
    ]
    widths = [int(w) for w in r.integers(1, 10, int(r.integers(2, 6)))]
    layers = []
    if r.random() < 0.3:
        layers.append(fastbp.Standardize(r.normal(size=widths[0]), r.uniform(0.5, 2.0, widths[0]), dtype=dtype))
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        act = ACTIVATIONS[r.integers(len(ACTIVATIONS))]
        layers.append(
            fastbp.Linear(
                a,
                b,
                bias=bool(r.random() < 0.8),
                activation=act,
                activation_params=activation_params(act, r),
                init=str(r.choice(["he", "glorot"])),
                dtype=dtype,
                seed=i,
            )
        )
        for _ in range(int(r.integers(0, 3))):  # after a Linear too: they stay layers of their own
            layers.append(standalone[r.integers(len(standalone))](b))
    if r.random() < 0.3:
        layers.append(fastbp.Standardize(r.normal(size=widths[-1]), r.uniform(0.5, 2.0, widths[-1]), inverse=True))
    elif r.random() < 0.3:
        layers.append(fastbp.Softmax())
    model = fastbp.Sequential(*layers)
    # A few steps in training: running statistics, dropout steps and weights move.
    opt = fastbp.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        model(r.standard_normal((8, widths[0])) * 2 + 1)
        model.backward()
        opt.step()
    for layer in model.layers:
        layer.train(bool(r.integers(2)))
    return model


def test_random_fastbp_architectures():
    for seed in range(16):
        r = np.random.default_rng(100 + seed)
        dtype = [np.float32, np.float64][seed % 2]
        model = random_fastbp(r, dtype)
        tmodel = ft.to_torch(model)
        again = ft.from_torch(tmodel)
        assert_same_fastbp(model, again)
        assert_same_torch(tmodel, ft.to_torch(again))
        assert_outputs_agree(model, tmodel, dtype, r)


# -- fusion, modes, copies, dropout seeds ----------------------------------------------------------------------------


def test_fusion_can_be_turned_off_and_separate_layers_stay_separate():
    tmodel = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.GELU(), nn.Sigmoid())
    fused = ft.from_torch(tmodel)
    assert [type(layer) for layer in fused.layers] == [fastbp.Linear, fastbp.Linear, fastbp.Sigmoid]
    assert [layer.activation for layer in fused.layers[:2]] == ["tanh", "gelu"]
    separate = ft.from_torch(tmodel, fuse=False)
    assert [type(layer) for layer in separate.layers] == [
        fastbp.Linear,
        fastbp.Tanh,
        fastbp.Linear,
        fastbp.GELU,
        fastbp.Sigmoid,
    ]
    assert all(layer.activation is None for layer in separate.layers if isinstance(layer, fastbp.Linear))
    # to_torch gives both the user's five modules; the separate layers come back separate even with fuse=True.
    for model in (fused, separate):
        assert_same_torch(tmodel, ft.to_torch(model))
    assert_same_fastbp(separate, ft.from_torch(ft.to_torch(separate)))


def test_gelu_tanh_keeps_its_name():
    model = fastbp.Sequential(fastbp.Linear(3, 4, activation="gelu_tanh", seed=0))
    tmodel = ft.to_torch(model)
    assert type(tmodel[1]) is nn.GELU and tmodel[1].approximate == "tanh"
    assert ft.from_torch(tmodel).layers[0].config() == model.layers[0].config()
    # A plain nn.GELU("tanh") is fastbp's gelu with approximate="tanh": the same kernel code.
    plain = ft.from_torch(nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh"))).layers[0]
    assert (plain.activation, plain.activation_params) == ("gelu", {"approximate": "tanh"})
    assert plain.act_code == model.layers[0].act_code


def test_single_modules_are_accepted():
    lin = nn.Linear(3, 2).double()
    model = ft.from_torch(lin)
    assert len(model.layers) == 1 and model.dtype == np.float64
    np.testing.assert_array_equal(model.layers[0].W.data, lin.weight.detach().numpy().T)
    assert ft.to_torch(model.layers[0])[0].weight.dtype == torch.float64  # one fastbp layer, too
    assert type(ft.from_torch(nn.ReLU()).layers[0]) is fastbp.ReLU


def test_modes_are_carried_both_ways():
    tmodel = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Dropout(0.2), nn.Linear(4, 2))
    tmodel[2].eval()
    model = ft.from_torch(tmodel)
    assert [layer.training for layer in model.layers] == [True, False, True, True]
    model.layers[0].eval()
    back = ft.to_torch(model)
    assert [m.training for m in back] == [False, False, False, True, True]
    assert back.training  # some layer trains
    assert not ft.to_torch(model.eval()).training


def test_weights_are_copies_both_ways():
    # Widths of 1: there W.T is C-contiguous already, and a lazy copy would share memory.
    tmodel = nn.Sequential(nn.Linear(1, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    tmodel(torch.randn(4, 1))  # running statistics
    before = {k: t.clone() for k, t in tmodel.state_dict().items()}
    model = ft.from_torch(tmodel)
    for layer in model.layers:
        for p in layer.parameters():
            p.data += 1
        for a in layer.buffers().values():
            a += 1
    for k, t in tmodel.state_dict().items():
        assert torch.equal(t, before[k]), k
    snapshot = model.state_dict()
    back = ft.to_torch(model)
    with torch.no_grad():
        for t in back.state_dict().values():
            t += 1
    for k, a in model.state_dict().items():
        assert_same_bytes(a, snapshot[k], k)


def test_to_torch_leaves_torchs_generator_alone():
    model = fastbp.Sequential(fastbp.Linear(5, 4, seed=0), fastbp.BatchNorm1d(4), fastbp.LayerNorm(4))
    state = torch.random.get_rng_state()
    ft.to_torch(model)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_dropout_seeds():
    tmodel = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 4), nn.Dropout(0.5))

    def seeds(model):
        return [int(a["seed"][0]) for a in (layer.buffers() for layer in model.layers) if "seed" in a]

    assert seeds(ft.from_torch(tmodel, seed=3)) == seeds(ft.from_torch(tmodel, seed=3))
    assert seeds(ft.from_torch(tmodel, seed=3)) != seeds(ft.from_torch(tmodel, seed=4))
    assert len(set(seeds(ft.from_torch(tmodel, seed=3)))) == 2  # one draw per layer
    # A Dropout made by to_torch comes back with its generator state (seed and step), whatever seed says.
    model = fastbp.Sequential(fastbp.Dropout(0.5, seed=11))
    model(np.ones((2, 3)))
    again = ft.from_torch(ft.to_torch(model), seed=5)
    assert_same_fastbp(model, again)
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(model(x), again(x))  # the same next mask


def test_standardize_module_computes_what_the_layer_computes():
    r = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for inverse in (False, True):
            layer = fastbp.Standardize(r.normal(size=6) * 1e3, r.uniform(1e-3, 10.0, 6), inverse=inverse, dtype=dtype)
            module = ft.to_torch(layer)[0]
            assert type(module) is ft.Standardize and module.mean.dtype == TDTYPE[dtype]
            x = (r.standard_normal((9, 6)) * 1e3).astype(dtype)
            np.testing.assert_array_equal(torch_out(module, x), layer.forward(x))  # bit for bit


def test_standardize_module_checks_its_arguments():
    with pytest.raises(ValueError, match="std: expected shape"):
        ft.Standardize([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="std: expected positive"):
        ft.Standardize([0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="mean: expected a non-empty 1-d"):
        ft.Standardize([[0.0]], [[1.0]])
    with pytest.raises(TypeError, match="inverse"):
        ft.Standardize([0.0], [1.0], inverse="yes")
    assert ft.Standardize([0.0], [2.0]).mean.dtype == torch.float32  # lists: torch's default dtype
    assert "in_features=1, inverse=True" in repr(ft.Standardize([0.0], [2.0], inverse=True))


def test_sgd_steps_after_conversion_match_torch():
    torch.manual_seed(0)
    tmodel = nn.Sequential(
        nn.Linear(6, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.0),
        nn.Linear(16, 12),
        nn.GELU(),
        nn.LayerNorm(12),
        nn.Linear(12, 8),
        nn.Softplus(beta=2.0),
        nn.Linear(8, 3),
    ).double()
    warm_up(tmodel, 6, np.float64, seed=0)
    model = ft.from_torch(tmodel)
    opt = fastbp.SGD(model.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9)
    loss = fastbp.SoftmaxCrossEntropy()
    r = np.random.default_rng(1)
    for _ in range(5):
        x, y = r.standard_normal((16, 6)) * 2 + 1, r.integers(0, 3, 16)
        ours = loss.forward(model(x), y)
        model.backward(loss.backward())
        opt.step()
        topt.zero_grad()
        theirs = nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
        theirs.backward()
        topt.step()
        assert abs(ours - theirs.item()) <= 1e-10
    trained = ft.to_torch(model).state_dict()
    for (k, a), b in zip(trained.items(), tmodel.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [lambda: fastbp.Sequential(fastbp.Linear(2, 2)), lambda: np.zeros(3), lambda: None])
def test_from_torch_names_a_wrong_argument(given):
    obj = given()
    with pytest.raises(TypeError, match=r"module: expected a torch\.nn\.Module") as info:
        ft.from_torch(obj)
    assert type(obj).__name__ in str(info.value)


@pytest.mark.parametrize("given", [lambda: nn.Linear(2, 2), lambda: [fastbp.Linear(2, 2)], lambda: "model"])
def test_to_torch_names_a_wrong_argument(given):
    obj = given()
    with pytest.raises(TypeError, match=r"model: expected a fastbp\.Sequential or a fastbp layer") as info:
        ft.to_torch(obj)
    assert type(obj).__qualname__ in str(info.value)


class Custom(nn.Module):
    def forward(self, x):
        return x


class MyLinear(nn.Linear):
    pass


@pytest.mark.parametrize(
    "tmodel, where, cls",
    [
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.Conv1d(1, 1, 1)), "module '1'", "Conv1d"),
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), nn.Flatten())), "module '1.1'", "Flatten"),
        (lambda: nn.Sequential(nn.Linear(3, 3), Custom()), "module '1'", "Custom"),
        (lambda: nn.Sequential(MyLinear(3, 3)), "module '0'", "MyLinear"),
        (lambda: Custom(), "module (Custom)", "Custom"),
        (lambda: nn.ModuleList([nn.Linear(3, 3)]), "module (ModuleList)", "ModuleList"),
        (lambda: nn.Sequential(nn.Dropout1d(0.2)), "module '0'", "Dropout1d"),
    ],
)
def test_unsupported_modules_are_named(tmodel, where, cls):
    with pytest.raises(TypeError) as info:
        ft.from_torch(tmodel())
    message = str(info.value)
    assert where in message and cls in message
    assert "is not supported" in message and "nn.Linear" in message and "nn.BatchNorm1d" in message


@pytest.mark.parametrize(
    "module, match",
    [
        (nn.Softmax(dim=0), "module '1' \\(Softmax\\): expected dim=-1 or dim=1.*got dim=0"),
        (nn.Softmax(), "module '1' \\(Softmax\\): expected dim=-1 or dim=1.*got dim=None"),
        (nn.LayerNorm((2, 3)), "module '1' \\(LayerNorm\\): expected normalized_shape of one int.*\\(2, 3\\)"),
        (nn.LayerNorm(3, bias=False), "module '1' \\(LayerNorm\\): bias=False is not supported"),
        (nn.BatchNorm1d(3, bias=False), "module '1' \\(BatchNorm1d\\): bias=False is not supported"),
        (nn.Softplus(beta=0.0), "module '1' \\(Softplus\\).*beta"),
        (nn.Dropout(0.5), None),  # the control: accepted
    ],
)
def test_unsupported_settings_are_refused(module, match):
    tmodel = nn.Sequential(nn.Linear(3, 3), module)
    if match is None:
        ft.from_torch(tmodel)
        return
    with pytest.raises(ValueError, match=match):
        ft.from_torch(tmodel)


def test_fused_activation_errors_name_both_modules():
    with pytest.raises(ValueError, match="module '1' \\(ELU\\) after module '0' \\(Linear\\).*alpha"):
        ft.from_torch(nn.Sequential(nn.Linear(3, 3), nn.ELU(alpha=float("nan"))))


@pytest.mark.parametrize("bad", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_naming_the_parameter(bad):
    tmodel = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    tmodel[2].to(bad)
    with pytest.raises(TypeError, match=f"module parameter '2.weight': expected float32 or float64, got {bad}"):
        ft.from_torch(tmodel)


def test_mixed_dtypes_are_refused_naming_both():
    tmodel = nn.Sequential(nn.Sequential(nn.Linear(3, 3)), nn.BatchNorm1d(3).double())
    with pytest.raises(
        TypeError, match="one dtype.*torch.float32 \\('0.0.weight'\\) and torch.float64 \\('1.weight'\\)"
    ):
        ft.from_torch(tmodel)
    stand = nn.Sequential(ft.Standardize(np.zeros(3), np.ones(3)), nn.Linear(3, 3))  # a float64 buffer
    with pytest.raises(TypeError, match="'0.mean'.*'1.weight'"):
        ft.from_torch(stand)


def test_shared_weights_are_refused_shared_activations_are_not():
    lin, relu = nn.Linear(3, 3), nn.ReLU()
    with pytest.raises(ValueError, match="module '2' \\(Linear\\): is the same module as '0'"):
        ft.from_torch(nn.Sequential(lin, relu, lin))
    model = ft.from_torch(nn.Sequential(nn.Sigmoid(), relu, nn.Linear(3, 3), relu), fuse=False)
    assert [type(layer) for layer in model.layers] == [fastbp.Sigmoid, fastbp.ReLU, fastbp.Linear, fastbp.ReLU]


def test_reparametrized_weights_are_refused():
    # The weight a module computes with is not its parameter: copying "weight" would be wrong.
    with pytest.raises(ValueError, match="module '0' \\(Linear\\): has a tensor '0.weight_orig'"):
        ft.from_torch(nn.Sequential(nn.utils.spectral_norm(nn.Linear(3, 3))))
    with pytest.raises(TypeError, match="module '0' \\(ParametrizedLinear\\)"):
        ft.from_torch(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 3))))


def test_other_argument_errors():
    with pytest.raises(ValueError, match="module: expected at least one module"):
        ft.from_torch(nn.Sequential(nn.Sequential()))
    with pytest.raises(TypeError, match="fuse: expected True or False, got str"):
        ft.from_torch(nn.Linear(2, 2), fuse="yes")
    with pytest.raises(TypeError, match="seed: expected None or an int"):
        ft.from_torch(nn.Dropout(), seed=1.5)

    class MyReLU(fastbp.ReLU):
        pass

    with pytest.raises(
        TypeError, match="model.layers\\[1\\]: .*MyReLU has no PyTorch counterpart; supported layers: Linear"
    ):
        ft.to_torch(fastbp.Sequential(fastbp.Linear(2, 2), MyReLU()))


def test_the_docs_example_runs():
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "torch_interop.md"
    block = re.search(r"```python\n(.*?)```", doc.read_text(), re.S).group(1)
    ns: dict = {}
    exec(compile(block, "docs/torch_interop.md", "exec"), ns)
    assert [type(layer) for layer in ns["model"].layers] == [
        fastbp.Linear,
        fastbp.BatchNorm1d,
        fastbp.Dropout,
        fastbp.Linear,
    ]
    assert [type(m) for m in ns["back"]] == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert_outputs_agree(ns["model"], ns["back"], np.float32, np.random.default_rng(0))


# -- imports --------------------------------------------------------------------------------------------------------


def test_import_fastbp_does_not_import_torch():
    code = "import sys, fastbp, fastbp.layers, fastbp.io; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ), timeout=120)


def test_import_torch_inside_is_pytorch():
    assert ft.torch is sys.modules["torch"] and ft.nn is torch.nn


def test_without_torch_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    monkeypatch.delitem(sys.modules, "fastbp.torch")
    with pytest.raises(ImportError, match='fastbp.torch needs PyTorch: pip install "fastbp\\[torch\\]"'):
        importlib.import_module("fastbp.torch")
