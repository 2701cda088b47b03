"""``python -m ea_vae``: the ``ea-vae`` command line (see :mod:`ea_vae.cli`)."""

import sys

from .cli import main

sys.exit(main())
