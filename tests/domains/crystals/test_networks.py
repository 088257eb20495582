"""CSPNet (domains/crystals/networks.py): symmetries, masking, conditioning and the core call conventions.

Each test's docstring names the bug it guards against; the invariance checks run in float64.
"""
from __future__ import annotations

import math

import pytest
import torch

from workbench.domains.crystals.networks import CSPNet

TWO_PI = 2 * math.pi
K = 7  # a small type alphabet keeps the tests fast


def make_net(task: str = "csp", output: str = "bfn", period: float = TWO_PI, *, mean=0.0, std=3.0,
             use_log_conc: bool | None = None, seed: int = 0) -> CSPNet:
    torch.manual_seed(seed)
    if use_log_conc is None:
        use_log_conc = output == "bfn"
    net = CSPNet(num_types=K, hidden=24, layers=2, num_freqs=6, time_dim=8, coord_period=period,
                 lattice_mean=mean, lattice_std=std, task=task, output=output, use_log_conc=use_log_conc)
    return net.double().eval()


def random_lattice(B: int, g: torch.Generator) -> torch.Tensor:
    """[B, 3, 3] well-conditioned lattices (rows = vectors, ~4 Angstrom)."""
    return 4.0 * (torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(B, 3, 3, generator=g, dtype=torch.float64))


def make_inputs(net: CSPNet, B: int = 3, N: int = 5, seed: int = 1, L: torch.Tensor | None = None):
    """(x, t, kwargs) for ``net`` in its own conventions; all atoms real."""
    g = torch.Generator().manual_seed(seed)
    P, low = net.coord_period, net.coord_low
    frac = low + P * torch.rand(B, N, 3, generator=g, dtype=torch.float64)
    if L is None:
        L = random_lattice(B, g)
    x = {"frac": frac, "lattice": standardise(net, L)}
    kw: dict = {"mask": {"frac": torch.ones(B, N, dtype=torch.float64), "types": torch.ones(B, N, dtype=torch.float64)}}
    if net.task == "csp":
        kw["cond"] = {"types": torch.randint(0, K, (B, N), generator=g)}
    else:
        x["types"] = torch.softmax(torch.randn(B, N, K, generator=g, dtype=torch.float64), -1)
    if net.use_log_conc:
        kw["log_conc"] = {"frac": torch.log(1e3 * torch.rand(B, N, 3, generator=g, dtype=torch.float64) + 1e-7)}
    t = torch.rand(B, generator=g, dtype=torch.float64)
    return x, t, kw


def standardise(net: CSPNet, L: torch.Tensor) -> torch.Tensor:
    return (L.reshape(-1, 9) - net.lattice_mean.double()) / net.lattice_std.double()


def lattice_angstrom(net: CSPNet, out_lattice: torch.Tensor) -> torch.Tensor:
    """The lattice head's matrix M L in Angstrom, [B, 3, 3], for either output mode."""
    std, mean = net.lattice_std.double(), net.lattice_mean.double()
    ML = out_lattice * std + (mean if net.output == "bfn" else 0.0)
    return ML.view(-1, 3, 3)


def circ_diff(a: torch.Tensor, b: torch.Tensor, P: float) -> torch.Tensor:
    d = a - b
    return (d - P * torch.round(d / P)).abs().max()


MODES = [("csp", "bfn", TWO_PI), ("gen", "bfn", TWO_PI), ("csp", "diffusion", 1.0), ("gen", "diffusion", 1.0)]


@pytest.mark.parametrize("task,output,period", MODES)
def test_periodic_translation(task, output, period) -> None:
    """Shifting every atom of a crystal by one vector (mod the period) leaves the lattice / type / raw
    coordinate outputs unchanged and shifts the BFN coordinate estimate by that vector (mod period).
    Guards: absolute instead of relative coordinates in the edges or nodes; an unwrapped difference
    d_ij together with sinusoid frequencies that are not multiples of 2 pi / coord_period. (Either of
    the last two alone keeps the translation invariance: the wrap, or the integer frequencies, undo
    the shift's multiples of the period; the frequency bug alone is caught by the next test.)"""
    net = make_net(task, output, period)
    x, t, kw = make_inputs(net)
    g = torch.Generator().manual_seed(5)
    shift = period * torch.rand(x["frac"].shape[0], 1, 3, generator=g, dtype=torch.float64)
    low = net.coord_low
    x2 = dict(x, frac=torch.remainder(x["frac"] + shift - low, period) + low)
    with torch.no_grad():
        a, b = net(x, t, **kw), net(x2, t, **kw)
    torch.testing.assert_close(b["lattice"], a["lattice"])
    if "types" in a:
        torch.testing.assert_close(b["types"], a["types"])
    if output == "bfn":
        assert circ_diff(b["frac"], a["frac"] + shift, period) < 1e-9
    else:
        torch.testing.assert_close(b["frac"], a["frac"])


