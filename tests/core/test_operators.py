"""workbench.operators: adjoint identities, CG against a dense solve, ADMM-TV baselines."""
import pytest
import torch

from workbench.adapter import ForwardOperator as AdapterForwardOperator
from workbench.operators import (FiniteDifference, ForwardOperator, FourierSubsample, Mask, admm_tv,
                                 cartesian_mask, check_adjoint, conjugate_gradient, solve_regularized)

F64 = torch.float64


def _rand_mask(shape, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).to(F64)


def test_protocol_reexported():
    assert AdapterForwardOperator is ForwardOperator
    assert isinstance(Mask(torch.ones(3)), ForwardOperator)


@pytest.mark.parametrize("op,x_shape", [
    (Mask(_rand_mask((3, 8, 8))), (2, 3, 8, 8)),
    (FourierSubsample(cartesian_mask((16, 12), 4, 0.1, seed=1)), (2, 1, 16, 12)),
    (FourierSubsample(cartesian_mask((16, 12), 4, 0.1, seed=1), real=False), None),
    (FiniteDifference(-1), (2, 5, 7)),
    (FiniteDifference(1), (2, 5, 7)),
    (FiniteDifference(2), (2, 4, 5, 6)),
    (FiniteDifference(-3), (2, 4, 5, 6)),
])
def test_adjoint_identity(op, x_shape):
    if x_shape is None:  # complex images: check with complex x by hand
        g = torch.Generator().manual_seed(0)
        x = torch.complex(torch.randn(2, 16, 12, dtype=F64, generator=g), torch.randn(2, 16, 12, dtype=F64, generator=g))
        y = torch.complex(torch.randn(2, 16, 12, dtype=F64, generator=g), torch.randn(2, 16, 12, dtype=F64, generator=g))
        lhs, rhs = torch.vdot(op.forward(x).flatten(), y.flatten()), torch.vdot(x.flatten(), op.adjoint(y).flatten())
        assert abs(lhs - rhs) / abs(lhs) < 1e-12
        return
    assert check_adjoint(op, x_shape) < 1e-12
    y = op.forward(torch.randn(x_shape, dtype=F64))
    assert y.shape[0] == x_shape[0] and op.adjoint(y).shape == torch.Size(x_shape)


def test_check_adjoint_detects_wrong_adjoint():
    class Bad(FiniteDifference):
        def adjoint(self, y):
            return -super().adjoint(y)

    assert check_adjoint(Bad(-1), (2, 9)) > 0.1


def test_fourier_fully_sampled_is_unitary():
    op = FourierSubsample(torch.ones(8, 8))
    x = torch.randn(3, 8, 8, dtype=F64)
    y = op.forward(x)
    assert torch.allclose(y.abs().pow(2).sum(), x.pow(2).sum())
    assert torch.allclose(op.adjoint(y), x)


def test_cartesian_mask_reproducible():
    m = cartesian_mask((32, 64), acceleration=4, center_fraction=0.125, seed=3)
    assert m.shape == (32, 64) and torch.equal(m, cartesian_mask((32, 64), 4, 0.125, seed=3))
    assert not torch.equal(m, cartesian_mask((32, 64), 4, 0.125, seed=4))
    assert int(m[0].sum()) == 16 and torch.equal(m, m[:1].expand(32, 64))  # whole lines
    assert bool(m[:, 28:36].all())  # centre lines kept


def test_conjugate_gradient_matches_dense_solve():
    g = torch.Generator().manual_seed(0)
    B, n = 3, 12
    q = torch.randn(B, n, n, dtype=F64, generator=g)
    A = q @ q.transpose(1, 2) + 0.5 * torch.eye(n, dtype=F64)
    b = torch.randn(B, n, dtype=F64, generator=g)
    x = conjugate_gradient(lambda v: (A @ v.unsqueeze(-1)).squeeze(-1), b, tol=1e-12, max_iter=200)
    ref = torch.linalg.solve(A, b)
    assert torch.allclose(x, ref, atol=1e-8, rtol=1e-8)


def _dense(fn, n):
    return torch.stack([fn(e.unsqueeze(0)).flatten() for e in torch.eye(n, dtype=F64)], dim=1)


