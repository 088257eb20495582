"""Bayesian flow networks (workbench.bayesflow): updates against their closed forms, flows against
sequential Bayesian updates, KL formulas against Monte Carlo, the batched von Mises sampler against
the distribution, the entropy-linear schedule, masks, and training on the three toys plus a joint
system. Each test names the bug it guards."""
from __future__ import annotations

import math

import pytest
import torch

from workbench.bayesflow import (BayesianFlowMethod, ContinuousFlow, DiscreteFlow, JointFlow, PeriodicFlow,
                                 accuracy_schedule, bessel_ratio, entropy_targets, find_alphas, sample_von_mises,
                                 vm_entropy, vm_kl_same_concentration, wrap)
from workbench.bayesflow.toy import (BFNToyMLP, categorical_metrics, categorical_triples, torus_metrics,
                                     torus_mixture, train)
from workbench.toy import gaussian_mixture, toy_metrics


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Schedules go to a temporary cache, never the user's or the repo."""
    monkeypatch.setenv("WORKBENCH_BAYESFLOW_CACHE", str(tmp_path_factory.getbasetemp() / "bfn_cache"))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _vm_logpdf(x, mu, kappa):
    kappa = torch.as_tensor(kappa, dtype=torch.float64)
    return kappa * torch.cos(x - mu) - math.log(2 * math.pi) - (torch.log(torch.special.i0e(kappa)) + kappa)