@pytest.mark.parametrize("task,output,period", MODES)
def test_continuous_across_the_half_period(task, output, period) -> None:
    """Moving an atom across the point where its difference to another atom wraps (d = +P/2 - e to
    -P/2 + e, the same place on the torus) changes the outputs by O(e) only. Guards: edge sinusoids
    whose frequencies are not multiples of 2 pi / coord_period (e.g. angles in [-pi, pi) fed to a
    network built for period 1): the wrap of d then makes the features jump at |d| = P/2. (The
    translation test alone misses this bug because the wrap of d hides it there.)"""
    net = make_net(task, output, period)
    x, t, kw = make_inputs(net, B=2, N=4)
    low, eps = net.coord_low, 1e-7
    outs = []
    for sign in (-1.0, 1.0):
        frac = x["frac"].clone()
        frac[:, 1, 0] = torch.remainder(frac[:, 0, 0] + period / 2 + sign * eps - low, period) + low
        with torch.no_grad():
            outs.append(net(dict(x, frac=frac), t, **kw))
    a, b = outs
    for k in a:
        diff = circ_diff(a[k], b[k], period) if (k == "frac" and output == "bfn") else (a[k] - b[k]).abs().max()
        assert diff < 1e-5, (k, float(diff))


def _orthogonal(det: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.linalg.det(Q) * det < 0:
        Q = Q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    return Q


@pytest.mark.parametrize("task,output,period", MODES)
@pytest.mark.parametrize("det", [1.0, -1.0], ids=["rotation", "reflection"])
def test_o3_equivariance(task, output, period, det) -> None:
    """A rotation or reflection R acts on the lattice rows as L -> L R^T (frac unchanged): the
    coordinate and type outputs are unchanged and the lattice head's M L becomes M L R^T, also with a
    per-entry standardisation (nonzero mean, 9 stds). Guards: the raw lattice instead of the Gram
    matrix L L^T as the edge feature; a lattice head not of the form M @ L (e.g. L @ M or a plain
    9-vector); rebuilding L from the standardised input with the wrong mean / std."""
    mean = torch.linspace(-0.5, 0.7, 9).tolist()
    std = torch.linspace(2.0, 4.0, 9).tolist()
    net = make_net(task, output, period, mean=mean, std=std)
    g = torch.Generator().manual_seed(2)
    L = random_lattice(3, g)
    R = _orthogonal(det, seed=3)
    x, t, kw = make_inputs(net, L=L)
    x2 = dict(x, lattice=standardise(net, L @ R.T))
    with torch.no_grad():
        a, b = net(x, t, **kw), net(x2, t, **kw)
    torch.testing.assert_close(b["frac"], a["frac"])
    if "types" in a:
        torch.testing.assert_close(b["types"], a["types"])
    torch.testing.assert_close(lattice_angstrom(net, b["lattice"]), lattice_angstrom(net, a["lattice"]) @ R.T)


def _permute(x, kw, perm):
    x2 = {k: v[:, perm] if k != "lattice" else v for k, v in x.items()}
    kw2 = dict(kw)
    if "cond" in kw:
        kw2["cond"] = {"types": kw["cond"]["types"][:, perm]}
    if "log_conc" in kw:
        kw2["log_conc"] = {"frac": kw["log_conc"]["frac"][:, perm]}
    kw2["mask"] = {k: v[:, perm] for k, v in kw["mask"].items()}
    return x2, kw2


@pytest.mark.parametrize("task,output,period", MODES)
def test_permutation_equivariance(task, output, period) -> None:
    """Reordering the atoms of the crystals reorders the per-atom outputs the same way and leaves the
    lattice output unchanged. Guards: position-dependent features (an atom-index embedding, pooling
    that reads a fixed atom such as h[:, 0]) and mis-indexed pairs (d_ij paired with h_j, h_i swapped
    in one place but not the other)."""
    net = make_net(task, output, period)
    x, t, kw = make_inputs(net, N=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    x2, kw2 = _permute(x, kw, perm)
    with torch.no_grad():
        a, b = net(x, t, **kw), net(x2, t, **kw2)
    torch.testing.assert_close(b["lattice"], a["lattice"])
    for k in a:
        if k != "lattice":
            torch.testing.assert_close(b[k], a[k][:, perm])


@pytest.mark.parametrize("task,output,period", MODES)
@pytest.mark.parametrize("mask_kind", ["dict", "tensor"])
def test_padding_invariance(task, output, period, mask_kind) -> None:
    """A crystal padded with extra masked atoms (random coordinates, types and log_conc) gives the same
    outputs on its real atoms and the same lattice as unpadded, and zero outputs on the padding; the
    mask works as a [B, N] tensor and as the data layer's dict. Guards: unmasked mean over neighbours,
    unmasked mean pooling for the lattice head, padded outputs left nonzero."""
    net = make_net(task, output, period)
    B, n, pad = 3, 4, 3
    xs, t, kws = make_inputs(net, B=B, N=n)
    xp, _, kwp = make_inputs(net, B=B, N=n + pad, seed=9)   # the padded atoms' (random) contents
    x2 = {k: (torch.cat([xs[k], xp[k][:, n:]], 1) if k != "lattice" else xs[k]) for k in xs}
    m = torch.cat([torch.ones(B, n), torch.zeros(B, pad)], 1).double()
    kw2 = dict(kws, mask={"frac": m, "types": m} if mask_kind == "dict" else m)
    if "cond" in kws:
        kw2["cond"] = {"types": torch.cat([kws["cond"]["types"], kwp["cond"]["types"][:, n:]], 1)}
    if "log_conc" in kws:
        kw2["log_conc"] = {"frac": torch.cat([kws["log_conc"]["frac"], kwp["log_conc"]["frac"][:, n:]], 1)}
    with torch.no_grad():
        a, b = net(xs, t, **kws), net(x2, t, **kw2)
    torch.testing.assert_close(b["lattice"], a["lattice"])
    for k in a:
        if k != "lattice":
            torch.testing.assert_close(b[k][:, :n], a[k])
            assert torch.all(b[k][:, n:] == 0), k


@pytest.mark.parametrize("task,output,period", [MODES[1], MODES[2]])
def test_crystals_in_a_batch_do_not_interact(task, output, period) -> None:
    """Each crystal's outputs are those it gets alone, whatever the other crystals of the batch hold.
    Guards: pooling / normalising over the batch axis (e.g. a mean over dims (0, 1), BatchNorm), or
    messages between atoms of different crystals."""
    net = make_net(task, output, period)
    x, t, kw = make_inputs(net, B=3, N=5)
    xo, _, kwo = make_inputs(net, B=3, N=5, seed=4)   # different crystals 1 and 2

    def take(d, i):
        return {k: v[i:i + 1] for k, v in d.items()}

    def mix(d, e):      # crystal 0 of d, crystals 1.. of e
        return {k: torch.cat([d[k][:1], e[k][1:]]) for k in d}

    x2 = mix(x, xo)
    kw2 = {k: (mix(v, kwo[k]) if isinstance(v, dict) else v) for k, v in kw.items()}
    alone_kw = {k: (take(v, 0) if isinstance(v, dict) else v) for k, v in kw.items()}
    with torch.no_grad():
        a, b, alone = net(x, t, **kw), net(x2, t, **kw2), net(take(x, 0), t[:1], **alone_kw)
    for k in a:
        torch.testing.assert_close(b[k][:1], a[k][:1])
        torch.testing.assert_close(alone[k], a[k][:1])


@pytest.mark.parametrize("task", ["csp", "gen"])
def test_log_conc_time_and_types_are_wired(task) -> None:
    """Changing log_conc, t, or the atom types (cond for CSP, the state's probabilities for generation)
    changes the outputs; a missing log_conc is an error, not silently zero. Guards: an input that is
    read but dropped from the node features (e.g. log_conc not concatenated, the time embedding of a
    constant)."""
    net = make_net(task, "bfn")
    x, t, kw = make_inputs(net)
    with torch.no_grad():
        a = net(x, t, **kw)
        b = net(x, t, **dict(kw, log_conc={"frac": kw["log_conc"]["frac"] + 1.0}))
        c = net(x, t + 0.3, **kw)
        if task == "csp":
            d = net(x, t, **dict(kw, cond={"types": (kw["cond"]["types"] + 1) % K}))
        else:
            d = net(dict(x, types=x["types"].roll(1, -1)), t, **kw)
    for other in (b, c, d):
        for k in a:
            assert (other[k] - a[k]).abs().max() > 1e-6, k
    with pytest.raises(ValueError, match="log_conc"):
        net(x, t, **{k: v for k, v in kw.items() if k != "log_conc"})


@pytest.mark.parametrize("task,output,period", MODES)
def test_output_keys_and_shapes_match_the_state(task, output, period) -> None:
    """The output dict has exactly the state's keys and shapes (the core's Denoiser / BFN method check
    them); gradients are finite in float32. Guards: an extra 'types' output for CSP, a missing one for
    generation, a [B, 3, 3] lattice."""
    from workbench.precond import _check_structure
    net = make_net(task, output, period).float().train()
    x, t, kw = make_inputs(net)
    x = {k: v.float() for k, v in x.items()}
    kw = {k: ({kk: (vv.float() if vv.is_floating_point() else vv) for kk, vv in v.items()}) for k, v in kw.items()}
    out = net(x, t.float(), **kw)
    _check_structure(out, x)
    assert set(out) == ({"frac", "lattice"} | ({"types"} if task == "gen" else set()))
    if output == "bfn":
        lo = net.coord_low
        assert (out["frac"] >= lo).all() and (out["frac"] < lo + period).all()
    sum(v.square().sum() for v in out.values()).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g_ is not None and torch.isfinite(g_).all() for g_ in grads)


def test_bfn_method_and_denoiser_run_the_network() -> None:
    """End to end with the core: BayesianFlowMethod (JointFlow of periodic frac, continuous lattice,
    discrete types as indices, the network seeing their probabilities; dict mask) computes a finite
    loss, backpropagates and samples with padded atoms left zero. Guards: a call convention that drifted from the core's (keyword names,
    log_conc as a dict, mask as a dict)."""
    from workbench.bayesflow.flows import ContinuousFlow, DiscreteFlow, PeriodicFlow
    from workbench.bayesflow.method import BayesianFlowMethod

    torch.manual_seed(0)
    net = CSPNet(num_types=K, hidden=16, layers=1, num_freqs=4, time_dim=8, task="gen", output="bfn")
    method = BayesianFlowMethod(net, {"frac": PeriodicFlow(cache_dir=False), "lattice": ContinuousFlow(0.03),
                                      "types": DiscreteFlow(K)}, steps=5)
    B, N = 4, 3
    m = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.float32)
    x = {"frac": (torch.rand(B, N, 3) * 2 - 1) * math.pi * m[..., None], "lattice": torch.randn(B, 9),
         "types": torch.randint(0, K, (B, N)) * m.long()}          # the BFN state holds class indices
    batch = {"x": x, "mask": {"frac": m, "types": m}}
    loss = method.loss(batch)
    total = loss.loss.mean()
    assert torch.isfinite(total)
    total.backward()
    with torch.no_grad():
        s = method.sample({"x": x, "mask": batch["mask"]}, steps=2)
    assert s["frac"].shape == (B, N, 3) and torch.all(s["frac"][m == 0] == 0)


