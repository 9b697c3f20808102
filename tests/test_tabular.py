"""Reading a user's table: CSV cells, the task a target implies, class labels."""

import numpy as np
import pytest

from fastbp import datasets, tabular


@pytest.mark.parametrize(
    "y, task",
    [
        (np.array(["cat", "dog", "cat", "bird"] * 10), "classification"),
        (np.array([True, False] * 20), "classification"),
        (np.arange(178) % 3, "classification"),  # wine
        (np.arange(1797) % 10, "classification"),  # digits
        (np.arange(442) % 214 + 25, "regression"),  # diabetes: 214 distinct whole numbers
        (np.linspace(0, 1, 50), "regression"),
        (np.array([0.5, 1.5] * 20), "regression"),  # few values, but not whole numbers
    ],
)
def test_choose_task(y, task):
    assert tabular.choose_task(y)[0] == task


def test_the_class_limit_follows_the_row_count():
    assert tabular.max_classes(40) == 4 and tabular.max_classes(10) == 2 and tabular.max_classes(10**6) == 50
    y = np.arange(100) % 11  # 11 classes in 100 rows: more than one per 10 rows
    assert tabular.choose_task(y)[0] == "regression"
    assert tabular.choose_task(np.tile(y, 2))[0] == "classification"


def test_a_requested_task_wins_and_the_reason_says_so():
    task, why = tabular.choose_task(np.arange(442) % 214, "classification")
    assert task == "classification" and "--task classification" in why and "regression" in why
    with pytest.raises(ValueError, match="task: regression needs a numeric target, got text labels"):
        tabular.choose_task(np.array(["a", "b"]), "regression")


def test_encode_labels_sorts_and_shows_whole_floats_as_ints():
    classes, codes = tabular.encode_labels(np.array(["dog", "cat", "dog"]))
    assert classes == ["cat", "dog"] and codes.tolist() == [1, 0, 1]
    classes, codes = tabular.encode_labels(np.array([2.0, 1.0, 2.0]))
    assert classes == [1, 2] and all(type(c) is int for c in classes) and codes.dtype == np.int64


def _csv(tmp_path, text):
    p = tmp_path / "d.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize("cell", ["", "NA", "nan", "NaN", "?", "null", "N/A"])
def test_missing_cells_name_row_and_column(tmp_path, cell):
    p = _csv(tmp_path, f"a,b,y\n1,2,0\n3,{cell},1\n")
    with pytest.raises(ValueError, match=r"missing value at row 3, column 'b'"):
        datasets.load_csv(p, target="y")


def test_text_targets_short_rows_duplicates_and_text_features(tmp_path):
    X, y, names = datasets.load_csv(_csv(tmp_path, "a,b,y\n1,2,cat\n3,4,dog\n"), target="y")
    assert y.tolist() == ["cat", "dog"] and X.tolist() == [[1, 2], [3, 4]] and names == ["a", "b"]
    with pytest.raises(ValueError, match="row 3 has 2 cells, the header has 3"):
        datasets.load_csv(_csv(tmp_path, "a,b,y\n1,2,0\n3,4\n"), target="y")
    with pytest.raises(ValueError, match=r"duplicate column name\(s\) \['a'\]"):
        datasets.load_csv(_csv(tmp_path, "a,a,y\n1,2,0\n"), target="y")
    with pytest.raises(ValueError, match="column 'b' is not numeric .* encode text columns first"):
        datasets.load_csv(_csv(tmp_path, "a,b,y\n1,red,0\n"), target="y")
    with pytest.raises(ValueError, match="column 'b' is not numeric"):
        datasets.load_csv(_csv(tmp_path, "a,b,y\n1,inf,0\n"), target="y")
    # blank lines (a trailing newline or two) are not rows
    assert datasets.load_csv(_csv(tmp_path, "a,y\n1,0\n\n2,1\n\n"), target="y")[0].shape == (2, 1)