def _ks2(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    both = torch.cat([a, b]).double()
    order = torch.argsort(both)
    step = torch.cat([torch.full_like(a, 1 / len(a)), torch.full_like(b, -1 / len(b))]).double()[order]
    return float(torch.cumsum(step, 0).abs().max())


# -- Bayesian updates against their closed forms --------------------------------------------------------
def test_gaussian_update_is_the_posterior():
    """Bug guarded: a wrong precision-weighted mean / precision in the Gaussian update (e.g. rho' = rho)."""
    mu, rho, y, alpha = torch.tensor([0.3]), torch.tensor([2.0]), torch.tensor([1.7]), torch.tensor([5.0])
    out = ContinuousFlow.bayesian_update({"mu": mu, "rho": rho}, y, alpha)
    grid = torch.linspace(-6, 6, 200001, dtype=torch.float64)
    logp = -0.5 * rho.double() * (grid - mu.double()) ** 2 - 0.5 * alpha.double() * (y.double() - grid) ** 2
    w = torch.softmax(logp, 0)
    mean = (w * grid).sum()
    var = (w * (grid - mean) ** 2).sum()
    assert abs(float(out["mu"]) - float(mean)) < 1e-5
    assert abs(float(out["rho"]) - 1.0 / float(var)) < 1e-3


def test_discrete_update_is_the_normalised_product_of_likelihoods():
    """Bug guarded: the categorical update not multiplying the prior by the sender likelihoods of y
    (e.g. replacing theta by softmax(y), or a sign error)."""
    K, alpha = 4, 0.7
    theta = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    y = torch.tensor([[0.5, -1.0, 2.0, 0.1]])
    out = torch.softmax(DiscreteFlow.bayesian_update({"logits": theta.log()}, y)["logits"], -1)
    lik = torch.stack([torch.distributions.Normal(alpha * (K * torch.eye(K)[k] - 1), math.sqrt(alpha * K))
                       .log_prob(y).sum(-1) for k in range(K)], -1).exp()
    want = theta * lik / (theta * lik).sum(-1, keepdim=True)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_von_mises_update_adds_natural_parameters():
    """Bug guarded: a wrong posterior mean direction or concentration in the von Mises update (e.g.
    atan2 arguments swapped, or c' = c + alpha)."""
    m, c, y, alpha = torch.tensor([2.5]), torch.tensor([3.0]), torch.tensor([-2.8]), torch.tensor([4.0])
    out = PeriodicFlow.bayesian_update({"mean": m, "conc": c}, y, alpha)
    grid = torch.linspace(-math.pi, math.pi, 4001, dtype=torch.float64)[:-1]
    post = _vm_logpdf(grid, m.double(), c) + _vm_logpdf(y.double(), grid, alpha)
    post = post - torch.logsumexp(post, 0) - math.log(2 * math.pi / len(grid))
    want = _vm_logpdf(grid, out["mean"].double(), out["conc"].double())
    torch.testing.assert_close(post, want, rtol=0, atol=1e-5)


# -- flow distributions against sequential updates ------------------------------------------------------
def test_continuous_flow_equals_sequential_updates():
    """Bug guarded: the flow's gamma / variance not matching i - 1 Bayesian updates with the
    schedule's alphas (e.g. gamma(t) with sigma1^t, or variance gamma instead of gamma (1 - gamma))."""
    flow, n, M = ContinuousFlow(0.05), 10, 200_000
    x = torch.full((M,), 0.8, dtype=torch.float64)
    g = gen(1)
    for i in (1, 4, 10):
        theta = flow.prior(x)
        for j in range(1, i):
            a = flow.alpha(j, n)
            y = x + torch.randn(M, generator=g, dtype=torch.float64) / a.sqrt()
            theta = flow.bayesian_update(theta, y, a)
        f = flow.flow_sample(x, torch.full((M,), i), n, g)
        torch.testing.assert_close(f["rho"][0], theta["rho"][0])
        se = float(theta["mu"].std()) / math.sqrt(M) + 1e-12
        assert abs(float(f["mu"].mean() - theta["mu"].mean())) < 5 * se + 1e-9
        assert abs(float(f["mu"].var() / theta["mu"].var().clamp_min(1e-30)) - 1.0) < 0.02 or i == 1


def test_discrete_flow_equals_sequential_updates():
    """Bug guarded: beta(t) or the flow's mean / variance not matching the accumulated sender
    samples (e.g. beta1 t instead of beta1 t^2, or variance beta instead of beta K)."""
    K, n, M = 3, 8, 100_000
    flow = DiscreteFlow(K, beta1=2.0)
    x = torch.full((M,), 1)
    g = gen(2)
    i = 6
    logits = flow.prior(x)["logits"]
    e = torch.nn.functional.one_hot(x, K).float()
    for j in range(1, i):
        a = float(flow.alpha(j, n))
        y = a * (K * e - 1) + math.sqrt(a * K) * torch.randn(M, K, generator=g)
        logits = flow.bayesian_update({"logits": logits}, y)["logits"]
    seq = torch.softmax(logits, -1)
    f = torch.softmax(flow.flow_sample(x, torch.full((M,), i), n, g)["logits"], -1)
    torch.testing.assert_close(f.mean(0), seq.mean(0), atol=4e-3, rtol=0)
    torch.testing.assert_close(f.std(0), seq.std(0), atol=4e-3, rtol=0)


def test_periodic_flow_equals_sequential_updates_in_distribution():
    """Bug guarded: the vectorised flow simulation summing the wrong alphas / number of steps for
    each sample of a batch with different i (e.g. counting i instead of i - 1 observations)."""
    flow, n, M = PeriodicFlow(beta1=100.0), 12, 40_000
    x = torch.full((M, 1), 2.9, dtype=torch.float64)
    g = gen(3)
    i = torch.tensor([1, 3, 7, 12]).repeat_interleave(M // 4)
    sim = flow.flow_sample(x, i, n, g)
    for step in (3, 7, 12):
        sel = i == step
        theta = flow.prior(x[sel], g)
        for j in range(1, step):
            a = flow.alpha(j, n).expand_as(x[sel])
            y = sample_von_mises(x[sel], a, g)
            theta = flow.bayesian_update(theta, y, a)
        part = {k: v[sel] for k, v in sim.items()}
        for name, f in (("cos", lambda th: torch.cos(th["mean"] - x[sel])), ("conc", lambda th: th["conc"])):
            a_, b_ = f(part), f(theta)
            se = math.sqrt(float(a_.var() + b_.var()) / sel.sum()) + 1e-12
            assert abs(float(a_.mean() - b_.mean())) < 5 * se, (step, name)
            assert _ks2(a_.flatten(), b_.flatten()) < 1.95 * math.sqrt(2 / sel.sum()), (step, name)  # 0.1% level
    assert (sim["conc"][i == 1] == 0).all()


# -- KL formulas against Monte Carlo -----------------------------------------------------------------
def test_gaussian_kl_matches_monte_carlo():
    """Bug guarded: the discrete-time continuous loss weight not being n alpha_i / 2 (the Gaussian KL)."""
    flow, n, i = ContinuousFlow(0.1), 20, 13
    x, xh = torch.tensor([[0.4]]), torch.tensor([[-0.3]])
    a = float(flow.alpha(i, n))
    loss = float(flow.loss_discrete(x, xh, torch.tensor([i]), n))
    y = 0.4 + torch.randn(400_000, generator=gen(4), dtype=torch.float64) / math.sqrt(a)
    kl = (torch.distributions.Normal(0.4, 1 / math.sqrt(a)).log_prob(y)
          - torch.distributions.Normal(-0.3, 1 / math.sqrt(a)).log_prob(y)).mean()
    assert abs(loss / n - float(kl)) < 0.02 * float(kl)
    assert abs(loss - n * (1 - 0.1 ** (2 / n)) / (2 * 0.1 ** (2 * i / n)) * 0.49) < 1e-4 * loss


def test_discrete_kl_matches_monte_carlo():
    """Bug guarded: the simplified discrete-time KL (y_x - logsumexp(log p + y)) not equal to
    KL(sender || receiver mixture) (e.g. a missing log p, or alpha_i = beta1 i / n^2)."""
    K, n, i = 4, 10, 7
    flow = DiscreteFlow(K, beta1=3.0, mc_samples=20_000)
    x = torch.tensor([2])
    logits = torch.tensor([[0.3, -0.5, 1.0, 0.2]])
    ours = float(flow.loss_discrete(x, logits, torch.tensor([i]), n, gen(5))) / n
    a = 3.0 * (2 * i - 1) / n**2
    comp = torch.distributions.Independent(torch.distributions.Normal(a * (K * torch.eye(K) - 1), math.sqrt(a * K)), 1)
    recv = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits[0]), comp)
    send = torch.distributions.Independent(torch.distributions.Normal(a * (K * torch.eye(K)[2] - 1), math.sqrt(a * K)), 1)
    torch.manual_seed(0)
    y = send.sample((200_000,))
    ref = float((send.log_prob(y) - recv.log_prob(y)).mean())
    assert abs(ours - ref) < 0.03 * ref + 1e-3


