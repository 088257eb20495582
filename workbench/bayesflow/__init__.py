"""Bayesian flow networks (BFN): continuous, discrete and periodic flows, joint systems, a method.

Pure torch, device-agnostic, no Lightning and no domain imports; every random draw takes an
explicit ``torch.Generator`` and nothing global is changed.

Flows (:mod:`workbench.bayesflow.flows`), one per variable kind; step i = 1..n, the network sees
the input distribution theta_{i-1} at t = (i - 1) / n:

* :class:`ContinuousFlow` (Graves et al. 2023, "Bayesian Flow Networks", sec. 4): theta = (mu, rho),
  sender N(x, 1/alpha), update rho' = rho + alpha, mu' = (rho mu + alpha y) / rho'; schedule
  gamma(t) = 1 - sigma1^(2t), flow mu ~ N(gamma x, gamma (1 - gamma)); losses
  n (1 - sigma1^(2/n)) / (2 sigma1^(2i/n)) ||x_hat - x||^2 (discrete time) and
  -ln(sigma1) sigma1^(-2t) ||x - x_hat||^2 (continuous time).
* :class:`DiscreteFlow` (ibid., sec. 6) on class indices: beta(t) = beta1 t^2, flow
  theta = softmax(y), y ~ N(beta (K e_x - 1), beta K I); update theta' ∝ theta e^y; losses
  K beta1 t ||e_x - p_hat||^2 (continuous time) and n KL(sender || receiver mixture) by Monte Carlo
  with alpha_i = beta1 (2i - 1) / n^2 (discrete time).
* :class:`PeriodicFlow` (Wu et al. 2025, CrysBFN) on angles in [-pi, pi): sender vM(x, alpha_i),
  update c' e^{i m'} = c e^{i m} + alpha e^{i y}; the flow is simulated (vectorised over all steps
  and the batch); loss n alpha A(alpha) (1 - cos(x - x_hat)) (the KL), or a wrapped squared error;
  the network may see log(c + eps) (entropy conditioning). The alphas follow the entropy-linear
  schedule found by root finding for any n and cached in
  ``${WORKBENCH_BAYESFLOW_CACHE:-${XDG_CACHE_HOME:-~/.cache}/workbench/bayesflow}``.

:class:`JointFlow` joins flows for a dict state with one shared step; :class:`BayesianFlowMethod`
(alias :class:`BayesianFlow`) is the method the Lightning module holds: ``loss(batch, generator)``
and ``sample(template, steps=..., generator=...)``. Its module docstring
(:mod:`workbench.bayesflow.method`) says exactly what the network receives: the mean (continuous),
class probabilities (discrete) or mean angle (periodic), ``t`` ``[B]``, ``cond`` / ``mask`` when
present and ``log_conc=`` for periodic variables with entropy conditioning.

Von Mises tools (:mod:`workbench.bayesflow.vonmises`): an exact batched sampler (Best-Fisher with
shrinking vectorised rounds, several times faster than ``torch.distributions.VonMises``), entropy,
KL, Bessel ratio, the accuracy schedule. Toys and their metrics: :mod:`workbench.bayesflow.toy`.
"""
from .flows import ContinuousFlow, DiscreteFlow, Flow, PeriodicFlow
from .method import BayesianFlow, BayesianFlowMethod, JointFlow
from .vonmises import (accuracy_schedule, bessel_ratio, entropy_targets, find_alphas, sample_von_mises,
                       schedule_cache_dir, vm_entropy, vm_kl_same_concentration, wrap)

__all__ = ["Flow", "ContinuousFlow", "DiscreteFlow", "PeriodicFlow", "JointFlow", "BayesianFlowMethod",
           "BayesianFlow", "accuracy_schedule", "bessel_ratio", "entropy_targets", "find_alphas",
           "sample_von_mises", "schedule_cache_dir", "vm_entropy", "vm_kl_same_concentration", "wrap"]
