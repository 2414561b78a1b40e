"""Hessian analysis: HVPs, certified eigenvalues, trace, spectral density, critical points.

A namespace module: every name is used as ``gx.hessian.<name>``. The products
come from :mod:`gradxform.curvature` (``hvp`` and ``linearized_hvp`` are its
functions, re-exported here); this package builds on that layer only.

* operators: :func:`hvp`, :func:`linearized_hvp`, :func:`hessian_matrix`,
  :func:`eigh`, :func:`flat_operator`, :func:`restrict` (one block of the
  params), :func:`batch_mean` (mini-batch averaged objective);
* :func:`lanczos`, :func:`eigenpairs`, :func:`hessian_eigenpairs`: extreme
  eigenpairs with residual certificates;
* :func:`trace` (Hutch++, Hutchinson), :func:`diagonal`,
  :func:`spectral_density` (stochastic Lanczos quadrature);
* :func:`classify_critical_point`;
* :func:`dataset_mean` (a loss averaged over a data set that streams, with its
  Hessian, Gauss-Newton, Fisher or empirical Fisher), :func:`block_spectra`
  (every block of the params in one call).
"""

from gradxform.curvature import hvp, linearized_hvp
from gradxform.hessian.blocks import BlockSpectrum, block_spectra
from gradxform.hessian.critical import CriticalPoint, classify_critical_point
from gradxform.hessian.data import DatasetObjective, PassReport, dataset_mean
from gradxform.hessian.estimators import (
    DiagonalEstimate,
    SpectralDensity,
    TraceEstimate,
    diagonal,
    spectral_density,
    trace,
)
from gradxform.hessian.extreme import Eigenpairs, eigenpairs, hessian_eigenpairs
from gradxform.hessian.kinds import softmax_cross_entropy, squared_error
from gradxform.hessian.lanczos import LanczosResult, lanczos, ritz_pairs
from gradxform.hessian.operators import (
    FlatOperator,
    batch_mean,
    eigh,
    flat_operator,
    hessian_matrix,
    restrict,
)

__all__ = [
    "BlockSpectrum",
    "CriticalPoint",
    "DatasetObjective",
    "DiagonalEstimate",
    "Eigenpairs",
    "FlatOperator",
    "LanczosResult",
    "PassReport",
    "SpectralDensity",
    "TraceEstimate",
    "batch_mean",
    "block_spectra",
    "classify_critical_point",
    "dataset_mean",
    "diagonal",
    "eigenpairs",
    "eigh",
    "flat_operator",
    "hessian_eigenpairs",
    "hessian_matrix",
    "hvp",
    "lanczos",
    "linearized_hvp",
    "restrict",
    "ritz_pairs",
    "softmax_cross_entropy",
    "spectral_density",
    "squared_error",
    "trace",
]