def test_von_mises_kl_matches_monte_carlo():
    """Bug guarded: the von Mises KL weight not being alpha A(alpha) (e.g. A = I0/I1, or alpha alone)."""
    for kappa in (0.5, 5.0, 80.0):
        x, xh = torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.6, dtype=torch.float64)
        y = sample_von_mises(x.expand(300_000), torch.tensor(kappa, dtype=torch.float64).expand(300_000), gen(6))
        mc = float((_vm_logpdf(y, x, kappa) - _vm_logpdf(y, xh, kappa)).mean())
        ours = float(vm_kl_same_concentration(x, xh, torch.tensor(kappa, dtype=torch.float64)))
        assert abs(ours - mc) < 0.02 * ours + 2e-3, kappa
        flow = PeriodicFlow()
        a = float(flow.alpha(4, 10))
        w = float(flow.loss_discrete(x[None, None], xh[None, None], torch.tensor([4]), 10))
        assert abs(w - 10 * a * float(bessel_ratio(torch.tensor(a))) * (1 - math.cos(0.6))) < 1e-4 * w


# -- the von Mises sampler ------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa", [0.0, 0.05, 1.0, 4.0, 60.0, 2e3, 1e7])
def test_von_mises_sampler_matches_the_distribution(kappa):
    """Bug guarded: a biased batched rejection sampler (e.g. the acceptance test inverted, the
    proposal's sign not random, or the first proposal kept whether accepted or not)."""
    M = 200_000
    loc = torch.full((M,), 3.0)
    s = sample_von_mises(loc, torch.full((M,), kappa), gen(7)).double()
    assert s.dtype == torch.float32 or s.dtype == torch.float64
    assert s.min() >= -math.pi and s.max() < math.pi
    k = torch.tensor(kappa, dtype=torch.float64)
    d = wrap(s - 3.0)
    a1 = float(bessel_ratio(k))
    a2 = float(torch.special.i1e(k) and (torch.special.i0e(k) - 2 * torch.special.i1e(k) / k) / torch.special.i0e(k)) \
        if kappa > 0 else 0.0                     # I2/I0 = 1 - 2 A / kappa
    tol = 5 / math.sqrt(M)
    assert abs(float(torch.cos(d).mean()) - a1) < tol
    assert abs(float(torch.sin(d).mean())) < tol
    assert abs(float(torch.cos(2 * d).mean()) - a2) < tol
    if 0 < kappa <= 100:                          # Kolmogorov-Smirnov against the numerical CDF
        grid = torch.linspace(-math.pi, math.pi, 200_001, dtype=torch.float64)
        pdf = torch.exp(_vm_logpdf(grid, 0.0, k))
        cdf = torch.cumsum((pdf[1:] + pdf[:-1]) / 2 * (grid[1] - grid[0]), 0)
        cdf = torch.cat([cdf.new_zeros(1), cdf])
        ds = torch.sort(d).values
        emp = torch.arange(1, M + 1, dtype=torch.float64) / M
        ks = float((torch.from_numpy(__import__("numpy").interp(ds.numpy(), grid.numpy(), cdf.numpy())) - emp)
                   .abs().max())
        assert ks < 1.63 / math.sqrt(M) * 1.2, ks     # ~1% level


