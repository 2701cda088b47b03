"""`python -m ea_data ...` runs the `ea-data` command line."""

from ea_data.cli import main

if __name__ == "__main__":  # guarded: worker processes import this module too
    raise SystemExit(main())
