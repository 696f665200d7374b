"""Linear CCA in numpy float64: the optional evaluation projection (`eval_projection: cca`) and a baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _inv_sqrt(s: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    evals, vecs = np.linalg.eigh(s)
    return (vecs / np.sqrt(np.clip(evals, eps, None))) @ vecs.T


@dataclass
class LinearCCA:
    """Projections of two views onto their top-k canonical directions (fitted with `fit`)."""

    mean_a: np.ndarray  # (D_a,)
    mean_v: np.ndarray  # (D_v,)
    w_a: np.ndarray  # (D_a, k)
    w_v: np.ndarray  # (D_v, k)
    rho: np.ndarray  # (k,) canonical correlations on the fitting data, descending

    @classmethod
    def fit(cls, a: np.ndarray, v: np.ndarray, k: int, ridge: float = 1e-3) -> "LinearCCA":
        """a: (N, D_a), v: (N, D_v); ridge is added to both auto-covariances; k <= min(D_a, D_v)."""
        a = np.asarray(a, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        mean_a, mean_v = a.mean(0), v.mean(0)
        a, v = a - mean_a, v - mean_v
        n = a.shape[0]
        s_aa = a.T @ a / (n - 1) + ridge * np.eye(a.shape[1])
        s_vv = v.T @ v / (n - 1) + ridge * np.eye(v.shape[1])
        s_av = a.T @ v / (n - 1)
        wa0, wv0 = _inv_sqrt(s_aa), _inv_sqrt(s_vv)
        u, rho, vt = np.linalg.svd(wa0 @ s_av @ wv0)
        k = min(k, rho.size)
        return cls(mean_a, mean_v, wa0 @ u[:, :k], wv0 @ vt.T[:, :k], rho[:k])

    def transform(self, a: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projects (N, D_a) and (N, D_v) to (N, k) each, comparable by cosine."""
        a = np.asarray(a, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        return (a - self.mean_a) @ self.w_a, (v - self.mean_v) @ self.w_v
