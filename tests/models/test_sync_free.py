"""Grouping tokens by modality must not force a host-device sync. Two independent checks:
no op that reads device data back to the host (`aten._local_scalar_dense`, behind .item() /
.tolist() / int(tensor), or data-dependent-shape ops like nonzero) runs in the MoT forward or
backward, and the whole step traces as one graph (`torch.compile(fullgraph=True)`)."""

import pytest
import torch
import torch._dynamo
import torch.fx.experimental.symbolic_shapes
from torch.utils._python_dispatch import TorchDispatchMode

from mot.grouping import group_tokens
from mot.models.plan import ParameterPlan
from mot.models.transformer import ModelConfig, Transformer

SYNCING_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique2"}


class SyncDetector(TorchDispatchMode):
    """Records every op that would force the host to wait for the device."""

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __enter__(self):
        # Tensor.tolist on a CPU tensor reads memory directly (no op is dispatched); on a GPU it syncs
        self._tolist = torch.Tensor.tolist
        detector = self

        def recording_tolist(tensor):
            detector.syncs.append("Tensor.tolist")
            return detector._tolist(tensor)

        torch.Tensor.tolist = recording_tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        if name in SYNCING_OPS:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


def model_and_batch(untie, moe=None):
    torch.manual_seed(0)
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), untie, moe)
    model = Transformer(ModelConfig(vocab_size=40, max_seq_len=16, d_model=16, n_layers=2, n_heads=2,
                                    ffn_hidden=24, plan=plan))
    tokens = torch.randint(0, 40, (2, 16))
    groups = group_tokens((tokens >= 20).long(), plan.group_of_modality, plan.n_groups)
    return model, tokens, groups


EXPERT_CHOICE = {"experts": 4, "routing": "expert_choice"}  # top-1 reads its split sizes on the host off a GPU


@pytest.mark.parametrize("untie,moe", [(("attn", "ffn", "norm"), None), (("ffn",), None), ((), None),
                                       ((), EXPERT_CHOICE)])
def test_mot_forward_and_backward_compile_to_one_graph(untie, moe):
    torch._dynamo.reset()
    model, tokens, groups = model_and_batch(untie, moe)

    def step(tokens):
        return model(tokens, groups).square().mean()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)  # raises on any graph break
    loss = compiled(tokens)
    loss.backward()
    eager = step(tokens)
    torch.testing.assert_close(loss, eager)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("untie,moe", [(("attn", "ffn", "norm"), None), (("ffn", "norm"), None), ((), None),
                                       ((), EXPERT_CHOICE)])
def test_mot_forward_and_backward_read_nothing_back_from_the_device(untie, moe):
    model, tokens, groups = model_and_batch(untie, moe)
    with SyncDetector() as detector:
        model(tokens, groups).square().mean().backward()
    assert detector.syncs == []


def test_the_checks_catch_grouping_done_on_the_device():
    """The checks have teeth: grouping computed from device data inside the step is caught by both."""
    torch._dynamo.reset()
    model, tokens, _ = model_and_batch(("attn", "ffn", "norm"))

    def naive_step(tokens):
        modality = (tokens >= 20).long().flatten()
        sizes = torch.bincount(modality, minlength=2).tolist()  # host sync
        order = torch.argsort(modality, stable=True)
        return sum(chunk.float().sum() for chunk in tokens.flatten()[order].split(sizes))

    with SyncDetector() as detector:
        naive_step(tokens)
    assert "Tensor.tolist" in detector.syncs
    with pytest.raises((torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError,
                        torch.fx.experimental.symbolic_shapes.GuardOnDataDependentSymNode)):
        torch.compile(naive_step, backend="aot_eager", fullgraph=True)(tokens)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("untie,moe,bf16", [(("attn", "ffn", "norm"), None, False), (("attn", "ffn", "norm"), None, True),
                                            ((), {"experts": 4}, True),
                                            (("attn", "ffn", "norm"), {"experts": 4, "modalities": ["text"]}, True)])
def test_no_sync_on_cuda(untie, moe, bf16):
    model, tokens, groups = model_and_batch(untie, moe)
    model, tokens, groups = model.cuda(), tokens.cuda(), groups.to("cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(tokens, groups).float().mean()
        loss.backward()

    step()  # warm-up (lazy initialisation may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