def test_von_mises_sampler_is_reproducible_and_leaves_the_global_rng():
    """Bug guarded: the sampler drawing from the global RNG instead of the generator."""
    state = torch.random.get_rng_state()
    a = sample_von_mises(torch.zeros(1000), torch.full((1000,), 2.0), gen(8))
    b = sample_von_mises(torch.zeros(1000), torch.full((1000,), 2.0), gen(8))
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)


# -- the accuracy schedule ------------------------------------------------------------------------------
def test_schedule_matches_crysbfn_and_bounds():
    """Bug guarded: a wrong entropy target (not linear in i) or a wrong alpha equation; the decoded
    CrysBFN cache values (n = 10, 100, 1000 at beta1 = 1e3) are the reference."""
    for n, first, last, total in ((10, 1.478, 539.0, 1002.4), (100, 0.3994, 74.96, 1045.1), (1000, 0.1246, 8.225, 1375.0)):
        a = accuracy_schedule(n, 1e3)
        assert a.shape == (n,) and (a > 0).all()
        assert abs(float(a[0]) - first) < 2e-3 * first
        assert abs(float(a[-1]) - last) < 2e-3 * last
        assert abs(float(a.sum()) - total) < 2e-3 * total
    beta = entropy_targets(50, 1e3)
    h = vm_entropy(beta)
    lin = math.log(2 * math.pi) + torch.arange(1, 51, dtype=torch.float64) / 50 * (float(vm_entropy(torch.tensor(1e3, dtype=torch.float64))) - math.log(2 * math.pi))
    torch.testing.assert_close(h, lin, atol=1e-9, rtol=0)
    mc = find_alphas(10, 1e3, method="monte_carlo", mc_samples=4000)
    assert (mc / accuracy_schedule(10, 1e3) - 1).abs().max() < 0.03


