"""hsc-search: Ray Tune + Optuna + MLflow hyperparameter search for the HSC-MAE trainer.

Importing this package starts nothing and imports neither ray nor mlflow; the CLI (`hsc-search`, see `cli.py`)
and `driver.run_search` do the work.

It does turn off, for this process and the processes it starts (Ray's workers, the MLflow writer, a team
`mlflow server`), the usage telemetry that MLflow and Ray send to their makers by default: MLflow 3 records
tracking calls (runs created, batches logged) and posts them to its servers, and a Ray head with a dashboard
reports usage stats. A search tool should not phone home on a researcher's behalf, and each record costs the
search's MLflow writer some CPU. A value the user set wins: ``MLFLOW_DISABLE_TELEMETRY=false`` and ``RAY_USAGE_STATS_ENABLED=1`` turn them back on.
"""

import os as _os

__version__ = "0.1.0"

# the user's own RAY_AUTH_MODE, before any ray.init of this process (which sets it to token for a local instance
# of its own): a printed `resume` carries it only when the user ran with it (commands.resume_command)
USER_RAY_AUTH_MODE = _os.environ.get("RAY_AUTH_MODE")

# read by MLflow when it is imported (mlflow/__init__.py starts its telemetry client there) and by Ray when a
# node starts: both must be set before either is imported, hence here
TELEMETRY_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}
for _key, _value in TELEMETRY_DEFAULTS.items():
    _os.environ.setdefault(_key, _value)


def quiet_mlflow_database_errors() -> None:
    """For the programs (the CLI, the writer process), not for a user's own process importing the package: MLflow's
    database store logs every SQLAlchemy error with its traceback before raising it again as an MlflowException,
    which we turn into one line (`runs.http_failure`): a full disk under a sqlite store printed 40 chained
    tracebacks, 3,831 lines, for one cause (a walkthrough)."""
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def prefixed_log_lines() -> None:
    """For the programs (the CLI, the writer process): our modules' warnings and errors as `warning: ...` /
    `error: ...` lines, as the program's own lines read (Python printed them bare, e.g. "cannot record the local
    Ray instance in ..." among the search's lines: a walkthrough)."""
    import logging

    class Prefixed(logging.Formatter):
        def format(self, record):
            return f"{record.levelname.lower()}: {super().format(record)}"

    handler = logging.StreamHandler()  # stderr
    handler.setLevel(logging.WARNING)
    handler.setFormatter(Prefixed("%(message)s"))
    logger = logging.getLogger("hsc_search")
    logger.addHandler(handler)
    logger.propagate = False  # (once: not again by a handler Ray may give the root logger)
