"""`python -m ea_captions` runs the `ea-captions` command line (see :mod:`ea_captions.cli`)."""

from ea_captions.cli import main

raise SystemExit(main())
