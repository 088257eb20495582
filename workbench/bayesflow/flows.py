"""The three Bayesian flows (Graves et al. 2023; Wu et al. 2025) as small stateless objects.

Each flow describes one variable: its input distribution ``theta`` (a dict of tensors), the
Bayesian update, the flow distribution p_F(theta | x; t), the network input made from theta, the
losses and the sampler's per-step moves. Steps are numbered i = 1..n: at step i the network sees
theta_{i-1} (after i - 1 observations) at time t = (i - 1) / n, and the sender has accuracy alpha_i.

Shapes: a state ``x`` is ``[B, *S]``; ``i`` and ``t`` are ``[B]``. Per-element losses have the
shape of ``x`` (for the discrete flow, of the class-index tensor ``x``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .vonmises import accuracy_schedule, bessel_ratio, sample_von_mises, wrap

__all__ = ["Flow", "ContinuousFlow", "DiscreteFlow", "PeriodicFlow"]

Theta = dict[str, Tensor]


def _bcast(v: Tensor, ref: Tensor) -> Tensor:
    """A per-sample ``[B]`` value broadcast against ``ref`` ``[B, ...]``."""
    return v.reshape(v.shape[0], *([1] * (ref.ndim - 1))).to(ref.dtype)


def _randn(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


class Flow:
    """Common interface of the per-variable flows (see the module docstring for conventions)."""

    kind = "base"
    has_continuous_loss = True
    default_strategy = "update"

    def prior(self, x: Tensor, generator: torch.Generator | None = None) -> Theta:
        raise NotImplementedError

    def flow_sample(self, x: Tensor, i: Tensor, n: int, generator: torch.Generator | None = None,
                    t: Tensor | None = None) -> Theta:
        """theta ~ p_F(. | x) after i - 1 observations of the n-step schedule (or at time ``t``)."""
        raise NotImplementedError

    def net_input(self, theta: Theta) -> tuple[Tensor, dict[str, Tensor]]:
        """What the network receives for this variable: (main input, extra per-variable inputs)."""
        raise NotImplementedError

    def estimate(self, output: Tensor) -> Tensor:
        """The data-space estimate from the network output (x_hat; class probabilities)."""
        return output

    def loss_discrete(self, x: Tensor, output: Tensor, i: Tensor, n: int,
                      generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def loss_continuous(self, x: Tensor, output: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def update_step(self, theta: Theta, output: Tensor, i: int, n: int,
                    generator: torch.Generator | None = None) -> Theta:
        """One sampler step: a sender sample drawn from the prediction, then the Bayesian update."""
        raise NotImplementedError

    def resimulate(self, output: Tensor, i: int, n: int, generator: torch.Generator | None = None) -> Theta:
        """theta_i drawn from the flow distribution given the prediction in place of the data."""
        ref = self.estimate(output)
        return self.flow_sample_given(ref, torch.full((ref.shape[0],), i + 1, device=ref.device, dtype=torch.long),
                                      n, generator)

    def flow_sample_given(self, est: Tensor, i: Tensor, n: int, generator: torch.Generator | None) -> Theta:
        return self.flow_sample(est, i, n, generator)

    def final(self, output: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The sample from the last network output."""
        return output