def test_diffusion_denoiser_accepts_the_output() -> None:
    """The core's Denoiser (score for the periodic coordinates, eps for the lattice) runs the
    diffusion-mode network with cond and a dict mask and returns finite predictions. Guards: diffusion
    mode returning BFN-style keys or shapes, or refusing the Denoiser's keywords."""
    from workbench.geometry import Geometry
    from workbench.precond import Denoiser
    from workbench.processes.joint import JointProcess
    from workbench.processes.ve import VE
    from workbench.processes.vp import VP

    torch.manual_seed(0)
    net = CSPNet(num_types=K, hidden=16, layers=1, num_freqs=4, time_dim=8, coord_period=1.0, task="csp",
                 output="diffusion", use_log_conc=False)
    den = Denoiser(net, JointProcess({"frac": VE(0.005, 0.5), "lattice": VP()}),
                   prediction={"frac": "score", "lattice": "eps"})
    B, N = 3, 4
    m = torch.ones(B, N)
    m[0, 3] = 0
    x = {"frac": torch.rand(B, N, 3) * m[..., None], "lattice": torch.randn(B, 9)}
    mask = {"frac": m}
    pred = den(x, torch.full((B,), 0.5), Geometry().bind(mask), cond={"types": torch.randint(0, K, (B, N))}, mask=mask)
    x0 = pred.x0
    assert set(x0) == {"frac", "lattice"} and all(torch.isfinite(v).all() for v in x0.values())


