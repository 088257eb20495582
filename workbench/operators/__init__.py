"""Linear forward operators for inverse problems and the solvers that use them.

The core provides the contract (:class:`ForwardOperator`, :func:`check_adjoint`), generic
operators (:class:`Mask`, :class:`FourierSubsample` with :func:`mri_mask` / :func:`cartesian_mask`,
:class:`FiniteDifference`, the parallel-beam CT projector :class:`ParallelBeamCT` with
:func:`sparse_view_angles`, :func:`limited_angle_angles` and filtered back-projection) and solvers
(:func:`conjugate_gradient`, :func:`solve_regularized`, :func:`admm_tv`). Nothing here imports a
domain; domains build their inverse problems from these.
"""
from .base import ForwardOperator, LinearOperator, check_adjoint, inner
from .ct import ParallelBeamCT, limited_angle_angles, ramp_filter, sparse_view_angles
from .linear import MRI_MASK_KINDS, FiniteDifference, FourierSubsample, Mask, cartesian_mask, mri_mask
from .solvers import admm_tv, conjugate_gradient, soft_threshold, solve_regularized

__all__ = ["ForwardOperator", "LinearOperator", "check_adjoint", "inner", "Mask", "FourierSubsample",
           "cartesian_mask", "mri_mask", "MRI_MASK_KINDS", "FiniteDifference", "ParallelBeamCT",
           "sparse_view_angles", "limited_angle_angles", "ramp_filter", "conjugate_gradient",
           "solve_regularized", "admm_tv", "soft_threshold"]