class ContinuousFlow(Flow):
    """Gaussian BFN on real data (Graves et al. 2023, sec. 4).

    theta = (mu, rho); prior (0, 1); sender N(x, 1/alpha); update rho' = rho + alpha,
    mu' = (rho mu + alpha y) / rho'. Accuracy schedule gamma(t) = 1 - sigma1^(2t), so
    rho(t) = sigma1^(-2t) and alpha_i = sigma1^(-2i/n) (1 - sigma1^(2/n)); the flow is
    mu ~ N(gamma x, gamma (1 - gamma)). The network receives mu and returns x_hat.

    Args:
        sigma1: the standard deviation of the input distribution at t = 1.
    """

    kind = "continuous"

    def __init__(self, sigma1: float = 0.02) -> None:
        if not 0.0 < sigma1 < 1.0:
            raise ValueError(f"sigma1 must be in (0, 1), got {sigma1}")
        self.sigma1 = float(sigma1)

    def gamma(self, t: Tensor) -> Tensor:
        return 1.0 - self.sigma1 ** (2.0 * t)

    def alpha(self, i: Tensor | int, n: int) -> Tensor:
        i = torch.as_tensor(i, dtype=torch.float64)
        return self.sigma1 ** (-2.0 * i / n) * (1.0 - self.sigma1 ** (2.0 / n))

    def prior(self, x: Tensor, generator: torch.Generator | None = None) -> Theta:
        return {"mu": torch.zeros_like(x), "rho": torch.ones_like(x)}

    def flow_sample(self, x, i, n, generator=None, t=None):
        if t is None:
            t = (i.to(x.dtype) - 1.0) / n
        g = _bcast(self.gamma(t.to(x.dtype)), x)
        mu = g * x + torch.sqrt(g * (1.0 - g)) * _randn(x.shape, x, generator)
        return {"mu": mu, "rho": (1.0 / (1.0 - g)).expand_as(x)}

    @staticmethod
    def bayesian_update(theta: Theta, y: Tensor, alpha: Tensor) -> Theta:
        rho = theta["rho"] + alpha
        return {"mu": (theta["rho"] * theta["mu"] + alpha * y) / rho, "rho": rho}

    def net_input(self, theta):
        return theta["mu"], {}

    def loss_discrete(self, x, output, i, n, generator=None):
        w = n * self.alpha(i, n).to(x.device, x.dtype) / 2.0
        return _bcast(w, x) * (output - x) ** 2

    def loss_continuous(self, x, output, t):
        w = -math.log(self.sigma1) * self.sigma1 ** (-2.0 * t.to(x.dtype))
        return _bcast(w, x) * (x - output) ** 2

    def update_step(self, theta, output, i, n, generator=None):
        a = float(self.alpha(i, n))
        y = output + _randn(output.shape, output, generator) / math.sqrt(a)
        return self.bayesian_update(theta, y, torch.full_like(output, a))


