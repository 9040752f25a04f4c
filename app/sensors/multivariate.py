"""PCA monitoring of several sensors at once: Hotelling T-squared and SPE (Q) with 99 % control limits.

Univariate charts miss a fault that breaks the *correlation* between sensors while each stays in its band
(e.g. dissolved oxygen no longer following agitation). A PCA model fitted on in-control reference data splits
each new sample into a part the model explains, charted by T-squared, and a residual the model has never
seen, charted by SPE. Limits: T-squared from the F distribution for a new observation, SPE from the
Jackson-Mudholkar approximation (Jackson & Mudholkar, Technometrics 21 (1979) 341-349).

The fitted model is a plain value: `to_dict` gives a JSON-able document (arrays as lists) for the database,
`from_dict` restores it bit for bit, and `model_version` hashes every parameter, so an alarm records exactly
which model raised it and a stored model that was altered is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

#: Bumped when the maths or the stored layout change; part of the hashed content.
FORMAT_VERSION = 1
_KIND = "batchline.pca_monitor"


class PcaScores(NamedTuple):
    """Per-sample statistics and alarms; unpacks as (t2, spe, t2_alarm, spe_alarm)."""

    t2: np.ndarray
    spe: np.ndarray
    t2_alarm: np.ndarray
    spe_alarm: np.ndarray


@dataclass(frozen=True, eq=False)
class PcaMonitor:
    """A fitted PCA monitor: autoscaling, retained loadings, eigenvalues and frozen control limits."""

    mean: np.ndarray  # (p,) reference mean of each variable
    scale: np.ndarray  # (p,) reference standard deviation (1 where a variable was constant)
    loadings: np.ndarray  # (p, a) retained principal directions, sign fixed so the largest entry is positive
    eigenvalues: np.ndarray  # (p,) variances of all principal components of the autoscaled data, descending
    n_samples: int  # reference samples the model was fitted on (enters the T-squared limit)
    confidence: float  # e.g. 0.99
    t2_limit: float
    spe_limit: float
    variables: tuple[str, ...] | None = None  # names of the columns, e.g. sensor tags

    @property
    def n_components(self) -> int:
        """Return the number of retained principal components."""
        return int(self.loadings.shape[1])

    @property
    def model_version(self) -> str:
        """Return a hash of every parameter, stored with each alarm so it can be traced to this model."""
        canonical = json.dumps(self._payload(), sort_keys=True, separators=(",", ":"))
        return f"pca{FORMAT_VERSION}-{hashlib.sha256(canonical.encode()).hexdigest()}"

    def score(self, X: np.ndarray) -> PcaScores:
        """Return T-squared, SPE and their alarms for each row of X; rows with NaN get NaN and no alarm."""
        data = np.atleast_2d(np.asarray(X, dtype=float))
        if data.ndim != 2 or data.shape[1] != self.mean.size:
            raise ValueError(f"expected rows of {self.mean.size} variables, got shape {data.shape}")
        scaled = (data - self.mean) / self.scale
        scores = scaled @ self.loadings
        t2 = np.sum(scores**2 / self.eigenvalues[: self.n_components], axis=1)
        residual = scaled - scores @ self.loadings.T
        spe = np.sum(residual**2, axis=1)
        with np.errstate(invalid="ignore"):
            return PcaScores(t2, spe, t2 > self.t2_limit, spe > self.spe_limit)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able document of the model, with its `model_version`."""
        return {**self._payload(), "model_version": self.model_version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PcaMonitor:
        """Restore a model stored with `to_dict`, refusing one whose content no longer matches its version."""
        if data.get("kind") != _KIND or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"not a format {FORMAT_VERSION} PCA monitor document")
        variables = data.get("variables")
        model = cls(
            mean=np.asarray(data["mean"], dtype=float),
            scale=np.asarray(data["scale"], dtype=float),
            loadings=np.asarray(data["loadings"], dtype=float).reshape(len(data["mean"]), -1),
            eigenvalues=np.asarray(data["eigenvalues"], dtype=float),
            n_samples=int(data["n_samples"]),
            confidence=float(data["confidence"]),
            t2_limit=float(data["t2_limit"]),
            spe_limit=float(data["spe_limit"]),
            variables=None if variables is None else tuple(variables),
        )
        if model.model_version != data.get("model_version"):
            raise ValueError("PCA monitor document does not match its model_version: it was altered")
        return model

    def _payload(self) -> dict[str, Any]:
        """Return the parameters as JSON types; floats survive a JSON round trip exactly (shortest repr)."""
        return {
            "kind": _KIND,
            "format": FORMAT_VERSION,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "loadings": self.loadings.tolist(),
            "eigenvalues": self.eigenvalues.tolist(),
            "n_samples": self.n_samples,
            "confidence": self.confidence,
            "t2_limit": self.t2_limit,
            "spe_limit": self.spe_limit,
            "variables": None if self.variables is None else list(self.variables),
        }


