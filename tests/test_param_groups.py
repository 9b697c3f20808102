"""Optimizer parameter groups, as PyTorch's: per-group hyperparameters, schedules on every group, files."""

import numpy as np
import pytest

import fastbp
from fastbp.optim import SGD, Adam, AdamW, decay_groups
from fastbp.schedules import CosineLR, ReduceLROnPlateau, StepLR


def params(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return [fastbp.Parameter(rng.standard_normal(s).astype(np.float32)) for s in [(4, 3), (3,), (2, 2)][:n]]


def grads(ps, seed):
    rng = np.random.default_rng(seed)
    for p in ps:
        p.grad[...] = rng.standard_normal(p.data.shape)


@pytest.mark.parametrize(
    "cls, a, b",
    [
        (SGD, dict(lr=0.1, momentum=0.9), dict(lr=0.01, momentum=0.5, weight_decay=0.1, nesterov=True)),
        (Adam, dict(lr=1e-2), dict(lr=1e-3, betas=(0.8, 0.99), weight_decay=0.1, eps=1e-6)),
        (AdamW, dict(lr=1e-2, weight_decay=0.05), dict(lr=1e-3, weight_decay=0.0)),
    ],
)
def test_groups_step_exactly_as_separate_optimizers(cls, a, b):
    grouped, first, second = params(), params(), params()
    opt = cls([{"params": grouped[:2], **a}, {"params": grouped[2:], **b}], lr=a["lr"])
    separate = [cls(first[:2], **a), cls(second[2:], **b)]
    for step in range(5):
        for ps in (grouped, first, second):
            grads(ps, step)
        opt.step()
        for o in separate:
            o.step()
    for got, want in zip(grouped, first[:2] + second[2:]):
        np.testing.assert_array_equal(got.data, want.data)


def test_group_entries_override_the_defaults_and_attributes_read_the_first_group():
    ps = params()
    opt = AdamW([{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0, "lr": 0.5}], lr=0.1, weight_decay=0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]
    assert opt.lr == 0.1 and opt.params == ps
    opt.lr = 0.3  # setting the attribute sets every group
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]


def test_schedules_act_on_every_group_from_its_own_rate():
    ps = params()
    opt = SGD([{"params": ps[:1], "lr": 1.0}, {"params": ps[1:], "lr": 0.1}], lr=1.0)
    s = StepLR(opt, step_size=1, gamma=0.5)
    s.step()
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.05]
    opt = SGD([{"params": ps[:1], "lr": 1.0}, {"params": ps[1:], "lr": 0.1}], lr=1.0)
    CosineLR(opt, total=4, warmup=1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05])
    opt = SGD([{"params": ps[:1], "lr": 1.0}, {"params": ps[1:], "lr": 0.1}], lr=1.0)
    r = ReduceLROnPlateau(opt, factor=0.5, patience=0)
    r.step(1.0)
    r.step(2.0)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.05]


def test_schedules_match_pytorch_on_two_groups():
    torch = pytest.importorskip("torch")
    ps = params()
    opt = SGD([{"params": ps[:1], "lr": 1.0}, {"params": ps[1:], "lr": 0.1}], lr=1.0)
    tp = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    topt = torch.optim.SGD([{"params": tp[:1], "lr": 1.0}, {"params": tp[1:], "lr": 0.1}], lr=1.0)
    ours, theirs = StepLR(opt, step_size=2, gamma=0.3), torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.3)
    for _ in range(5):
        ours.step()
        topt.step()
        theirs.step()
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in topt.param_groups], rel=1e-12)


def test_adamw_groups_match_pytorch():
    torch = pytest.importorskip("torch")
    ps = [fastbp.Parameter(p.data.astype(np.float64)) for p in params()]
    tp = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in ps]
    opt = AdamW(decay_groups(ps, 0.1), lr=0.01)
    topt = torch.optim.AdamW(
        [{"params": [tp[0], tp[2]], "weight_decay": 0.1}, {"params": [tp[1]], "weight_decay": 0.0}], lr=0.01
    )
    for step in range(10):
        grads(ps, step)
        for p, t in zip(ps, tp):
            t.grad = torch.tensor(p.grad.copy())
        opt.step()
        topt.step()
    for p, t in zip(ps, tp):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_decay_groups_decay_matrices_only():
    model = fastbp.Sequential(fastbp.Linear(3, 4, seed=0), fastbp.Linear(4, 2, seed=1))
    groups = decay_groups(model.parameters(), 0.01)
    assert [p.name for p in groups[0]["params"]] == ["W", "W"] and groups[0]["weight_decay"] == 0.01
    assert [p.name for p in groups[1]["params"]] == ["b", "b"] and groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    "groups, error, message",
    [
        (
            lambda ps: [{"params": ps[:1], "momentum_": 0.9}],
            ValueError,
            r"params\[0\]: unknown option\(s\) \['momentum_'\]",
        ),
        (lambda ps: [{"params": ps[:1]}, ps[1]], TypeError, "got a mix"),
        (lambda ps: [{"lr": 0.1}], ValueError, r"params\[0\]: a parameter group needs a 'params' entry"),
        (lambda ps: [{"params": ps[:1]}, {"params": ps[1:], "lr": -1}], ValueError, r"params\[1\]\['lr'\]: expected"),
        (lambda ps: [{"params": ps[:1]}, {"params": ps[:1]}], ValueError, "appears twice"),
        (lambda ps: [{"params": ps[:1], "nesterov": True}], ValueError, r"params\[0\]: nesterov: requires momentum"),
        (
            lambda ps: [{"params": [np.zeros(2)]}],
            TypeError,
            r"params\[0\]\['params'\]\[0\]: expected a fastbp Parameter",
        ),
    ],
)
def test_bad_groups_are_refused_naming_the_group(groups, error, message):
    with pytest.raises(error, match=message):
        SGD(groups(params()), lr=0.1)


def test_grouped_optimizer_round_trips_through_a_model_file(tmp_path):
    X, y = fastbp.datasets.make_classification(64, 6, 3, seed=0)

    def make():
        model = fastbp.Sequential(fastbp.Linear(6, 8, activation="relu", seed=0), fastbp.Linear(8, 3, seed=1))
        groups = decay_groups(model.parameters(), 0.05)  # not in model.parameters() order
        groups[1]["lr"] = 0.002
        return model, AdamW(groups, lr=0.01)

    def train(model, opt, seed):
        kw = dict(loss=fastbp.SoftmaxCrossEntropy(), optimizer=opt, epochs=2, batch_size=16, seed=seed)
        fastbp.fit(model, X, y, progress=False, **kw)

    straight, opt = make()
    train(straight, opt, 0)
    train(straight, opt, 1)
    resumed, opt2 = make()
    train(resumed, opt2, 0)
    fastbp.save(resumed, tmp_path / "m.npz", optimizer=opt2)
    resumed, opt2 = fastbp.load(tmp_path / "m.npz", with_optimizer=True)
    assert [g["lr"] for g in opt2.param_groups] == [0.01, 0.002]
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.05, 0.0]
    train(resumed, opt2, 1)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