class DiscreteFlow(Flow):
    """Categorical BFN (Graves et al. 2023, sec. 6) on class indices ``x`` ``[B, *S]`` in 0..K-1.

    theta = class probabilities (kept as logits, ``[B, *S, K]``); prior uniform; sender
    y ~ N(alpha (K e_x - 1), alpha K I); update theta' ∝ theta e^y. beta(t) = beta1 t^2,
    alpha_i = beta1 (2i - 1) / n^2; flow theta = softmax(y), y ~ N(beta (K e_x - 1), beta K I).
    The network receives the probabilities theta ``[B, *S, K]`` and returns logits ``[B, *S, K]``.

    Args:
        num_classes: K.
        beta1: final accuracy beta(1).
        mc_samples: Monte-Carlo draws of the discrete-time loss.
    """

    kind = "discrete"

    def __init__(self, num_classes: int, beta1: float = 3.0, mc_samples: int = 16) -> None:
        if num_classes < 2:
            raise ValueError(f"a discrete flow needs at least 2 classes, got {num_classes}")
        self.K, self.beta1, self.mc_samples = int(num_classes), float(beta1), int(mc_samples)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta1 * t**2

    def alpha(self, i: Tensor | int, n: int) -> Tensor:
        i = torch.as_tensor(i, dtype=torch.float64)
        return self.beta1 * (2.0 * i - 1.0) / n**2

    def one_hot(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        return torch.nn.functional.one_hot(x.long().clamp(0, self.K - 1), self.K).to(dtype)

    def prior(self, x, generator=None):
        dtype = torch.get_default_dtype()
        return {"logits": torch.zeros(*x.shape, self.K, device=x.device, dtype=dtype)}

    def _flow_from_probs(self, e: Tensor, beta: Tensor, generator) -> Theta:
        b = _bcast(beta, e)
        y = b * (self.K * e - 1.0) + torch.sqrt(b * self.K) * _randn(e.shape, e, generator)
        return {"logits": y}

    def flow_sample(self, x, i, n, generator=None, t=None):
        dtype = torch.get_default_dtype()
        if t is None:
            t = (i.to(dtype) - 1.0) / n
        return self._flow_from_probs(self.one_hot(x, dtype), self.beta(t.to(dtype)), generator)

    def flow_sample_given(self, est, i, n, generator):
        t = (i.to(est.dtype) - 1.0) / n
        return self._flow_from_probs(est, self.beta(t), generator)

    @staticmethod
    def bayesian_update(theta: Theta, y: Tensor) -> Theta:
        return {"logits": torch.log_softmax(theta["logits"], -1) + y}

    def net_input(self, theta):
        return torch.softmax(theta["logits"], -1), {}

    def estimate(self, output):
        return torch.softmax(output, -1)

    def loss_discrete(self, x, output, i, n, generator=None):
        # KL(sender || receiver mixture) by Monte Carlo. For y ~ N(alpha (K e_k - 1), alpha K I) the
        # log-density is C(y) + y_k + const, so log p_S(y) - log p_R(y) = y_x - logsumexp_k(log p_k + y_k).
        e = self.one_hot(x, output.dtype)
        a = _bcast(self.alpha(i, n).to(output.device, output.dtype), e)
        eps = _randn((self.mc_samples, *e.shape), e, generator)
        y = a * (self.K * e - 1.0) + torch.sqrt(a * self.K) * eps
        logp = torch.log_softmax(output, -1)
        kl = (y * e).sum(-1) - torch.logsumexp(logp + y, -1)
        return n * kl.mean(0)

    def loss_continuous(self, x, output, t):
        e = self.one_hot(x, output.dtype)
        p = torch.softmax(output, -1)
        return self.K * self.beta1 * _bcast(t.to(output.dtype), x.to(output.dtype)) * ((e - p) ** 2).sum(-1)

    def update_step(self, theta, output, i, n, generator=None):
        p = torch.softmax(output, -1)
        k = torch.multinomial(p.reshape(-1, self.K), 1, generator=generator).reshape(p.shape[:-1])
        e = self.one_hot(k, p.dtype)
        a = float(self.alpha(i, n))
        y = a * (self.K * e - 1.0) + math.sqrt(a * self.K) * _randn(e.shape, e, generator)
        return self.bayesian_update(theta, y)

    def final(self, output, generator=None):
        p = torch.softmax(output, -1)
        return torch.multinomial(p.reshape(-1, self.K), 1, generator=generator).reshape(p.shape[:-1])


class PeriodicFlow(Flow):
    """Von Mises BFN on angles in ``[-pi, pi)`` (CrysBFN, Wu et al. 2025).

    theta = (mean m, concentration c); prior (uniform, 0); sender vM(x, alpha_i); update by adding
    natural parameters: c' e^{i m'} = c e^{i m} + alpha e^{i y}. The flow has no closed form: it is
    simulated by drawing all y_1..y_{i-1} at once and summing alpha_j e^{i y_j} (vectorised over the
    batch with its different i). The alphas are the entropy-linear schedule for n steps
    (:func:`~workbench.bayesflow.vonmises.accuracy_schedule`, root-found and cached per n).
    The network receives the mean angle m and, with ``entropy_conditioning``, the log-concentration
    ``log(c + eps)`` (same shape as x; the keyword ``log_conc`` of the network call).

    Args:
        beta1: the target concentration at the end of the schedule.
        entropy_conditioning: hand the network ``log(c + eps)``.
        eps: added to c before the log.
        loss: ``"kl"`` (alpha A(alpha) (1 - cos(x - x_hat)), the exact KL) or ``"wrapped_mse"``
            (alpha A(alpha) wrap(x - x_hat)^2 / 2, equal to second order; CrysBFN uses twice this).
        cache_dir: schedule cache folder (None: the user cache; False: no cache).
    """

    kind = "periodic"
    has_continuous_loss = False

    def __init__(self, beta1: float = 1e3, entropy_conditioning: bool = True, eps: float = 1e-7,
                 loss: str = "kl", cache_dir: Any = None) -> None:
        if loss not in ("kl", "wrapped_mse"):
            raise ValueError(f"periodic loss must be 'kl' or 'wrapped_mse', got {loss!r}")
        self.beta1, self.entropy_conditioning, self.eps = float(beta1), bool(entropy_conditioning), float(eps)
        self.loss_kind, self.cache_dir = loss, cache_dir
        self._alphas: dict[int, Tensor] = {}

    def alphas(self, n: int) -> Tensor:
        """The n sender accuracies (float64, CPU), computed or loaded once per n."""
        if n not in self._alphas:
            self._alphas[n] = accuracy_schedule(n, self.beta1, cache_dir=self.cache_dir)
        return self._alphas[n]

    def alpha(self, i: Tensor | int, n: int) -> Tensor:
        return self.alphas(n)[torch.as_tensor(i, dtype=torch.long).cpu() - 1]

    def prior(self, x, generator=None):
        m = (2.0 * torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64) - 1.0) * math.pi
        return {"mean": m.to(x.dtype), "conc": torch.zeros_like(x)}

    def simulate(self, x: Tensor, counts: Tensor, n: int, generator: torch.Generator | None = None) -> Theta:
        """theta after ``counts[b]`` observations of the n-step schedule from sender vM(x, alpha_j)."""
        B = x.shape[0]
        counts = counts.to(device=x.device, dtype=torch.long)
        alphas = self.alphas(n).to(x.device)
        sample = torch.repeat_interleave(torch.arange(B, device=x.device), counts)          # [M]
        start = torch.cumsum(counts, 0) - counts
        j = torch.arange(sample.numel(), device=x.device) - start[sample]                  # 0-based step
        a = alphas[j].reshape(-1, *([1] * (x.ndim - 1))).expand(-1, *x.shape[1:])
        y = sample_von_mises(x[sample].double(), a, generator).double()
        re = torch.zeros(x.shape, dtype=torch.float64, device=x.device).index_add_(0, sample, a * torch.cos(y))
        im = torch.zeros(x.shape, dtype=torch.float64, device=x.device).index_add_(0, sample, a * torch.sin(y))
        conc = torch.sqrt(re * re + im * im)
        rand = (2.0 * torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64) - 1.0) * math.pi
        mean = torch.where(_bcast(counts, x) > 0, torch.atan2(im, re), rand)
        return {"mean": mean.to(x.dtype), "conc": conc.to(x.dtype)}

    def flow_sample(self, x, i, n, generator=None, t=None):
        if t is not None and i is None:
            raise ValueError("the periodic flow is defined per step of its n-step schedule; it has no "
                             "continuous-time form")
        return self.simulate(wrap(x), i - 1, n, generator)

    @staticmethod
    def bayesian_update(theta: Theta, y: Tensor, alpha: Tensor) -> Theta:
        c, m = theta["conc"], theta["mean"]
        re = alpha * torch.cos(y) + c * torch.cos(m)
        im = alpha * torch.sin(y) + c * torch.sin(m)
        return {"mean": torch.atan2(im, re), "conc": torch.sqrt(re * re + im * im)}

    def log_conc(self, theta: Theta) -> Tensor:
        return torch.log(theta["conc"] + self.eps)

    def net_input(self, theta):
        extra = {"log_conc": self.log_conc(theta)} if self.entropy_conditioning else {}
        return theta["mean"], extra

    def estimate(self, output):
        return wrap(output)

    def loss_discrete(self, x, output, i, n, generator=None):
        a = self.alpha(i, n).to(x.device)
        w = _bcast(n * a * bessel_ratio(a), x)
        d = x - output
        if self.loss_kind == "kl":
            return w * (1.0 - torch.cos(d))
        return w * wrap(d) ** 2 / 2.0

    def loss_continuous(self, x, output, t):
        raise ValueError("the periodic BFN has only the discrete-time loss (its accuracy schedule is per step)")

    def update_step(self, theta, output, i, n, generator=None):
        a = float(self.alpha(i, n))
        y = sample_von_mises(wrap(output), torch.full_like(output, a), generator)
        return self.bayesian_update(theta, y, torch.full_like(output, a))

    def final(self, output, generator=None):
        return wrap(output)