def test_solve_regularized_matches_dense():
    shape = (4, 5)
    n = 20
    op = Mask(_rand_mask(shape, seed=2))
    diffs = [FiniteDifference(1), FiniteDifference(2)]
    rho = 0.7
    A = _dense(lambda v: op.forward(v.view(1, *shape)), n)
    M = A.T @ A + rho * sum(_dense(lambda v, d=d: d.forward(v.view(1, *shape)), n).T
                            @ _dense(lambda v, d=d: d.forward(v.view(1, *shape)), n) for d in diffs)
    b = torch.randn(2, *shape, dtype=F64)
    x = solve_regularized(op, b, rho, diffs, tol=1e-12, max_iter=200)
    ref = torch.linalg.solve(M, b.flatten(1).T).T.reshape(2, *shape)
    assert torch.allclose(x, ref, atol=1e-8)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_admm_tv_1d_masked():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 128, dtype=F64)
    x[:, 20:50], x[:, 50:90], x[0, 100:120], x[1, 95:110] = 1.0, -0.5, 0.8, 1.5
    op = Mask(_rand_mask((2, 128), p=0.7, seed=1), noise_std=0.05)
    y = op.forward(x + 0.05 * torch.randn(x.shape, dtype=F64, generator=g))
    ls = op.adjoint(y)  # minimum-norm least squares = zero-filled
    rec = admm_tv(op, y, rho=1.0, lam=0.1, axes=(-1,), iters=100)
    e_ls, e_tv = _rel(ls, x), _rel(rec, x)
    assert e_tv < 0.4 * e_ls, (e_tv, e_ls)


def test_admm_tv_3d_masked():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 8, 12, 12, dtype=F64)
    x[:, 2:6, 3:9, 2:7] = 1.0
    x[:, :, 6:11, 6:11] -= 0.7
    op = Mask(_rand_mask(x.shape, p=0.6, seed=1), noise_std=0.05)
    y = op.forward(x + 0.05 * torch.randn(x.shape, dtype=F64, generator=g))
    ls = op.adjoint(y)
    rec = admm_tv(op, y, rho=1.0, lam=0.05, axes=(-3, -2, -1), iters=60)
    e_ls, e_tv = _rel(ls, x), _rel(rec, x)
    assert e_tv < 0.6 * e_ls, (e_tv, e_ls)


def test_admm_tv_2d_fourier():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 32, 32, dtype=F64)
    x[:, 6:26, 8:24] = 1.0
    x[:, 12:20, 12:18] = 0.3
    op = FourierSubsample(cartesian_mask((32, 32), 3, 0.15, seed=0), noise_std=0.02)
    k = op.forward(x)
    noise = torch.complex(torch.randn(k.shape, dtype=F64, generator=g), torch.randn(k.shape, dtype=F64, generator=g))
    y = op.forward(x) + 0.02 * op.mask * noise
    zf = op.adjoint(y)  # zero-filled
    rec = admm_tv(op, y, rho=1.0, lam=0.02, axes=(-2, -1), iters=40, cg_iters=10)
    e_zf, e_tv = _rel(zf, x), _rel(rec, x)
    assert e_tv < 0.5 * e_zf, (e_tv, e_zf)


def test_admm_tv_starts_at_zero_as_the_reference() -> None:
    """Bug: ADMM-TV started at A^T y (on a CT projector A^T A has norm ~ views x side, so A^T y is
    hundreds of times the image and 30 x 20 iterations do not recover; the reference starts at 0),
    or an explicit x0 ignored."""
    from workbench.operators import Mask, admm_tv

    op = Mask(torch.ones(1, 6))
    y = 40.0 * torch.ones(1, 6)
    assert torch.equal(admm_tv(op, y, iters=0), torch.zeros(1, 6))
    start = torch.arange(6.0).reshape(1, 6)
    assert torch.equal(admm_tv(op, y, iters=0, x0=start), start)


@pytest.mark.parametrize("axis", [1, -1])
def test_periodic_finite_difference_wraps_and_has_an_exact_adjoint(axis) -> None:
    """Bug: the periodic difference without its wrap entry ((D x)_{n-1} = x_0 - x_{n-1}), or an
    adjoint rolled the wrong way (CG would then solve a non-symmetric system)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    w = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    d = FiniteDifference(axis, periodic=True)
    dx = d.forward(x)
    first, last = x.narrow(axis, 0, 1), x.narrow(axis, x.shape[axis] - 1, 1)
    assert dx.shape == x.shape and torch.equal(dx.narrow(axis, x.shape[axis] - 1, 1), first - last)
    assert abs(float((dx * w).sum() - (x * d.adjoint(w)).sum())) < 1e-12
    assert float(d.forward(torch.ones_like(x)).abs().max()) == 0.0


def test_finite_difference_refuses_the_batch_axis_unless_whole_tensor() -> None:
    """Bug: differencing along the batch axis silently coupling independent problems."""
    with pytest.raises(ValueError, match="batch dim"):
        FiniteDifference(0)
    x = torch.arange(4.0).reshape(4, 1)
    assert torch.equal(FiniteDifference(0, periodic=True, whole_tensor=True).forward(x).flatten(),
                       torch.tensor([1.0, 1.0, 1.0, -3.0]))
