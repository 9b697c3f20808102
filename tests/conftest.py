import signal

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def default_sigint():
    """Python's default SIGINT handler for the test, whatever the process inherited; restored afterwards.

    A process started in the background by a non-interactive shell (``cmd &``, some CI
    runners) inherits SIGINT ignored, so "the handler after fit is the default one" only
    held when pytest ran in a terminal. With this fixture the Ctrl-C tests see what a
    terminal user has, and "restored" means exactly the handler installed before fit.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
