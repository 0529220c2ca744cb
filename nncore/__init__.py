"""nncore: an exact, vectorized NumPy core for Nielsen-style feed-forward networks.

Imports only NumPy and the standard library. See :func:`nncore.train.train`.
"""

from nncore import datasets, diagnostics, io, lambda_scaling
from nncore.gradcheck import GradCheckResult, gradient_check
from nncore.network import Network
from nncore.population import train_population
from nncore.records import EpochRecord, LayerStats, LossParts, metric_names
from nncore.regularizers import CONVENTIONS, PENALTIES, Regularizer, convert_lambda, decay_rate
from nncore.train import DivergenceError, TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "CONVENTIONS", "PENALTIES", "DivergenceError", "EpochRecord", "GradCheckResult", "LayerStats", "LossParts",
    "Network", "Regularizer", "TrainConfig", "TrainResult", "convert_lambda", "decay_rate", "gradient_check",
    "datasets", "diagnostics", "io", "lambda_scaling", "metric_names", "train", "train_population",
]
