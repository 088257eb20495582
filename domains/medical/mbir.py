"""DiffusionMBIR (Chung, Ryu, Ye, CVPR 2023) on the workbench's samplers, and its baselines.

A volume ``[Z, 1, H, W]`` is a batch of Z axial slices for a 2-D slice prior
(:class:`~workbench.domains.medical.networks.SlicePrior`). After every sampler step the whole
volume takes one ADMM iteration of

    min_x 1/2 ||A x - y||^2 + lamb ||D_z x||_1,     split del_z = D_z x, scaled dual u_z,

whose x-update is ONE conjugate-gradient iteration (warm-started at the current state) on

    (A^T A + rho D_z^T D_z) x = A^T y + rho D_z^T (del_z - u_z),

followed by del_z <- soft(D_z x + u_z, lamb / rho) and u_z <- u_z + D_z x - del_z. del_z and
u_z persist across the diffusion steps of one sampling run. D_z is the forward difference along
the slice axis with periodic wrap ((D_z x)_{Z-1} = x_0 - x_{Z-1}). For CT the sample ends with
one Kaczmarz/SIRT-like step x + A^T (y - A x) / (A^T A 1) (``final_consistency``).

The step is the samplers' ``post_step(x, t_next, prediction)`` hook
(:data:`workbench.samplers.common.PostStep`), so it runs with every core sampler (the reference's
predictor-corrector, and DDIM / DPM-Solver++ / the PF-ODE for a fast mode).
:class:`DiffusionMBIRGuidance` is the guidance factory for ``workbench evaluate guidance=...``
(:mod:`workbench.conditional`). See ``README_mbir.md`` for the mapping to the reference code.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from workbench.errors import ConfigError
from workbench.geometry import Geometry
from workbench.guidance.base import DenoiserWrapper
from workbench.guidance.factory import GuidanceFactory, observation_of
from workbench.operators import FiniteDifference, admm_tv, conjugate_gradient, soft_threshold
from workbench.operators.linear import diff_adjoint
from workbench.precond import Prediction
from workbench.state import State

__all__ = ["SliceDifference", "StackedDifference", "TV_AXES", "tv_axes_of", "ADMMTVz", "DiffusionMBIR", "DiffusionMBIRGuidance", "CT_DEFAULTS", "MRI_DEFAULTS",
           "zero_filled", "admm_tv_3d", "data_residual", "reference_ct_hyperparameters"]

#: the reference's hyperparameters (inverse_problem_solver_AAPM_3d_total.py / ..._BRATS_MRI_3d_total.py)
CT_DEFAULTS = {"lamb": 0.04, "rho": 10.0, "n_admm": 1, "n_cg": 1, "final_consistency": True}
MRI_DEFAULTS = {"lamb": 0.005, "rho": 0.01, "n_admm": 1, "n_cg": 1, "final_consistency": False}


def reference_ct_hyperparameters(n_views: int, lamb: float = 0.04, rho: float = 10.0) -> dict[str, float]:
    """``lamb``, ``rho`` for an exact-adjoint projector that reproduce the reference's iterates.

    The reference's ``A^T`` is an unfiltered backprojection scaled by ``c = pi / (2 n_views)``,
    i.e. about c times the true adjoint; its ADMM then minimises ``c/2 ||A x - y||^2 + lamb
    ||D_z x||_1`` with penalty rho. Dividing by c gives the same iterates (CG is invariant to
    scaling its system, the shrinkage threshold lamb / rho is unchanged, the final step's c
    cancels) with ``lamb / c`` and ``rho / c`` and the exact adjoint. (The image size changes the
    scale of A^T A further: ray sums grow with the side length, so at 64 px instead of 256 the
    balance differs again; sweep rho as medical.md (i) says.)"""
    c = math.pi / (2 * int(n_views))
    return {"lamb": float(lamb) / c, "rho": float(rho) / c}


class SliceDifference(FiniteDifference):
    """Forward difference along the slice axis (default 0, the batch axis of a volume [Z, 1, H, W]):
    the core's :class:`~workbench.operators.FiniteDifference` on the whole volume as one problem.

    ``periodic=True`` (DiffusionMBIR's D_z): ``(D x)_i = x_{i+1} - x_i`` with ``x_Z = x_0``, same
    shape as x; adjoint ``(D^T w)_i = w_{i-1} - w_i`` with ``w_{-1} = w_{Z-1}``.
    ``periodic=False``: no wrap (Neumann), one entry shorter along the axis.
    """

    def __init__(self, axis: int = 0, periodic: bool = True) -> None:
        super().__init__(axis, periodic=periodic, whole_tensor=True)


class StackedDifference:
    """Forward differences along several axes at once, stacked on a new leading axis: ``D x =
    [D_a x for a in axes]`` (each shaped like x), adjoint ``D^T w = sum_a D_a^T w_a``; the all-axes
    TV of the reference's ``get_pc_radon_ADMM_TV_all_vol`` (D_z, D_x, D_y, periodic).

    ``periodic=False``: each difference is Neumann with a zero appended along its axis (so all
    have x's shape); its adjoint drops that entry and applies :func:`diff_adjoint`."""

    def __init__(self, axes: tuple[int, ...], periodic: bool = True) -> None:
        if not axes:
            raise ValueError("StackedDifference needs at least one axis")
        self.axes, self.periodic = tuple(int(a) for a in axes), bool(periodic)
        self.parts = [SliceDifference(a, periodic) for a in self.axes]

    def forward(self, x: Tensor) -> Tensor:
        if self.periodic:
            return torch.stack([d.forward(x) for d in self.parts])
        out = []
        for a in self.axes:
            dx = torch.diff(x, dim=a)
            out.append(torch.cat([dx, torch.zeros_like(x.narrow(a, 0, 1))], dim=a))
        return torch.stack(out)

    def adjoint(self, w: Tensor) -> Tensor:
        if self.periodic:
            return sum(d.adjoint(w[i]) for i, d in enumerate(self.parts))
        return sum(diff_adjoint(w[i].narrow(a, 0, w.shape[1:][a] - 1), a) for i, a in enumerate(self.axes))


#: TV directions of a volume [Z, 1, H, W] by name
TV_AXES = {"z": 0, "h": -2, "w": -1}


def tv_axes_of(tv_axes: Any, key: str = "tv_axes") -> tuple[str, ...]:
    """``"z"`` / ``"zhw"`` / ``["z", "h", "w"]`` -> a tuple of names among z, h, w (ValueError naming
    ``key`` otherwise)."""
    names = tuple(tv_axes) if not isinstance(tv_axes, str) else tuple(tv_axes.replace(",", ""))
    bad = [a for a in names if a not in TV_AXES]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"{key} must name distinct directions among 'z', 'h', 'w' (e.g. 'z' or 'zhw'), got {tv_axes!r}")
    return names


def _scalar_t(t: Any) -> float:
    t = torch.as_tensor(t)
    return float(t.reshape(-1)[0]) if t.numel() else float("nan")


class ADMMTVz:
    """DiffusionMBIR's per-step data consistency + TV along z, as a ``post_step`` hook.

    ``hook(x, t_next, prediction=None) -> x`` runs ``n_admm`` ADMM iterations (each with
    ``n_cg`` CG iterations warm-started at x) on the whole volume, and at or below ``t_end``
    (the last grid time) the final consistency step when ``final_consistency`` is set.

    State: ``del_z`` and ``u_z`` (shaped like ``D_z x``) are created as zeros on the first call
    and kept across calls. They are reset by :meth:`reset`, and automatically when a call's time
    is later than the previous call's (a new sampling run: the conditional loop draws several
    samples with one hook) or when the state's shape changes. ``runs`` counts sampling runs and
    ``calls`` hook calls.

    The CG solve treats the volume as ONE linear system (inner products over all slices), not
    Z independent slice problems: D_z couples the slices.

    Args:
        operator: a ForwardOperator acting on the volume ``[Z, 1, H, W]`` slice-wise.
        y: the measurement ``A x_true (+ noise)``.
        lamb, rho: TV weight and ADMM penalty (CT: 0.04, 10; MRI: 0.005, 0.01).
        axis: the slice axis of the state (0).
        n_admm, n_cg: ADMM iterations per call and CG iterations per ADMM iteration (1, 1).
        cg_tol: relative CG tolerance (0: always ``n_cg`` iterations unless the residual is 0).
        periodic: periodic D_z (the reference) or Neumann.
        tv_axes: the TV directions, ``"z"`` (DiffusionMBIR, default) or ``"zhw"`` (the reference's
            all-axes variant, ``get_pc_radon_ADMM_TV_all_vol``: D stacks D_z, D_h, D_w and del_z,
            u_z are then [3, Z, 1, H, W]). ``axis`` is the slice axis for "z"; h, w are the last two.
        z_tv: False drops the TV term (rho D_z^T D_z -> 0): the x-update is then CG on
            A^T A x = A^T y alone (slice-wise diffusion + data consistency, the ablation).
        final_consistency: apply :meth:`final_consistency` at the last time (CT).
        t_end: the sampler's last grid time (the process's ``t_end``); None: never final.
    """

    def __init__(self, operator: Any, y: Tensor, *, lamb: float = 0.04, rho: float = 10.0, axis: int = 0,
                 n_admm: int = 1, n_cg: int = 1, cg_tol: float = 0.0, periodic: bool = True, z_tv: bool = True,
                 final_consistency: bool = False, t_end: float | None = None, tv_axes: Any = "z") -> None:
        if not (hasattr(operator, "forward") and hasattr(operator, "adjoint")):
            raise TypeError(f"ADMMTVz needs a ForwardOperator (forward and adjoint), got {type(operator).__name__}")
        if not float(lamb) >= 0:
            raise ValueError(f"ADMMTVz: lamb must be >= 0, got {lamb}")
        if not float(rho) > 0:
            raise ValueError(f"ADMMTVz: rho must be > 0, got {rho}")
        if int(n_admm) < 1 or int(n_cg) < 1:
            raise ValueError(f"ADMMTVz: n_admm and n_cg must be >= 1, got {n_admm}, {n_cg}")
        self.operator, self.y = operator, y
        self.lamb, self.rho = float(lamb), float(rho)
        self.n_admm, self.n_cg, self.cg_tol = int(n_admm), int(n_cg), float(cg_tol)
        self.tv_axes = tv_axes_of(tv_axes, "ADMMTVz: tv_axes")
        if self.tv_axes == ("z",):
            self.diff: SliceDifference | StackedDifference = SliceDifference(axis, periodic)
        else:
            self.diff = StackedDifference(tuple(int(axis) if a == "z" else TV_AXES[a] for a in self.tv_axes), periodic)
        self.z_tv, self.final = bool(z_tv), bool(final_consistency)
        self.t_end = None if t_end is None else float(t_end)
        self._aty: Tensor | None = None
        self._norm: Tensor | None = None
        self.runs = self.calls = 0
        self.reset()

    def reset(self) -> None:
        """Forget del_z, u_z (a new volume or a new sampling run)."""
        self.del_z: Tensor | None = None
        self.u_z: Tensor | None = None
        self._last_t: float | None = None

    # -- linear algebra ---------------------------------------------------------------------
    def aty(self, like: Tensor) -> Tensor:
        """A^T y (cached)."""
        if self._aty is None or self._aty.device != like.device:
            self._aty = self.operator.adjoint(self.y.to(like.device))
        return self._aty.to(like.dtype)

    def normal(self, x: Tensor) -> Tensor:
        """(A^T A + rho D_z^T D_z) x (without the D_z term when ``z_tv`` is False)."""
        out = self.operator.adjoint(self.operator.forward(x)).to(x.dtype)
        if self.z_tv:
            out = out + self.rho * self.diff.adjoint(self.diff.forward(x))
        return out

    def solve(self, b: Tensor, x0: Tensor, iters: int) -> Tensor:
        """``iters`` CG iterations on normal(x) = b from x0, the volume as one system."""
        # the core's CG is batched over dim 0; a leading singleton makes the volume one element
        out = conjugate_gradient(lambda v: self.normal(v[0]).unsqueeze(0), b.unsqueeze(0), x0=x0.unsqueeze(0),
                                 tol=self.cg_tol, max_iter=iters)
        return out[0]

    def admm(self, x: Tensor) -> Tensor:
        """``n_admm`` ADMM iterations from the state x, updating del_z and u_z in place."""
        aty = self.aty(x)
        if not self.z_tv:
            for _ in range(self.n_admm):
                x = self.solve(aty, x, self.n_cg)
            return x
        if self.del_z is None or self.del_z.shape != self.diff.forward(x).shape:
            dz = self.diff.forward(x)
            self.del_z, self.u_z = torch.zeros_like(dz), torch.zeros_like(dz)
        for _ in range(self.n_admm):
            b = aty + self.rho * self.diff.adjoint(self.del_z - self.u_z)
            x = self.solve(b, x, self.n_cg)
            dx = self.diff.forward(x)
            self.del_z = soft_threshold(dx + self.u_z, self.lamb / self.rho)
            self.u_z = self.u_z + dx - self.del_z
        return x

    def norm_const(self, like: Tensor) -> Tensor:
        """A^T A 1 (cached): the per-voxel normaliser of the final step."""
        if self._norm is None or self._norm.shape != like.shape or self._norm.device != like.device:
            self._norm = self.operator.adjoint(self.operator.forward(torch.ones_like(like))).to(like.dtype)
        return self._norm

    def final_consistency(self, x: Tensor) -> Tensor:
        """x + A^T (y - A x) / (A^T A 1), voxels with A^T A 1 = 0 left unchanged."""
        norm = self.norm_const(x)
        r = self.operator.adjoint(self.y.to(x.device) - self.operator.forward(x)).to(x.dtype)
        ok = norm.abs() > 1e-12 * norm.abs().max().clamp_min(1e-30)
        return x + torch.where(ok, r / torch.where(ok, norm, torch.ones_like(norm)), torch.zeros_like(r))

    # -- the hook ---------------------------------------------------------------------------
    def is_last(self, t: float) -> bool:
        return self.t_end is not None and t <= self.t_end * (1 + 1e-9) + 1e-12

    def __call__(self, x: State, t_next: Any, prediction: Prediction | None = None) -> State:
        if not torch.is_tensor(x):
            raise TypeError("ADMMTVz acts on a tensor volume [Z, 1, H, W]")
        t = _scalar_t(t_next)
        if self._last_t is not None and t > self._last_t:
            self.reset()                      # time went back up: a new sampling run
        if self._last_t is None:
            self.runs += 1
        self._last_t = t
        self.calls += 1
        x = self.admm(x)
        if self.final and self.is_last(t):
            x = self.final_consistency(x)
        return x


class DiffusionMBIR(DenoiserWrapper):
    """A pass-through denoiser wrapper carrying an :class:`ADMMTVz` as its ``post_step``."""

    def __init__(self, denoiser: nn.Module, hook: ADMMTVz) -> None:
        super().__init__(denoiser)
        self.admm_step = hook

    def forward(self, x: State, t: Tensor, geometry: Geometry, **extras: Any) -> Prediction:
        return self.denoiser(x, t, geometry, **extras)

    def post_step(self, x: State, t: Tensor, prediction: Prediction | None = None) -> State:
        return self.admm_step(x, t, prediction)


class DiffusionMBIRGuidance(GuidanceFactory):
    """Guidance factory ``factory(denoiser, batch, generator=None) -> DiffusionMBIR``.

    One volume per batch: ``batch["x"]`` is the truth ``[Z, 1, H, W]`` (only its shape is used
    by the sampler), ``batch["observation"]`` has ``y`` and ``operator``. Each call builds a
    fresh :class:`ADMMTVz` (del_z, u_z start at zero for every volume). ``t_end`` is taken from
    ``denoiser.process``. Defaults are the reference's CT settings (:data:`CT_DEFAULTS`); MRI:
    ``lamb=0.005, rho=0.01, final_consistency=False`` (:data:`MRI_DEFAULTS`). ``z_tv=False`` is
    the slice-wise diffusion + data-consistency ablation; ``tv_axes="zhw"`` the all-axes TV variant.

    Fast mode (README): ``n_admm`` ADMM iterations per step let a short stochastic sampler catch up
    on the data consistency that 2,000 PC steps do one iteration at a time (DDIM eta 0.3 on the
    Karras grid, 199 steps, ``n_admm=8``: the benchmark's ``diffusionmbir-fast``).

    ``reference_scaling``: on a CT operator (one with ``n_angles``, e.g.
    :class:`~workbench.operators.ParallelBeamCT`) read ``lamb`` and ``rho`` in the reference's
    units, whose A^T is pi / (2 n_views) times the exact adjoint, and convert them with
    :func:`reference_ct_hyperparameters` (the paper's iterates at the paper's 256 px). Off by
    default: at the CPU sizes (32-64 px) the converted rho (51 for 8 views) made the one-CG ADMM
    diverge in the demo (PSNR -3 dB), while the values as given reach 30.7 / 23.2 / 25.8 dB
    (axial / coronal / sagittal); the balance depends on the image size, so sweep rho.
    """

    name = "diffusion_mbir"

    def __init__(self, lamb: float = 0.04, rho: float = 10.0, n_admm: int = 1, n_cg: int = 1,
                 final_consistency: bool = True, z_tv: bool = True, periodic: bool = True,
                 cg_tol: float = 0.0, reference_scaling: bool = False, tv_axes: Any = "z") -> None:
        if not float(lamb) >= 0:
            raise ConfigError(f"config key 'guidance.lamb' must be >= 0, got {lamb!r}")
        if not float(rho) > 0:
            raise ConfigError(f"config key 'guidance.rho' must be > 0, got {rho!r}")
        if int(n_admm) < 1 or int(n_cg) < 1:
            raise ConfigError(f"config keys 'guidance.n_admm' and 'guidance.n_cg' must be >= 1, got {n_admm}, {n_cg}")
        self.lamb, self.rho, self.n_admm, self.n_cg = float(lamb), float(rho), int(n_admm), int(n_cg)
        self.final_consistency, self.z_tv, self.periodic = bool(final_consistency), bool(z_tv), bool(periodic)
        self.cg_tol = float(cg_tol)
        self.reference_scaling = bool(reference_scaling)
        try:
            self.tv_axes = tv_axes_of(tv_axes, "config key 'guidance.tv_axes'")
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def weights(self, operator: Any) -> tuple[float, float]:
        """(lamb, rho) for ``operator``: converted from the reference's units on a CT operator when
        ``reference_scaling`` is set, else as given."""
        n = getattr(operator, "n_angles", None)
        if self.reference_scaling and n:
            w = reference_ct_hyperparameters(int(n), self.lamb, self.rho)
            return w["lamb"], w["rho"]
        return self.lamb, self.rho

    def hook(self, operator: Any, y: Tensor, t_end: float | None) -> ADMMTVz:
        lamb, rho = self.weights(operator)
        return ADMMTVz(operator, y, lamb=lamb, rho=rho, n_admm=self.n_admm, n_cg=self.n_cg,
                       cg_tol=self.cg_tol, periodic=self.periodic, z_tv=self.z_tv,
                       final_consistency=self.final_consistency, t_end=t_end, tv_axes=self.tv_axes)

    def __call__(self, denoiser: nn.Module, batch: Mapping[str, Any],
                 generator: torch.Generator | None = None) -> DiffusionMBIR:
        obs = observation_of(batch, self.name, "y", "operator")
        x = batch.get("x")
        if torch.is_tensor(x) and x.dim() != 4:
            raise ConfigError(f"guidance {self.name} needs one volume per batch, x of shape [Z, 1, H, W] "
                              f"(slices as the batch); got {list(x.shape)}")
        process = getattr(denoiser, "process", None)
        t_end = getattr(process, "t_end", None)
        return DiffusionMBIR(denoiser, self.hook(obs["operator"], obs["y"], t_end))


# -- baselines ---------------------------------------------------------------------------------
def zero_filled(operator: Any, y: Tensor) -> Tensor:
    """The analytic baseline: ``operator.fbp(y)`` (filtered backprojection, CT) if the operator
    has it, else ``A^T y`` (the zero-filled reconstruction for Cartesian MRI)."""
    fbp: Callable[[Tensor], Tensor] | None = getattr(operator, "fbp", None)
    return fbp(y) if callable(fbp) else operator.adjoint(y)


class _AsOneVolume:
    """An operator on [Z, ...] seen as acting on [1, Z, ...], so the core's batched solvers treat
    the volume as one problem (their inner products and finite differences then span z)."""

    def __init__(self, operator: Any) -> None:
        self.operator, self.noise_std = operator, float(getattr(operator, "noise_std", 0.0) or 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.operator.forward(x[0]).unsqueeze(0)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.operator.adjoint(y[0]).unsqueeze(0)


def admm_tv_3d(operator: Any, y: Tensor, *, lamb: float = 0.04, rho: float = 10.0, outer: int = 30,
               cg_iters: int = 20, cg_tol: float = 0.0, axes: tuple[str, ...] = ("z", "h", "w"),
               x0: Tensor | None = None) -> Tensor:
    """3-D anisotropic TV by ADMM (the reference's ``get_ADMM_TV``: 30 outer iterations of 20
    CG iterations, from x = 0), run by the core's :func:`workbench.operators.admm_tv` on the
    volume ``[Z, 1, H, W]`` as one problem. ``axes`` picks the TV directions among z (slices),
    h and w. The core's differences are Neumann (no wrap), the reference's periodic."""
    dims = {"z": 1, "h": -2, "w": -1}
    bad = [a for a in axes if a not in dims]
    if bad or not axes:
        raise ValueError(f"admm_tv_3d: axes must be among 'z', 'h', 'w', got {axes}")
    out = admm_tv(_AsOneVolume(operator), y.unsqueeze(0), rho=rho, lam=lamb, axes=tuple(dims[a] for a in axes),
                  iters=outer, x0=None if x0 is None else x0.unsqueeze(0), cg_iters=cg_iters, cg_tol=cg_tol)
    return out[0]


def data_residual(operator: Any, x: Tensor, y: Tensor) -> float:
    """||A x - y|| / ||y|| over the whole volume."""
    r = operator.forward(x) - y
    return float(torch.linalg.vector_norm(r) / torch.linalg.vector_norm(y).clamp_min(1e-30))
