"""Bad input gets a ValueError or TypeError naming the argument, before any kernel runs."""

import numpy as np
import pytest

import fastbp
from fastbp import ops


@pytest.fixture
def layer():
    return fastbp.Linear(4, 3, seed=0)


@pytest.mark.parametrize(
    "x,err,match",
    [
        (np.ones((2, 5), np.float32), ValueError, r"x: expected shape \(batch, 4\), got \(2, 5\)"),
        (np.ones(4, np.float32), ValueError, r"x: expected a 2-D array, got 1-D"),
        (np.ones((2, 4, 1), np.float32), ValueError, r"x: expected a 2-D array, got 3-D"),
        (np.ones((0, 4), np.float32), ValueError, r"x: expected at least one row"),
        (np.ones((2, 4), np.int64), TypeError, r"x: expected a floating-point array, got dtype int64"),
        (np.ones((2, 4), object), TypeError, r"x: expected a floating-point array, got dtype object"),
        (np.ones((2, 4), bool), TypeError, r"x: expected a floating-point array, got dtype bool"),
        (np.ones((2, 4), complex), TypeError, r"x: expected a floating-point array, got dtype complex128"),
        ([["a", "b", "c", "d"]], TypeError, r"x: expected a floating-point array"),
    ],
)
def test_linear_rejects_bad_x(layer, x, err, match):
    with pytest.raises(err, match=match):
        layer.forward(x)


def test_backward_before_forward_and_bad_dy(layer):
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward()
    layer.forward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\)"):
        layer.backward(np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="dy: expected a floating-point array"):
        layer.backward(np.ones((2, 3), np.int32))


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(in_features=0, out_features=3), ValueError, "in_features: expected an int >= 1, got 0"),
        (dict(in_features=2.5, out_features=3), TypeError, "in_features: expected an int >= 1, got float"),
        (dict(in_features=2, out_features=-1), ValueError, "out_features"),
        (dict(in_features=2, out_features=3, activation="swish"), ValueError, "activation: expected one of"),
        (dict(in_features=2, out_features=3, dtype=np.int32), TypeError, "dtype: expected float32 or float64"),
        (dict(in_features=2, out_features=3, dtype=np.float16), TypeError, "dtype: expected float32 or float64"),
        (dict(in_features=2, out_features=3, init="xavier"), ValueError, "init: expected one of"),
        (dict(in_features=2, out_features=3, backend="cuda"), ValueError, "backend: expected one of"),
    ],
)
def test_linear_constructor_checks(kwargs, err, match):
    with pytest.raises(err, match=match):
        fastbp.Linear(**kwargs)


@pytest.mark.parametrize(
    "target,err,match",
    [
        (np.array([0, 1, 5]), ValueError, r"target: expected labels in \[0, 4\), got 5"),
        (np.array([0, -1, 2]), ValueError, r"target: expected labels in \[0, 4\), got -1"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "target: expected integer class labels, got dtype float64"),
        (np.array([0, 1]), ValueError, "target: expected 3 labels"),
        (np.ones((3, 4)), ValueError, "target: expected rows summing to 1"),
        (np.full((3, 4), -0.25), ValueError, "target: expected finite non-negative probabilities"),
        (np.full((3, 4), np.nan), ValueError, "target: expected finite non-negative probabilities"),
        (np.full((3, 5), 0.2), ValueError, r"target: expected shape \(3, 4\)"),
        (np.zeros((3, 4, 1)), ValueError, "target: expected integer labels"),
    ],
)
def test_softmax_cross_entropy_rejects_bad_targets(target, err, match):
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(err, match=match):
        fastbp.SoftmaxCrossEntropy()(z, target)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(weight=[1.0, 2.0]), ValueError, r"weight: expected shape \(4,\)"),
        (dict(weight=[1.0, -2.0, 1.0, 1.0]), ValueError, "weight: expected finite non-negative"),
        (dict(weight=[0.0, 0.0, 0.0, 0.0]), ValueError, "weights sum to 0"),
        (dict(label_smoothing=1.0), ValueError, r"label_smoothing: expected a number in \[0.0, 1.0\), got 1.0"),
        (dict(reduction="avg"), ValueError, "reduction: expected one of"),
    ],
)
def test_softmax_cross_entropy_rejects_bad_options(kwargs, err, match):
    with pytest.raises(err, match=match):
        ops.softmax_cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]), **kwargs)


def test_loss_shape_and_range_checks():
    with pytest.raises(ValueError, match=r"target: expected shape \(2, 3\) to match pred"):
        fastbp.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"target: expected values in \[0, 1\]"):
        fastbp.BCEWithLogits()(np.zeros((2, 3)), np.full((2, 3), 2.0))
    with pytest.raises(RuntimeError, match="before forward"):
        fastbp.MSELoss().backward()
    with pytest.raises(ValueError, match="logits: expected at least one row"):
        fastbp.SoftmaxCrossEntropy()(np.zeros((0, 3)), np.zeros(0, np.int64))


