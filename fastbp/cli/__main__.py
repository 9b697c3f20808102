"""``python -m fastbp.cli``: the same as the ``fastbp`` command."""

import sys

from . import main

sys.exit(main())
