"""Linear forward operators for inverse problems and the solvers that use them.

The core provides the contract (:class:`ForwardOperator`, :func:`check_adjoint`), generic
operators (:class:`Mask`, :class:`FourierSubsample` with :func:`cartesian_mask`,
:class:`FiniteDifference`) and solvers (:func:`conjugate_gradient`, :func:`solve_regularized`,
:func:`admm_tv`). Domain-specific projectors (e.g. CT) live with their domain.
"""
from .base import ForwardOperator, LinearOperator, check_adjoint, inner
from .linear import FiniteDifference, FourierSubsample, Mask, cartesian_mask
from .solvers import admm_tv, conjugate_gradient, soft_threshold, solve_regularized

__all__ = ["ForwardOperator", "LinearOperator", "check_adjoint", "inner", "Mask", "FourierSubsample",
           "cartesian_mask", "FiniteDifference", "conjugate_gradient", "solve_regularized",
           "admm_tv", "soft_threshold"]
