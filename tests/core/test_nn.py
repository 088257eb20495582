"""workbench.nn: the shared network blocks, each tested once."""
import pytest
import torch
import torch.nn.functional as F

from workbench.nn import AdaGroupNorm, FiLM, FourierFeatures, UNet


def _perturb_film(model: torch.nn.Module) -> None:
    """Give every zero-initialised FiLM map nonzero weights, as training would."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, FiLM):
            with torch.no_grad():
                m.proj.weight.copy_(0.1 * torch.randn(m.proj.weight.shape, generator=g))
                m.proj.bias.copy_(0.1 * torch.randn(m.proj.bias.shape, generator=g))


def test_fourier_features_fixed_by_seed_and_kept_as_buffer():
    t = torch.rand(5)
    a, b, c = FourierFeatures(16, seed=3), FourierFeatures(16, seed=3), FourierFeatures(16, seed=4)
    assert torch.equal(a(t), b(t)) and not torch.allclose(a(t), c(t))
    assert list(a.parameters()) == [] and "weight" in a.state_dict()
    w = a.weight
    assert torch.allclose(a(t), torch.cat([torch.sin(2 * torch.pi * t[:, None] * w),
                                           torch.cos(2 * torch.pi * t[:, None] * w)], -1), atol=1e-5)


def test_film_starts_as_identity_then_scales_and_shifts():
    film, x, emb = FiLM(6, 4), torch.randn(3, 4, 5, 5), torch.randn(3, 6)
    assert torch.equal(film(x, emb), x)
    _perturb_film(film)
    scale, shift = (emb @ film.proj.weight.T + film.proj.bias).chunk(2, -1)
    want = x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    assert torch.allclose(film(x, emb), want, atol=1e-6)


def test_ada_group_norm_affine_comes_from_the_embedding():
    norm, x = AdaGroupNorm(6, 8, groups=4), torch.randn(2, 8, 3, 3, 3)
    emb = torch.randn(2, 6)
    assert torch.allclose(norm(x, emb), F.group_norm(x, 4), atol=1e-6)
    _perturb_film(norm)
    scale, shift = (emb @ norm.film.proj.weight.T + norm.film.proj.bias).chunk(2, -1)
    want = F.group_norm(x, 4) * (1 + scale[..., None, None, None]) + shift[..., None, None, None]
    assert torch.allclose(norm(x, emb), want, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_shapes_time_and_gradients(dims):
    torch.manual_seed(0)
    net = UNet(2, 3, dims=dims, channels=8, channel_mult=(1, 2), attention_levels=(1,), mid_attention=True)
    spatial = (8, 12) if dims == 2 else (4, 8, 6)
    x = torch.randn(2, 2, *spatial)
    assert net(x, torch.rand(2)).shape == (2, 3, *spatial)
    _perturb_film(net)
    out = net(x, torch.full((2,), 0.1))
    assert not torch.allclose(out, net(x, torch.full((2,), 0.9)), atol=1e-4)  # the time embedding is used
    out.square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_unet_attention_and_size_checks():
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    plain = UNet(1, channels=8, channel_mult=(1, 2, 2))
    # one attention block (GroupNorm affine, qkv and output 1x1 convs) on 16 channels in the
    # encoder and one in the decoder of level 1
    one = 2 * 16 + (16 * 48 + 48) + (16 * 16 + 16)
    assert count(UNet(1, channels=8, channel_mult=(1, 2, 2), attention_levels=(1,))) == count(plain) + 2 * one
    assert count(UNet(1, channels=8, channel_mult=(1, 2, 2), mid_attention=True)) > count(plain)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 4"):
        plain(torch.randn(1, 1, 8, 6), torch.rand(1))
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        UNet(1, dims=1)


def test_unet_skip_connections_carry_the_encoder_outputs():
    net = UNet(1, channels=8, channel_mult=(1, 2, 2))
    enc, dec = {}, {}
    for i in range(net.depth + 1):
        net.down[i][-1].register_forward_hook(lambda m, a, out, i=i: enc.__setitem__(i, out))
        net.up[net.depth - i][0].register_forward_pre_hook(lambda m, a, i=i: dec.__setitem__(i, a[0]))
    net(torch.randn(2, 1, 8, 8), torch.rand(2))
    for i, h in enc.items():
        assert torch.equal(dec[i][:, h.shape[1]:], h)
