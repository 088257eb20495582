"""Von Mises helpers for the periodic Bayesian flow: a batched sampler, Bessel ratios, entropy,
KL, and the entropy-linear accuracy schedule (found by root finding for any n, cached on disk).

All functions are pure: randomness comes from an explicit ``torch.Generator`` and nothing global
is changed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["sample_von_mises", "log_i0", "bessel_ratio", "vm_entropy", "vm_kl_same_concentration",
           "entropy_targets", "find_alphas", "accuracy_schedule", "schedule_cache_dir", "wrap"]

_TWO_PI = 2.0 * math.pi


def wrap(x: Tensor) -> Tensor:
    """Angles mapped onto ``[-pi, pi)``."""
    return torch.remainder(x + math.pi, _TWO_PI) - math.pi


def log_i0(kappa: Tensor) -> Tensor:
    """``log I0(kappa)`` for kappa >= 0, stable at large kappa (via the scaled Bessel function)."""
    return torch.log(torch.special.i0e(kappa)) + kappa


def bessel_ratio(kappa: Tensor) -> Tensor:
    """``A(kappa) = I1(kappa) / I0(kappa)`` (the mean resultant length of vM(., kappa))."""
    return torch.special.i1e(kappa) / torch.special.i0e(kappa)


def vm_entropy(kappa: Tensor) -> Tensor:
    """Differential entropy of vM(mu, kappa): ``log(2 pi I0(kappa)) - kappa A(kappa)``."""
    kappa = torch.as_tensor(kappa)
    return math.log(_TWO_PI) + log_i0(kappa) - kappa * bessel_ratio(kappa)


def vm_kl_same_concentration(x: Tensor, x_hat: Tensor, kappa: Tensor) -> Tensor:
    """``KL(vM(x, kappa) || vM(x_hat, kappa)) = kappa A(kappa) (1 - cos(x - x_hat))`` elementwise."""
    return kappa * bessel_ratio(kappa) * (1.0 - torch.cos(x - x_hat))


def sample_von_mises(loc: Tensor, kappa: Tensor, generator: torch.Generator | None = None, *,
                     normal_above: float = 1e6) -> Tensor:
    """Exact batched draws from vM(loc, kappa), returned in ``[-pi, pi)`` with the broadcast shape.

    Best & Fisher's (1979) wrapped-Cauchy rejection sampler, vectorised over all entries: every
    round proposes once for each entry still waiting and keeps the accepted ones; the next round
    works on the rejected entries only (acceptance is >= 65% for every kappa, so rounds shrink
    geometrically: ~1.4% of the entries are left after 4 rounds, none after a few dozen), so the
    draw is exact and the cost is ~1.3 proposals per entry. (torch's ``VonMises.sample`` repeats
    full-size rounds until every entry is accepted.) Computed in float64 and cast back to ``loc``'s dtype. ``kappa`` near 0 gives uniform
    angles; above ``normal_above`` the von Mises is replaced by N(loc, 1/kappa), whose error there
    is O(1/kappa) in every moment.
    """
    loc, kappa = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(kappa, device=torch.as_tensor(loc).device))
    out_dtype = loc.dtype if loc.is_floating_point() else torch.get_default_dtype()
    shape, device = loc.shape, loc.device
    k = kappa.reshape(-1).double()
    n = k.numel()
    delta = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    tiny = k < 1e-8
    big = k > normal_above
    if tiny.any():
        u = torch.rand(int(tiny.sum()), generator=generator, dtype=torch.float64, device=device)
        delta[tiny] = _TWO_PI * u - math.pi
    if big.any():
        z = torch.randn(int(big.sum()), generator=generator, dtype=torch.float64, device=device)
        delta[big] = z / k[big].sqrt()
    todo = todo[~(tiny | big)]
    kk = k[todo]
    tau = 1.0 + torch.sqrt(1.0 + 4.0 * kk * kk)
    rho = (tau - torch.sqrt(2.0 * tau)) / (2.0 * kk)
    r = torch.where(kk < 1e-5, 1.0 / kk + kk, (1.0 + rho * rho) / (2.0 * rho))
    while todo.numel():
        u = torch.rand((2, todo.numel()), generator=generator, dtype=torch.float64, device=device)
        v = 2.0 * u[0] - 1.0                    # |v| ~ U(0, 1) gives the proposal, sign(v) its side
        z = torch.cos(math.pi * v)
        f = (1.0 + r * z) / (r + z)
        c = kk * (r - f)
        u2 = u[1].clamp_min(1e-300)
        ok = c * (2.0 - c) > u2
        ok |= torch.log(c / u2) + 1.0 - c >= 0.0
        delta[todo[ok]] = torch.sign(v[ok]) * torch.acos(f[ok].clamp(-1.0, 1.0))
        rest = ~ok
        todo, kk, r = todo[rest], kk[rest], r[rest]
    out = wrap(loc.reshape(-1).double() + delta)
    return out.reshape(shape).to(out_dtype)


# -- the entropy-linear accuracy schedule ---------------------------------------------------------------

def entropy_targets(n: int, beta1: float = 1e3) -> Tensor:
    """Concentrations ``beta_1..beta_n`` (float64 ``[n]``) whose entropies are linear in i between
    H(0) = log(2 pi) and H(beta1): ``H(beta_i) = H(0) + (i / n) (H(beta1) - H(0))`` (bisection on
    log kappa; H is decreasing)."""
    if n < 1:
        raise ValueError(f"the number of steps must be >= 1, got {n}")
    i = torch.arange(1, n + 1, dtype=torch.float64)
    h0, h1 = math.log(_TWO_PI), float(vm_entropy(torch.tensor(float(beta1), dtype=torch.float64)))
    target = h0 + i / n * (h1 - h0)
    lo = torch.full_like(target, math.log(1e-12))
    hi = torch.full_like(target, math.log(float(beta1)) + 1.0)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        above = vm_entropy(mid.exp()) > target     # entropy too high: concentration too small
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    beta = (0.5 * (lo + hi)).exp()
    beta[-1] = float(beta1)
    return beta


def _expected_resultant_quadrature(b: Tensor, a: Tensor, points: int = 513) -> Tensor:
    """``E|b + a e^{i d}|`` for d ~ vM(0, a), elementwise over ``[m]`` float64 tensors, by the
    trapezoid rule on a window of +-min(pi, 14 / sqrt(a)) around 0 (spectrally accurate: the
    integrand is smooth and periodic, or negligible at the window's ends)."""
    half = torch.clamp(14.0 / a.clamp_min(1e-12).sqrt(), max=math.pi)
    s = torch.linspace(-1.0, 1.0, points, dtype=torch.float64, device=a.device)
    d = half[:, None] * s[None, :]
    logw = a[:, None] * (torch.cos(d) - 1.0)
    w = torch.exp(logw - logw.max(1, keepdim=True).values)
    w[:, 0] *= 0.5
    w[:, -1] *= 0.5
    g = torch.sqrt((b * b + a * a)[:, None] + 2.0 * (a * b)[:, None] * torch.cos(d))
    return (w * g).sum(1) / w.sum(1)


def _expected_resultant_mc(b: Tensor, a: Tensor, samples: int, seed: int) -> Tensor:
    g = torch.Generator(device=a.device).manual_seed(seed)   # the same draws for every a (common numbers)
    d = sample_von_mises(torch.zeros(samples, a.numel(), dtype=torch.float64, device=a.device),
                         a[None, :].expand(samples, -1), g)
    return torch.sqrt(b * b + a * a + 2.0 * a * b * torch.cos(d)).mean(0)


def find_alphas(n: int, beta1: float = 1e3, *, method: str = "quadrature", mc_samples: int = 20_000,
                seed: int = 0) -> Tensor:
    """Per-step sender accuracies ``alpha_1..alpha_n`` (float64 ``[n]``) of the entropy-linear schedule.

    With targets ``beta_i`` from :func:`entropy_targets` (beta_0 = 0), ``alpha_i`` solves
    ``E|beta_{i-1} + alpha_i e^{i d}| = beta_i`` with d ~ vM(0, alpha_i) (the sender centred on the
    input mean), so alpha_1 = beta_1. The n equations are independent and are solved together by
    bisection. The expectation is computed by quadrature (``method="quadrature"``, deterministic) or,
    as in CrysBFN, by Monte Carlo with a fixed seed (``method="monte_carlo"``, ``mc_samples`` draws,
    the same random numbers at every bisection step).
    """
    if method not in ("quadrature", "monte_carlo"):
        raise ValueError(f"method must be 'quadrature' or 'monte_carlo', got {method!r}")
    beta = entropy_targets(n, beta1)
    prev = torch.cat([beta.new_zeros(1), beta[:-1]])
    lo = (beta - prev).clamp_min(1e-12)            # E|b + a e^{id}| <= a + b
    hi = beta + prev + 2.0                         # E|.| >= |b + a A(a)| >= a - b - ... ; grown below

    def expect(a: Tensor) -> Tensor:
        if method == "quadrature":
            return _expected_resultant_quadrature(prev, a)
        return _expected_resultant_mc(prev, a, mc_samples, seed)

    for _ in range(60):                            # make sure the bracket holds the root
        short = expect(hi) < beta
        if not short.any():
            break
        hi = torch.where(short, 2.0 * hi, hi)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        low = expect(mid) < beta
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    alpha = 0.5 * (lo + hi)
    alpha[0] = beta[0]
    return alpha


def schedule_cache_dir() -> Path:
    """Where schedules are cached: ``$WORKBENCH_BAYESFLOW_CACHE``, else
    ``${XDG_CACHE_HOME:-~/.cache}/workbench/bayesflow``."""
    env = os.environ.get("WORKBENCH_BAYESFLOW_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "workbench" / "bayesflow"


def accuracy_schedule(n: int, beta1: float = 1e3, *, cache_dir: str | os.PathLike | None = None,
                      method: str = "quadrature") -> Tensor:
    """The cached :func:`find_alphas` schedule (float64 ``[n]``), computed on first use.

    The file ``vm_alphas_n{n}_b{beta1:g}[_mc].pt`` in ``cache_dir`` (default
    :func:`schedule_cache_dir`) is written atomically and read with ``weights_only=True``; a file
    that cannot be read or has the wrong shape is recomputed and replaced. ``cache_dir=False``
    disables the cache.
    """
    n = int(n)
    if cache_dir is False:
        return find_alphas(n, beta1, method=method)
    folder = Path(cache_dir) if cache_dir is not None else schedule_cache_dir()
    tag = "" if method == "quadrature" else "_mc"
    path = folder / f"vm_alphas_n{n}_b{float(beta1):g}{tag}.pt"
    if path.exists():
        try:
            alpha = torch.load(path, weights_only=True, map_location="cpu")
            if torch.is_tensor(alpha) and alpha.shape == (n,) and torch.isfinite(alpha).all():
                return alpha.double()
        except Exception:  # noqa: BLE001 - a corrupt cache is recomputed
            pass
    alpha = find_alphas(n, beta1, method=method)
    try:
        import tempfile

        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        os.close(fd)
        try:
            torch.save(alpha.clone(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only cache still gives the schedule
    return alpha