def test_schedule_cache_is_written_atomically_outside_the_repo(tmp_path):
    """Bug guarded: the cache not used / written into the working directory / loaded unsafely."""
    a = accuracy_schedule(17, 300.0, cache_dir=tmp_path)
    f = tmp_path / "vm_alphas_n17_b300.pt"
    assert f.exists() and [p.name for p in tmp_path.iterdir()] == [f.name]
    torch.testing.assert_close(torch.load(f, weights_only=True), a)
    torch.save(a * 0 + 5.0, f)                   # a planted file is what is read
    assert float(accuracy_schedule(17, 300.0, cache_dir=tmp_path)[0]) == 5.0
    f.write_bytes(b"garbage")                    # a corrupt file is recomputed
    torch.testing.assert_close(accuracy_schedule(17, 300.0, cache_dir=tmp_path), a)


def test_flow_entropy_is_linear_in_i_and_concentration_is_bounded():
    """Bug guarded: alphas that do not make E[c_i] follow the entropy-linear targets, or a flow whose
    concentration exceeds sum alpha_j (it is |sum alpha_j e^{i y_j}|)."""
    n, M = 20, 4000
    flow = PeriodicFlow(beta1=1e3)
    x = torch.zeros(M, 1)
    h_lin, h_sim = [], []
    beta = entropy_targets(n, 1e3)
    cum = torch.cumsum(flow.alphas(n), 0)
    g = gen(9)
    for i in range(2, n + 2):                        # theta after i - 1 = 1..n observations
        c = flow.flow_sample(x, torch.full((M,), i), n, g)["conc"].double()
        assert (c <= cum[i - 2] * (1 + 1e-5)).all()
        h_sim.append(float(vm_entropy(c).mean()))
        h_lin.append(float(vm_entropy(beta[i - 2])))
    h_sim, h_lin = torch.tensor(h_sim), torch.tensor(h_lin)
    span = h_lin[0] - h_lin[-1]
    assert float((h_sim - h_lin).abs().max()) < 0.06 * float(span), (h_sim - h_lin)   # ours: 0.040 at n = 20


# -- losses, masks, global state ------------------------------------------------------------------------
def test_loss_weights_are_finite_and_as_documented():
    """Bug guarded: continuous-time weights differing from -ln(sigma1) sigma1^(-2t) and K beta1 t."""
    cf = ContinuousFlow(0.02)
    t = torch.tensor([0.0, 0.5, 1.0])
    w = cf.loss_continuous(torch.ones(3, 1), torch.zeros(3, 1), t)[:, 0]
    torch.testing.assert_close(w, -math.log(0.02) * 0.02 ** (-2 * t))
    df = DiscreteFlow(3, beta1=2.0)
    logits = torch.tensor([[[0.0, 0.0, 0.0]]]).expand(3, 1, 3)
    w = df.loss_continuous(torch.zeros(3, 1, dtype=torch.long), logits, t)[:, 0]
    torch.testing.assert_close(w, 3 * 2.0 * t * (4 / 9 + 2 / 9))
    for i in (1, 50):
        pf = PeriodicFlow()
        assert torch.isfinite(pf.loss_discrete(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([i]), 50)).all()


def _joint_method(steps=6):
    class Net(torch.nn.Module):
        """Per-node MLP with a mean-pooled context, for {"c": [B, N, 2], "p": [B, N, 1], "d": [B, N]}."""

        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Sequential(torch.nn.Linear(2 + 3 + 3 + 1, 64), torch.nn.SiLU())
            self.dec = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2 + 2 + 3))
            self.seen = []

        def forward(self, theta, t, mask=None, log_conc=None, cond=None):
            self.seen.append((set(theta), set(log_conc), t, mask))
            p = theta["p"]
            h = torch.cat([theta["c"], torch.cos(p), torch.sin(p), log_conc["p"] / 10, theta["d"],
                           t[:, None, None].expand(-1, p.shape[1], 1)], -1)
            h = self.enc(h)
            m = mask[..., None].float()
            ctx = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
            o = self.dec(torch.cat([h, ctx.expand_as(h)], -1))
            return {"c": o[..., :2], "p": torch.atan2(o[..., 2:3], o[..., 3:4]), "d": o[..., 4:]}

    flow = JointFlow(c=ContinuousFlow(0.05), p=PeriodicFlow(beta1=200.0), d=DiscreteFlow(3, beta1=2.0))
    return BayesianFlowMethod(Net(), flow, steps=steps, loss={"c": "discrete", "p": "discrete", "d": "continuous"})


