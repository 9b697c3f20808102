"""A BatchNorm MLP trained 20 steps by fastbp and by PyTorch from the same weights: the same losses."""

import numpy as np
import pytest

import fastbp
from fastbp.optim import decay_groups

torch = pytest.importorskip("torch")

SIZES = [12, 16, 8, 3]
STEPS, BATCH = 20, 16
TOL = {np.float64: 1e-9, np.float32: 1e-4}  # relative, per step's loss


def fastbp_model(dtype, activation):
    act = {"relu": fastbp.ReLU, "gelu": lambda: fastbp.GELU(), "gelu_tanh": lambda: fastbp.GELU(approximate="tanh")}
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(fastbp.Linear(a, b, dtype=dtype, seed=i))
        if i < len(SIZES) - 2:
            layers += [fastbp.BatchNorm1d(b, dtype=dtype), act[activation]()]
    return fastbp.Sequential(*layers)


def torch_model(model, activation):
    act = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh")}
    mods = []
    for layer in model.layers:
        if isinstance(layer, fastbp.Linear):
            lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
            lin.weight.data = torch.tensor(layer.W.data.T.copy())
            lin.bias.data = torch.tensor(layer.b.data.copy())
            mods.append(lin)
        elif isinstance(layer, fastbp.BatchNorm1d):
            mods.append(torch.nn.BatchNorm1d(layer.num_features, dtype=torch.tensor(layer.weight.data).dtype))
        else:
            mods.append(act[activation]())
    return torch.nn.Sequential(*mods)


def optimizers(name, model, tmodel):
    if name == "sgd":
        return fastbp.SGD(model.parameters(), lr=0.05, momentum=0.9), torch.optim.SGD(
            tmodel.parameters(), lr=0.05, momentum=0.9
        )
    # decay on the matrices only, in both libraries
    tw = [p for p in tmodel.parameters() if p.ndim >= 2]
    tr = [p for p in tmodel.parameters() if p.ndim < 2]
    ours = fastbp.AdamW(decay_groups(model.parameters(), 0.01), lr=1e-2)
    theirs = torch.optim.AdamW([{"params": tw, "weight_decay": 0.01}, {"params": tr, "weight_decay": 0.0}], lr=1e-2)
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_twenty_steps_match_pytorch(dtype, optimizer, activation):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((STEPS * BATCH, SIZES[0])).astype(dtype) * 2 + 1
    y = rng.integers(0, SIZES[-1], len(X))
    model = fastbp_model(dtype, activation)
    tmodel = torch_model(model, activation)
    if dtype == np.float32:
        tmodel = tmodel.float()
    opt, topt = optimizers(optimizer, model, tmodel)
    loss = fastbp.SoftmaxCrossEntropy()
    ours, theirs = [], []
    for step in range(STEPS):
        xb, yb = X[step * BATCH : (step + 1) * BATCH], y[step * BATCH : (step + 1) * BATCH]
        ours.append(loss.forward(model(xb), yb))
        model.backward(loss.backward())
        opt.step()
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(tmodel(torch.tensor(xb)), torch.tensor(yb))
        tl.backward()
        topt.step()
        theirs.append(float(tl))
    np.testing.assert_allclose(ours, theirs, rtol=TOL[dtype])
    for layer, mod in zip(model.layers, tmodel):
        if isinstance(layer, fastbp.BatchNorm1d):
            # The Linear bias in front of a BatchNorm has a gradient of exactly 0 in exact arithmetic
            # (the norm removes the mean), so its computed gradient is rounding noise; float32 Adam
            # turns noise into steps of about lr in either direction, in each library differently.
            # The losses cannot see that bias, the running mean can: compared where noise stays noise.
            if not (optimizer == "adamw" and dtype == np.float32):
                np.testing.assert_allclose(layer.running_mean, mod.running_mean.numpy(), rtol=TOL[dtype], atol=1e-6)
            np.testing.assert_allclose(layer.running_var, mod.running_var.numpy(), rtol=TOL[dtype], atol=1e-6)
    if optimizer == "adamw" and dtype == np.float32:
        return  # eval mode reads the running mean: see above
    xt = X[:BATCH]
    tmodel.eval()
    np.testing.assert_allclose(
        model.predict(xt), tmodel(torch.tensor(xt)).detach().numpy(), rtol=TOL[dtype] * 10, atol=1e-5
    )
