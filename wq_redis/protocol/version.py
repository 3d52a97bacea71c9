"""The package's version, the one place it is written (pyproject.toml reads it from here).
Workers publish it in their registration, so ``wq-redis status -W`` shows what each runs."""

__version__ = "0.1.0"