def test_posterior_coord_scale_divides_the_offset_by_sqrt_one_plus_conc() -> None:
    """``coord_scale="posterior"``: x_hat = wrap(m + out / sqrt(1 + c)) with c the *raw* concentration.
    Planted bugs: the scale computed from the normalised log_conc (the node feature) or not applied;
    the offset of the unscaled twin network (same weights) must be the scaled one times sqrt(1 + c)."""
    plain = make_net()
    torch.manual_seed(0)
    scaled = CSPNet(num_types=K, hidden=24, layers=2, num_freqs=6, time_dim=8, lattice_std=3.0,
                    coord_scale="posterior").double().eval()
    scaled.load_state_dict(plain.state_dict())
    x, t, kw = make_inputs(plain)
    kw["log_conc"]["frac"][0, 0, 0] = math.log(1e-7)          # c ~ 0: no scaling
    with torch.no_grad():
        a, b = plain(x, t, **kw), scaled(x, t, **kw)
    def offset(out):
        d = out["frac"] - x["frac"]
        return d - TWO_PI * torch.round(d / TWO_PI)

    off_a, off_b = offset(a), offset(b)
    c = torch.exp(kw["log_conc"]["frac"])
    torch.testing.assert_close(off_b * torch.sqrt(1.0 + c), off_a, atol=1e-9, rtol=1e-7)
    assert not torch.allclose(off_a, off_b)
    torch.testing.assert_close(a["lattice"], b["lattice"])
    with pytest.raises(ValueError, match="coord_scale"):
        CSPNet(num_types=K, hidden=8, layers=1, num_freqs=2, time_dim=4, output="diffusion", use_log_conc=False,
               coord_scale="posterior")


