"""The examples in fastbp's docstrings, run as doctests (one test per docstring).

Every module of the package is imported and searched with ``doctest.DocTestFinder``.
A module that cannot be imported because an optional dependency is missing
(scikit-learn for ``fastbp.sklearn``, torch, matplotlib, ...) is skipped, as
``pytest.importorskip`` would; any other import error fails.
"""

import copy
import doctest
import importlib
import inspect
import pkgutil
import pydoc

import pytest

import fastbp

OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS

# Top-level names of the optional dependencies whose absence skips a module.
OPTIONAL = {"sklearn", "torch", "matplotlib", "pandas", "tqdm"}


def _missing_optional(exc):
    """The optional dependency whose absence raised ``exc`` (following its causes), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in OPTIONAL:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


def _module_names():
    # onerror: a package that fails to import is still listed (and reported below);
    # only its submodules cannot be walked.
    found = pkgutil.walk_packages(fastbp.__path__, "fastbp.", onerror=lambda name: None)
    return ["fastbp"] + sorted(m.name for m in found if not m.name.endswith(".__main__"))


def _collect():
    """``(params, examples)``: one pytest param per docstring with examples, per skipped or broken module."""
    finder = doctest.DocTestFinder()
    params, examples = [], 0
    for name in _module_names():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            dep = _missing_optional(exc)
            if dep is None:
                params.append(pytest.param(exc, id=name))  # fails in the test, with the error
            else:
                params.append(
                    pytest.param(
                        None, id=name, marks=pytest.mark.skip(reason=f"could not import {dep!r}, which {name} needs")
                    )
                )
            continue
        for test in sorted(finder.find(module), key=lambda t: t.name):
            if test.examples:
                params.append(pytest.param(test, id=test.name))
                examples += len(test.examples)
    return params, examples


PARAMS, N_EXAMPLES = _collect()


@pytest.mark.parametrize("test", PARAMS)
def test_docstring_examples(test):
    if isinstance(test, BaseException):
        raise test
    test = copy.copy(test)
    test.globs = dict(test.globs)  # the runner clears the globals it ran in; keep the collected ones
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = []
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


def test_examples_were_collected():
    assert N_EXAMPLES > 0
    names = {p.id for p in PARAMS}
    assert "fastbp.model.Sequential" in names
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return
    # The estimators' docstrings are assembled; their examples must still be found.
    assert {"fastbp.sklearn._estimators.MLPClassifier", "fastbp.sklearn._estimators.MLPRegressor"} <= names


def _documented_parameters(doc):
    """The names listed in the numpydoc ``Parameters`` section of ``doc``."""
    lines = inspect.cleandoc(doc).splitlines()
    start = lines.index("Parameters") + 2
    assert lines[start - 1].startswith("---")
    names = []
    for line in lines[start:]:
        if line and not line[0].isspace():
            if set(line) == {"-"}:  # the underline of the next section: its title was the line before
                names.pop()
                break
            names += [n.strip() for n in line.split(" : ")[0].split(",") if n.strip()]
    return names


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_estimator_docstring_documents_every_parameter(name):
    pytest.importorskip("sklearn")
    import fastbp.sklearn

    cls = getattr(fastbp.sklearn, name)
    assert cls.__doc__, f"{name}.__doc__ is empty"
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    documented = _documented_parameters(cls.__doc__)
    assert sorted(documented) == sorted(params), (
        f"missing: {sorted(set(params) - set(documented))}, not parameters: {sorted(set(documented) - set(params))}"
    )
    shown = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    for section in ("Parameters", "Attributes", "Examples"):
        assert section in shown
    assert all(p in shown for p in params)