def t2_limit(n_components: int, n_samples: int, confidence: float = 0.99) -> float:
    """Return the Hotelling T-squared limit for a new observation: a(n-1)(n+1) / (n(n-a)) F(a, n-a)."""
    a, n = n_components, n_samples
    if not 0 < a < n:
        raise ValueError("T-squared limit needs 0 < n_components < n_samples")
    return float(a * (n - 1) * (n + 1) / (n * (n - a)) * stats.f.ppf(confidence, a, n - a))


def spe_limit(residual_eigenvalues: np.ndarray, confidence: float = 0.99) -> float:
    """Return the Jackson-Mudholkar SPE (Q) limit from the eigenvalues of the discarded components."""
    lam = np.asarray(residual_eigenvalues, dtype=float)
    theta1, theta2, theta3 = (float(np.sum(lam**power)) for power in (1, 2, 3))
    if theta1 <= 0.0:
        raise ValueError("SPE limit needs a residual space with non-zero variance")
    h0 = 1.0 - 2.0 * theta1 * theta3 / (3.0 * theta2**2)
    c_alpha = float(stats.norm.ppf(confidence))
    base = c_alpha * np.sqrt(2.0 * theta2 * h0**2) / theta1 + 1.0 + theta2 * h0 * (h0 - 1.0) / theta1**2
    return float(theta1 * base ** (1.0 / h0))


def fit_pca_monitor(
    reference: np.ndarray,
    *,
    variance: float = 0.90,
    n_components: int | None = None,
    confidence: float = 0.99,
    variables: Sequence[str] | None = None,
) -> PcaMonitor:
    """Fit a PCA monitor on in-control reference rows (samples x variables).

    Variables are autoscaled (a constant one keeps scale 1 so it cannot divide by zero). The model keeps the
    fewest components whose cumulative variance reaches `variance`, or exactly `n_components`; at least one
    component stays in the residual space so SPE is defined.
    """
    data = np.asarray(reference, dtype=float)
    if data.ndim != 2 or not np.isfinite(data).all():
        raise ValueError("reference must be a finite 2-D array (samples x variables)")
    n, p = data.shape
    if n < 3 or p < 2:
        raise ValueError("reference needs at least 3 samples of 2 variables")
    if variables is not None and len(variables) != p:
        raise ValueError("one variable name per column")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    mean = data.mean(axis=0)
    scale = data.std(axis=0, ddof=1)
    scale[scale == 0.0] = 1.0
    _, singular, vt = np.linalg.svd((data - mean) / scale, full_matrices=False)
    eigenvalues = np.zeros(p)
    eigenvalues[: singular.size] = singular**2 / (n - 1)
    limit = min(p - 1, n - 2)  # keep a residual space for SPE and n - a > 0 for the F limit
    if n_components is None:
        if not 0.0 < variance < 1.0:
            raise ValueError("variance must be in (0, 1)")
        cumulative = np.cumsum(eigenvalues) / eigenvalues.sum()
        n_components = min(int(np.searchsorted(cumulative, variance) + 1), limit)
    elif not 1 <= n_components <= limit:
        raise ValueError(f"n_components must be between 1 and {limit}")
    loadings = vt[:n_components].T.copy()
    # An eigenvector's sign is arbitrary; fixing it makes the model (and its hash) reproducible.
    largest = np.argmax(np.abs(loadings), axis=0)
    loadings *= np.sign(loadings[largest, np.arange(n_components)])
    return PcaMonitor(
        mean=mean,
        scale=scale,
        loadings=loadings,
        eigenvalues=eigenvalues,
        n_samples=n,
        confidence=confidence,
        t2_limit=t2_limit(n_components, n, confidence),
        spe_limit=spe_limit(eigenvalues[n_components:], confidence),
        variables=None if variables is None else tuple(variables),
    )
