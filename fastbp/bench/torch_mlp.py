"""The same training step in PyTorch (CPU), for comparison; needs torch."""

from __future__ import annotations

import numpy as np

from ..threads import get_num_threads


class TorchMLP:
    """Forward, cross-entropy, backward and ``torch.optim`` step, from the fastbp model's weights.

    Uses PyTorch's defaults (``torch.optim.SGD``/``Adam`` as constructed with
    just ``lr``) and the same thread count as fastbp.
    """

    def __init__(self, model, x, y, optimizer="sgd", lr=1e-3):
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
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
        self.opt = cls(self.params, lr=lr)

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


def step_flops(sizes, batch) -> int:
    """Matmul FLOPs of one training step: forward, dW for every layer, dx for all but the first."""
    mac = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (2 * sum(mac) + sum(mac[1:]))
