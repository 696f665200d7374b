"""HSC-MAE trainer: a self-contained PyTorch implementation (no ray, optuna or mlflow imports).

Public face: `TrainConfig`, `load_data`, `fit`. Run alone with `python -m trainer --config FILE --data SPEC`.
"""

from .config import ConfigError, TrainConfig
from .data import AVData, DataError, Split, load_data
from .engine import NonFiniteLossError
from .fit import EpochReport, FitResult, fit, load_state

EXAMPLE_CONFIG = __import__("pathlib").Path(__file__).with_name("configs") / "example.yaml"

__all__ = [
    "AVData",
    "ConfigError",
    "DataError",
    "EXAMPLE_CONFIG",
    "EpochReport",
    "FitResult",
    "NonFiniteLossError",
    "Split",
    "TrainConfig",
    "fit",
    "load_data",
    "load_state",
]