def _joint_data(B=512, N=4, seed=0):
    """Items with 2..4 existing nodes: c = (k, -k) + noise, p = angle 2 pi k / 3 + noise, d = k (a shared
    per-item class k), padded nodes zero."""
    g = gen(seed)
    k = torch.randint(0, 3, (B, 1), generator=g).expand(B, N)
    mask = torch.arange(N)[None] < torch.randint(2, N + 1, (B, 1), generator=g)
    c = torch.stack([k, -k], -1).float() + 0.1 * torch.randn(B, N, 2, generator=g)
    p = wrap(2 * math.pi * k[..., None] / 3 + 0.1 * torch.randn(B, N, 1, generator=g))
    x = {"c": c * mask[..., None], "p": p * mask[..., None], "d": k * mask}
    return x, mask


def test_masked_entries_do_not_enter_the_loss_and_stay_zero():
    """Bug guarded: padded nodes entering the loss (changing them changes it) or left non-zero in samples."""
    method = _joint_method()
    x, mask = _joint_data(8)
    l1 = method.loss({"x": x, "mask": mask}, gen(10))
    y = {k: torch.where(mask[..., None] if v.ndim == 3 else mask, v, v + 7 if k != "d" else (v + 1) % 3)
         for k, v in x.items()}
    l2 = method.loss({"x": y, "mask": mask}, gen(10))
    torch.testing.assert_close(l1.loss, l2.loss)
    assert set(l1.parts) == {"c", "p", "d"} and l1.loss.shape == (8,)
    for move in ("update", "flow"):
        s = method.sample({"x": x, "mask": mask}, generator=gen(11), strategy=move)
        for k, v in s.items():
            m = mask[..., None].expand_as(v) if v.ndim == 3 else mask
            assert (v[~m] == 0).all(), (k, move)
        assert s["d"].dtype == torch.long and s["c"].shape == x["c"].shape
        assert s["p"].abs().max() <= math.pi and (s["d"] >= 0).all() and (s["d"] < 3).all()


def test_one_shared_time_and_no_global_rng():
    """Bug guarded: variables of a joint flow drawn at different steps, log_conc not handed over, or
    the global RNG consumed."""
    method = _joint_method()
    x, mask = _joint_data(16)
    state = torch.random.get_rng_state()
    i = torch.arange(1, 17) % 6 + 1
    out = method.loss({"x": x, "mask": mask}, gen(12), i=i)
    keys, lc_keys, t, _ = method.net.seen[-1]
    assert keys == {"c", "p", "d"} and lc_keys == {"p"}
    torch.testing.assert_close(t, (i.float() - 1) / 6)
    torch.testing.assert_close(out.t, t)
    method.sample({"x": x, "mask": mask}, generator=gen(13))
    assert len(method.net.seen) == 1 + 6 + 1
    assert torch.equal(torch.random.get_rng_state(), state)
    a = method.sample({"x": x, "mask": mask}, generator=gen(13))
    b = method.sample({"x": x, "mask": mask}, generator=gen(13))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- training on the toys -------------------------------------------------------------------------------
# Thresholds: 3x the metric between two independent draws of the data of the same size (the floor).
# Small MLPs on one thread (the fixture restores the thread count): ~5-15 s each on an idle core.

