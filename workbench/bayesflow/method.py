"""Bayesian flow networks as a generative *method* (``loss`` and ``sample`` for the Lightning module).

A method holds a network and a flow (one :class:`~workbench.bayesflow.flows.Flow`, or a
:class:`JointFlow` of them for a dict state). Network call (exactly)::

    network(theta_input, t, [cond=...], [mask=...], [log_conc=...]) -> output

* ``theta_input``: for one variable a Tensor; for a joint flow a dict keyed like the state.
  continuous: the input mean mu (shape of x); discrete: class probabilities ``[B, *S, K]``;
  periodic: the input mean angle m in [-pi, pi) (shape of x).
* ``t``: ``[B]`` float time (i - 1) / n in [0, 1) (1 at the final call of the sampler).
* ``cond`` / ``mask``: the batch's, passed only when present.
* ``log_conc``: only when a periodic variable has entropy conditioning: ``log(c + eps)`` of its
  input concentration (shape of x); a Tensor for a single flow, a dict ``{key: Tensor}`` holding the
  periodic keys only for a joint flow.
* output: continuous / periodic: the data estimate x_hat (the periodic one is wrapped by the
  method); discrete: logits ``[B, *S, K]``; for a joint flow a dict of those.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import Tensor, nn

from ..geometry import align_mask
from ..losses import LossOutput
from .flows import Flow

__all__ = ["JointFlow", "BayesianFlowMethod", "BayesianFlow"]


class JointFlow:
    """A dict of flows sharing one step i / time t (the BFN counterpart of ``JointProcess``).

    Example:
        ``JointFlow({"lattice": ContinuousFlow(0.03), "frac": PeriodicFlow(), "types": DiscreteFlow(5)})``
    """

    def __init__(self, flows: Mapping[str, Flow] | None = None, **kwargs: Flow) -> None:
        self.flows = dict(flows or {}, **kwargs)
        if not self.flows:
            raise ValueError("JointFlow needs at least one flow")

    def __getitem__(self, key: str) -> Flow:
        return self.flows[key]

    def items(self):
        return self.flows.items()


def _leaf(v: Any) -> Tensor:
    return v if torch.is_tensor(v) else next(iter(v.values()))


def _reduce(err: Tensor, mask: Tensor | None, reduction: str) -> Tensor:
    """Per-element ``[B, *S]`` to per-sample ``[B]`` over existing entries."""
    if mask is None:
        total, count = err.flatten(1).sum(1), float(err[0].numel())
    else:
        m = align_mask(mask, err)
        total = (err * m).flatten(1).sum(1)
        count = m.expand_as(err).flatten(1).sum(1).clamp_min(1.0)
    return total if reduction == "sum" else total / count


class BayesianFlowMethod(nn.Module):
    """A Bayesian flow network: training loss and n-step sampler (see the module docstring).

    Args:
        network: see the module docstring for what it receives and returns.
        flow: a :class:`Flow`, a :class:`JointFlow` or a dict of flows (made a JointFlow).
        steps: n, the number of steps of the discrete-time loss and the default of the sampler.
        loss: ``"discrete"`` (n-step loss, i ~ U{1..n}) or ``"continuous"`` (t ~ U[0, 1)); a dict
            gives one per key. If any variable uses the discrete-time loss (always a periodic one),
            the shared time is the step's t = (i - 1) / n for every variable.
        reduction: ``"mean"`` or ``"sum"`` of the per-element loss over existing entries.
        key_weights: optional per-variable loss factors (joint flows).
        strategy: sampler move per step, ``"update"`` (sender sample from the prediction and the
            Bayesian update; BFN's sampler, CrysBFN's "vanilla") or ``"flow"`` (redraw theta_i from the
            flow distribution given the prediction; CrysBFN's default for generation); a dict gives one
            per key. Default "update": on the torus toy it matches the data better (the "flow" move
            re-draws every past observation from the current point estimate and concentrates the
            samples on the modes' centres; benchmarks/bayesflow.py reports both).
    """

    def __init__(self, network: nn.Module, flow: Flow | JointFlow | Mapping[str, Flow], *, steps: int = 100,
                 loss: str | Mapping[str, str] = "discrete", reduction: Literal["mean", "sum"] = "mean",
                 key_weights: Mapping[str, float] | None = None,
                 strategy: str | Mapping[str, str] = "update") -> None:
        super().__init__()
        self.net = network
        if isinstance(flow, Mapping):
            flow = JointFlow(flow)
        self.flow = flow
        self.joint = isinstance(flow, JointFlow)
        self.steps = int(steps)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.key_weights = dict(key_weights or {})
        self.loss_kind = {k: (loss[k] if isinstance(loss, Mapping) else loss) for k, _ in self._flows()}
        for k, f in self._flows():
            lk = self.loss_kind[k]
            if lk not in ("discrete", "continuous"):
                raise ValueError(f"loss must be 'discrete' or 'continuous', got {lk!r}")
            if lk == "continuous" and not f.has_continuous_loss:
                raise ValueError(f"the {f.kind} flow {k!r} has only the discrete-time loss")
        self.strategy = {k: ((strategy[k] if isinstance(strategy, Mapping) else strategy) or f.default_strategy)
                         for k, f in self._flows()}
        for k, s in self.strategy.items():
            if s not in ("update", "flow"):
                raise ValueError(f"strategy must be 'update' or 'flow', got {s!r} for {k!r}")

    @property
    def network(self) -> nn.Module:
        return self.net

    # -- helpers ---------------------------------------------------------------------------------
    def _flows(self):
        return self.flow.items() if self.joint else [("x", self.flow)]

    def _split(self, state: Any) -> dict[str, Any]:
        if self.joint:
            if not isinstance(state, Mapping):
                raise TypeError("a joint Bayesian flow needs a dict state")
            missing = set(self.flow.flows) - set(state)
            if missing:
                raise KeyError(f"the state has no {sorted(missing)} (flows: {list(self.flow.flows)})")
            return dict(state)
        if isinstance(state, Mapping):
            raise TypeError("a single Bayesian flow needs a Tensor state; use a JointFlow for dict states")
        return {"x": state}

    def _join(self, parts: dict[str, Any]) -> Any:
        return parts if self.joint else parts["x"]

    @staticmethod
    def _mask_for(mask: Any, key: str) -> Tensor | None:
        if isinstance(mask, Mapping):
            return mask.get(key)
        return mask

    def _call(self, thetas: dict[str, dict], t: Tensor, batch: dict) -> dict[str, Tensor]:
        inputs, log_conc = {}, {}
        for k, f in self._flows():
            inp, extra = f.net_input(thetas[k])
            inputs[k] = inp
            if "log_conc" in extra:
                log_conc[k] = extra["log_conc"]
        kwargs = {name: batch[name] for name in ("cond", "mask") if batch.get(name) is not None}
        if log_conc:
            kwargs["log_conc"] = log_conc if self.joint else log_conc["x"]
        out = self.net(self._join(inputs), t, **kwargs)
        if self.joint:
            if not isinstance(out, Mapping):
                raise TypeError("the network of a joint Bayesian flow must return a dict keyed like the state")
            return dict(out)
        return {"x": out}

    # -- training ----------------------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator | None = None, *, i: Tensor | None = None) -> LossOutput:
        """Per-sample loss ``[B]`` (parts per variable) for ``batch["x"]``; ``i`` (``[B]``, 1..n) may fix the steps."""
        if not isinstance(batch, dict) or "x" not in batch:
            raise TypeError("batches must be dicts with the state under 'x' (and optional 'mask', 'cond')")
        xs = self._split(batch["x"])
        ref = _leaf(batch["x"])
        B, device = ref.shape[0], ref.device
        n = self.steps
        dtype = torch.get_default_dtype() if not ref.is_floating_point() else ref.dtype
        any_discrete = any(v == "discrete" for v in self.loss_kind.values())
        if i is None and any_discrete:
            i = torch.randint(1, n + 1, (B,), generator=generator, device=device)
        if i is not None:
            i = i.to(device=device, dtype=torch.long)
            t = (i.to(dtype) - 1.0) / n
        else:
            t = torch.rand(B, generator=generator, device=device, dtype=dtype)
        thetas = {}
        for k, f in self._flows():
            x = xs[k]
            if f.kind == "periodic":
                thetas[k] = f.flow_sample(x, i, n, generator)
            else:
                thetas[k] = f.flow_sample(x, i, n, generator, t=t)
        out = self._call(thetas, t, batch)
        parts = {}
        for k, f in self._flows():
            if self.loss_kind[k] == "discrete":
                err = f.loss_discrete(xs[k], out[k], i, n, generator)
            else:
                err = f.loss_continuous(xs[k], out[k], t)
            parts[k] = _reduce(err, self._mask_for(batch.get("mask"), k), self.reduction) * self.key_weights.get(k, 1.0)
        return LossOutput(loss=sum(parts.values()), parts=parts, t=t)

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, template: dict, *, steps: int | None = None, generator: torch.Generator | None = None,
               progress: bool = False, strategy: str | Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        """Samples shaped like ``template["x"]`` (with its mask / cond) after ``steps`` (default n) steps
        plus one final network call at t = 1 (steps + 1 network evaluations). Masked entries are zero.
        ``strategy`` overrides the method's per-step move."""
        if kwargs:
            raise TypeError(f"unexpected sampler options {sorted(kwargs)}")
        n = int(steps or self.steps)
        xs = self._split(template["x"])
        ref = _leaf(template["x"])
        B, device = ref.shape[0], ref.device
        dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
        moves = dict(self.strategy)
        if strategy is not None:
            moves.update({k: (strategy[k] if isinstance(strategy, Mapping) else strategy) for k in moves})
        templ = {k: (x if x.is_floating_point() else x.to(dtype)) for k, x in xs.items()}
        thetas = {k: f.prior(templ[k], generator) for k, f in self._flows()}
        it = range(1, n + 1)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="bfn")
        for step in it:
            t = torch.full((B,), (step - 1) / n, device=device, dtype=dtype)
            out = self._call(thetas, t, template)
            for k, f in self._flows():
                if moves[k] == "update":
                    thetas[k] = f.update_step(thetas[k], out[k], step, n, generator)
                else:
                    thetas[k] = f.resimulate(out[k], step, n, generator)
        out = self._call(thetas, torch.ones(B, device=device, dtype=dtype), template)
        samples = {}
        for k, f in self._flows():
            s = f.final(out[k], generator)
            m = self._mask_for(template.get("mask"), k)
            if m is not None:
                s = torch.where(align_mask(m, s.to(dtype)).bool(), s, torch.zeros((), dtype=s.dtype, device=device))
            samples[k] = s
        return self._join(samples)


BayesianFlow = BayesianFlowMethod