def test_ops_dtype_and_shape_mismatch():
    x32 = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="W: expected dtype float32 to match x, got float64"):
        ops.linear_forward(x32, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"W: expected shape \(3, out\)"):
        ops.linear_forward(x32, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"b: expected shape \(2,\)"):
        ops.linear_forward(x32, np.ones((3, 2), np.float32), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="b: expected dtype float32"):
        ops.linear_forward(x32, np.ones((3, 2), np.float32), np.ones(2))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 2\)"):
        ops.linear_backward(np.ones((2, 3), np.float32), x32, np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous float32 array of shape \(2, 3\)"):
        ops.relu(x32, out=np.empty((3, 2), np.float32))
    with pytest.raises(ValueError, match="y: expected shape"):
        ops.softmax_backward(np.ones((2, 4)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"G: expected shape \(2, 2\)"):
        ops.matmul_backward(np.ones((2, 3)), np.ones((3, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"B: expected shape \(3, n\)"):
        ops.matmul_backward(np.ones((2, 3)), np.ones((2, 2)))


def test_sequential_checks():
    with pytest.raises(ValueError, match="at least one layer"):
        fastbp.Sequential()
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a fastbp Layer, got str"):
        fastbp.Sequential(fastbp.ReLU(), "relu")
    with pytest.raises(TypeError, match="one dtype"):
        fastbp.Sequential(fastbp.Linear(2, 2), fastbp.ReLU(dtype=np.float64))
    m = fastbp.Sequential(fastbp.Linear(2, 3, seed=0))
    sd = m.state_dict()
    with pytest.raises(ValueError, match="keys do not match"):
        m.load_state_dict({"0.W": sd["0.W"]})
    with pytest.raises(ValueError, match=r"state\['0.W'\]: expected shape \(2, 3\)"):
        m.load_state_dict({"0.W": np.ones((3, 2), np.float32), "0.b": sd["0.b"]})
    with pytest.raises(TypeError, match=r"state\['0.b'\]: expected dtype float32"):
        m.load_state_dict({"0.W": sd["0.W"], "0.b": np.zeros(3)})
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(np.ones((2, 2), np.float32), batch_size=0)


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy warns about the inf/NaN we feed
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_nan_and_inf_inputs_propagate_not_crash(backend):
    """NaN/inf in inputs are not an error: they propagate to the outputs, as in numpy and PyTorch."""
    layer = fastbp.Linear(3, 2, activation="relu", seed=0, backend=backend)
    x = np.array([[np.nan, 0, 0], [1, 2, 3]], np.float32)
    y = layer.forward(x)
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()
    loss, g = ops.softmax_cross_entropy(np.array([[np.inf, 0.0], [1.0, 2.0]]), np.array([0, 1]), backend=backend)
    assert np.isnan(loss) and np.isnan(g[0]).all() and np.isfinite(g[1]).all()


# -- the declared-constraint mechanism itself ------------------------------------


def test_constraints_accept_python_and_numpy_numbers_and_convert():
    from fastbp import _validate as v

    assert v.check(np.int64(3), "n", v.POSITIVE_INT) == 3 and type(v.check(np.int64(3), "n", v.POSITIVE_INT)) is int
    assert type(v.check(np.float32(0.5), "lr", v.POSITIVE)) is float
    assert v.check(np.bool_(True), "flag", v.Boolean()) is True
    assert v.check(None, "n_threads", v.NoneValue(), v.POSITIVE_INT) is None
    assert v.check(float("inf"), "n_iter_no_change", v.POSITIVE_INT, v.Options(float("inf"))) == float("inf")


@pytest.mark.parametrize(
    "value,constraints,err,message",
    [
        (0, "POSITIVE_INT", ValueError, "n: expected an int >= 1, got 0"),
        (True, "POSITIVE_INT", TypeError, "n: expected an int >= 1, got bool True"),
        (2.0, "POSITIVE_INT", TypeError, "n: expected an int >= 1, got float 2.0"),
        (float("nan"), "POSITIVE", ValueError, "n: expected a finite number > 0, got nan"),
        (float("inf"), "NON_NEGATIVE", ValueError, "n: expected a finite number >= 0, got inf"),
        ("1", "NON_NEGATIVE", TypeError, "n: expected a finite number >= 0, got str '1'"),
    ],
)
def test_constraint_errors_name_argument_expectation_and_value(value, constraints, err, message):
    from fastbp import _validate as v

    with pytest.raises(err) as info:
        v.check(value, "n", getattr(v, constraints))
    assert str(info.value) == message


def test_interval_ends_and_options():
    import numbers

    from fastbp import _validate as v

    half_open = v.Interval(numbers.Real, 0, 1, "left")
    assert half_open.accepts(0) and half_open.accepts(0.999) and not half_open.accepts(1.0)
    assert str(half_open) == "a number in [0, 1)"
    with pytest.raises(ValueError, match=r"p: expected a number in \(0, 1\], got 0"):
        v.check(0, "p", v.Interval(numbers.Real, 0, 1, "right"))
    with pytest.raises(ValueError, match="mode: expected one of 'a', 'b', got 'c'"):
        v.check("c", "mode", v.Options("a", "b"))
    with pytest.raises(TypeError, match="mode: expected one of 'a', 'b', got ndarray"):
        v.check(np.zeros(2), "mode", v.Options("a", "b"))  # never an elementwise comparison
    assert v.check_params({"a": 1, "b": "x"}, {"a": [v.POSITIVE_INT], "b": [v.Options("x")]}) == {"a": 1, "b": "x"}