def test_eps_lattice_param_is_the_bfn_estimate_from_a_noise_prediction() -> None:
    """``lattice_param="eps"``: x_hat = mu / gamma - sqrt((1 - gamma) / gamma) eps_hat with
    gamma = 1 - sigma1^(2 t) and eps_hat the x0 twin's head (same weights, zero mean), and 0 at t = 0.
    Planted bugs: gamma = 1 - sigma1^t; the sign of the eps term; no guard at t = 0 (NaN / inf)."""
    plain = make_net(mean=0.0)
    torch.manual_seed(0)
    eps_net = CSPNet(num_types=K, hidden=24, layers=2, num_freqs=6, time_dim=8, lattice_std=3.0,
                     lattice_param="eps", sigma1_lattice=0.1).double().eval()
    eps_net.load_state_dict(plain.state_dict())
    x, _, kw = make_inputs(plain)
    t = torch.tensor([0.0, 0.3, 0.9], dtype=torch.float64)
    with torch.no_grad():
        a, b = plain(x, t, **kw), eps_net(x, t, **kw)
    gamma = (1.0 - 0.1 ** (2.0 * t))[1:, None]
    want = x["lattice"][1:] / gamma - torch.sqrt((1.0 - gamma) / gamma) * a["lattice"][1:]
    torch.testing.assert_close(b["lattice"][1:], want)
    assert torch.equal(b["lattice"][0], torch.zeros(9, dtype=torch.float64))
    torch.testing.assert_close(a["frac"], b["frac"])
    with pytest.raises(ValueError, match="lattice_param"):
        CSPNet(num_types=K, hidden=8, layers=1, num_freqs=2, time_dim=4, output="diffusion", use_log_conc=False,
               lattice_param="eps")
