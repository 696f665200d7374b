"""hsc-search: Ray Tune + Optuna + MLflow hyperparameter search for the HSC-MAE trainer.

Importing this package starts nothing and imports neither ray nor mlflow; the CLI (`hsc-search`, see `cli.py`)
and `driver.run_search` do the work.
"""

__version__ = "0.1.0"
