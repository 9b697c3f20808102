"""The same training step in PyTorch (CPU), for comparison; needs torch."""

from __future__ import annotations

import numpy as np

from ..threads import get_num_threads


class TorchMLP:
    """Forward, cross-entropy, backward and ``torch.optim`` step, from the fastbp model's weights.

    Uses PyTorch's defaults (``torch.optim.SGD``/``Adam`` as constructed with
    just ``lr``, and SGD's ``momentum`` if given) and the same thread count as fastbp.
    """

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3, momentum=0.0):
        import torch  # optional: the ``torch`` extra

        torch.set_num_threads(get_num_threads())
        self.torch = torch
        self.params = []
        for layer in model.layers:
            self.params += [
                torch.tensor(layer.W.data.copy(), requires_grad=True),
                torch.tensor(layer.b.data.copy(), requires_grad=True),
            ]
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(self.params, lr=lr, momentum=momentum)
        elif optimizer == "adam":
            self.opt = torch.optim.Adam(self.params, lr=lr)
        else:
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")

    def step(self):
        torch = self.torch
        h = self.x
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < n_layers - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


class TorchRegularizedMLP:
    """The regularized MLP (:func:`fastbp.bench.mlp.make_regularized_problem`) as a PyTorch user writes it.

    ``torch.nn.Sequential`` of ``nn.Linear``, ``nn.BatchNorm1d``, ``nn.ReLU`` and
    ``nn.Dropout`` from the fastbp model's weights (and its batch-norm settings and
    dropout probability), in the model's dtype; ``nn.functional.cross_entropy``;
    ``torch.optim.SGD(lr=lr, momentum=momentum)`` or ``Adam(lr=lr)`` with their
    defaults otherwise; ``zero_grad()`` (grads set to None), ``backward()``, ``step()``.
    Same thread count as fastbp.
    """

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3, momentum=0.0, seed=0):
        import torch  # optional: the ``torch`` extra
        from torch import nn

        from ..layers import Dropout, Linear, ReLU
        from ..layers.norm import BatchNorm1d

        torch.set_num_threads(get_num_threads())
        torch.manual_seed(seed)
        self.torch = torch
        dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(x.dtype)]
        mods = []
        with torch.no_grad():
            for layer in model.layers:
                if isinstance(layer, Linear):
                    lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.b is not None, dtype=dtype)
                    lin.weight.copy_(torch.from_numpy(layer.W.data.T.copy()))  # torch's weight is (out, in)
                    if layer.b is not None:
                        lin.bias.copy_(torch.from_numpy(layer.b.data.copy()))
                    mods.append(lin)
                elif isinstance(layer, BatchNorm1d):
                    bn = nn.BatchNorm1d(
                        layer.num_features,
                        eps=layer.eps,
                        momentum=layer.momentum,
                        affine=layer.affine,
                        track_running_stats=layer.track_running_stats,
                        dtype=dtype,
                    )
                    if layer.weight is not None and layer.bias is not None:
                        bn.weight.copy_(torch.from_numpy(layer.weight.data.copy()))
                        bn.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
                    mods.append(bn)
                elif isinstance(layer, ReLU):
                    mods.append(nn.ReLU())
                elif isinstance(layer, Dropout):
                    mods.append(nn.Dropout(layer.p))
                else:
                    raise TypeError(f"model: no PyTorch counterpart for {type(layer).__name__}")
        self.net = nn.Sequential(*mods).train()
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        params = self.net.parameters()
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        elif optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=lr)
        else:
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")

    def step(self):
        self.opt.zero_grad()
        loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()


def step_flops(sizes, batch) -> int:
    """Matmul FLOPs of one training step: forward, dW for every layer, dx for all but the first."""
    mac = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (2 * sum(mac) + sum(mac[1:]))