@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_continuous_bfn_learns_the_gaussian_mixture(one_thread):
    """Bug guarded: anything that breaks continuous BFN training or sampling end to end."""
    torch.manual_seed(0)
    data = gaussian_mixture(8192, seed=0)[0]
    ref, other = gaussian_mixture(3000, seed=1)[0], gaussian_mixture(3000, seed=2)[0]
    floor = toy_metrics(other, ref)
    method = BayesianFlowMethod(BFNToyMLP("continuous", 2, hidden=64, depth=2), ContinuousFlow(0.05), steps=50,
                                loss="continuous")
    train(method, data, iters=TRAIN_ITERS, batch_size=256, lr=3e-3, seed=0)
    m = toy_metrics(method.sample({"x": torch.zeros(3000, 2)}, generator=gen(14)), ref)
    assert m["modes_covered"] == 1.0
    print("continuous", m, floor)
    assert m["sliced_w2"] < 3 * floor["sliced_w2"], (m, floor)
    assert m["cov_error"] < 3 * floor["cov_error"], (m, floor)      # catches a mis-scaled sender noise


def test_discrete_bfn_learns_the_categorical_triples(one_thread):
    """Bug guarded: anything that breaks discrete BFN training or sampling end to end."""
    torch.manual_seed(0)
    K = 5
    data = categorical_triples(20000, K, seed=0)
    ref, other = categorical_triples(4000, K, seed=1), categorical_triples(4000, K, seed=2)
    floor = categorical_metrics(other, ref, K)
    method = BayesianFlowMethod(BFNToyMLP("discrete", 3, num_classes=K, hidden=64, depth=2), DiscreteFlow(K, 3.0),
                                steps=50, loss="discrete")
    train(method, data, iters=2 * TRAIN_ITERS, batch_size=256, lr=3e-3, seed=0)
    m = categorical_metrics(method.sample({"x": torch.zeros(4000, 3, dtype=torch.long)}, generator=gen(15)), ref, K)
    print("discrete", m, floor)
    assert m["tv"] < 3 * floor["tv"], (m, floor)


def test_periodic_bfn_learns_the_torus_mixture(one_thread):
    """Bug guarded: anything that breaks periodic BFN training or sampling end to end (wrapping,
    the flow simulation, entropy conditioning)."""
    torch.manual_seed(0)
    data = torus_mixture(8192, seed=0)[0]
    ref, other = torus_mixture(3000, seed=1)[0], torus_mixture(3000, seed=2)[0]
    floor = torus_metrics(other, ref)
    method = BayesianFlowMethod(BFNToyMLP("periodic", 2, hidden=64, depth=2), PeriodicFlow(), steps=50)
    train(method, data, iters=TRAIN_ITERS, batch_size=256, lr=3e-3, seed=0)
    m = torus_metrics(method.sample({"x": torch.zeros(3000, 2)}, generator=gen(16)), ref)
    assert m["modes_covered"] == 1.0
    print("periodic", m, floor)
    assert m["moment_error"] < 3 * floor["moment_error"], (m, floor)
    assert m["hist_tv"] < 3 * floor["hist_tv"], (m, floor)


def test_joint_bfn_trains_with_masks(one_thread):
    """Bug guarded: a joint system whose variables are not learned together (the shared class k must
    agree across the continuous, periodic and discrete variables of an item)."""
    torch.manual_seed(0)
    method = _joint_method(steps=20)
    x, mask = _joint_data(4096)
    train(method, x, iters=600, batch_size=128, lr=3e-3, seed=0, mask=mask)
    xt, mt = _joint_data(500, seed=1)
    s = method.sample({"x": xt, "mask": mt}, generator=gen(17))
    k_c = s["c"][..., 0].round().clamp(0, 2).long()
    k_p = (torch.remainder(s["p"][..., 0], 2 * math.pi) / (2 * math.pi / 3)).round().long() % 3
    agree = ((k_c == s["d"]) & (k_p == s["d"]))[mt].float().mean()
    same_item = (s["d"] == s["d"][:, :1])[mt].float().mean()
    print("joint", float(agree), float(same_item))
    assert agree > 0.8 and same_item > 0.8, (float(agree), float(same_item))


TRAIN_ITERS = 1500
