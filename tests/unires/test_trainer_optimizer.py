"""The trainer's optimizer: fused AdamW where torch has it, with the default implementation's update."""

import torch

from run_support.optimization import build_optimizer, build_parameter_groups
from unires.training.trainer import BACKBONE_PREFIXES


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))


def test_fused_adamw_on_cpu_makes_the_default_update():
    fused_model, plain_model = _model(), _model()
    fused = build_optimizer(build_parameter_groups(fused_model, 1e-2, 1e-3, 0.05, BACKBONE_PREFIXES), betas=(0.9, 0.99))
    plain = torch.optim.AdamW(build_parameter_groups(plain_model, 1e-2, 1e-3, 0.05, BACKBONE_PREFIXES), betas=(0.9, 0.99))
    assert all(group["fused"] for group in fused.param_groups)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        inputs = torch.randn(4, 6, generator=generator)
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            model(inputs).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for got, expected in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(fused_model[0].weight, _model()[0].weight)  # the steps did move the weights


def test_falls_back_to_the_default_adamw_without_a_fused_kernel(monkeypatch):
    real_adamw = torch.optim.AdamW

    def adamw_without_fused_kernel(params, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real_adamw(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", adamw_without_fused_kernel)
    optimizer = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(3))]}], betas=(0.9, 0.999))
    assert isinstance(optimizer, real_adamw) and not optimizer.param_groups[0]["fused"]
