"""Device placement without a GPU: tensors on PyTorch's `meta` device raise when they meet a CPU tensor,
exactly where CUDA tensors would ("Tensor on device cpu is not on the expected device meta"), while CPU
index tensors are accepted, as on CUDA. Every torch-side path that takes a device is run here with
device="meta", so a CPU/CUDA mix-up fails on a CPU-only machine (issue #11, defect 1)."""

import numpy as np
import pytest
import torch

from lenstrt.models import create_model
from lenstrt.train.data import InMemoryCutouts, ResumableBatches, augment, collate_batched
from lenstrt.train.trainer import forward_loss, load_training_data, logits_on_device

META = "meta"


def test_meta_catches_a_cpu_tensor_meeting_a_device_batch():
    """The property every test below relies on, checked on this torch."""
    x = torch.empty(4, 3, 8, 8, device=META)
    with pytest.raises(RuntimeError, match="device"):
        _ = x * torch.rand(4)[:, None, None, None]
    assert x[torch.tensor([0, 2])].shape == (2, 3, 8, 8)  # a CPU index tensor is fine, as on CUDA


def test_augment_keeps_everything_on_the_batch_device():
    x = torch.empty(16, 3, 64, 64, device=META)
    out = augment(x, step=3, seed=1)  # the CPU `scale` of the old code raised here, as on CUDA
    assert out.device.type == META and out.shape == x.shape


def test_band_jitter_on_the_device_and_what_it_changes():
    out = augment(torch.empty(16, 3, 64, 64, device=META), step=3, seed=1, band_jitter=0.2)
    assert out.device.type == META and out.shape == (16, 3, 64, 64)
    x = torch.rand(16, 3, 8, 8) + 1
    plain, jit = augment(x, 3, 1), augment(x, 3, 1, band_jitter=0.2)
    assert torch.equal(plain, augment(x, 3, 1, band_jitter=0.0))  # off: exactly the old augmentation
    gain = jit / plain  # one factor per cutout and band: colours between pixels of a cutout are kept
    torch.testing.assert_close(gain, gain[:, :, :1, :1].expand_as(gain))
    g = gain[:, :, 0, 0]
    assert (g.std(1) > 1e-3).all() and (g > 0.8 - 1e-6).all() and (g < 1.2 + 1e-6).all()
    halves = torch.cat([augment(x[:8], 3, 1, (0, 2), 0.2), augment(x[8:], 3, 1, (1, 2), 0.2)])
    assert torch.equal(jit, halves)  # DDP ranks draw their slice of the global batch's gains


def test_augment_is_the_same_on_any_device():
    x = torch.randn(16, 3, 8, 8)
    a = augment(x, step=5, seed=2)
    b = augment(x.clone(), step=5, seed=2)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, augment(x, step=6, seed=2))


@pytest.mark.parametrize("arch,channels_last", [("resnet18", True), ("resnet18_half", True), ("vit_tiny", False)])
def test_training_step_on_the_device(sim_dir, arch, channels_last):
    """Loading -> batches -> to the device -> augmentation -> preprocessing + forward -> loss -> backward."""
    data = load_training_data([str(sim_dir)])
    ds = InMemoryCutouts(data.images, data.labels)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=ResumableBatches(len(ds), 8, seed=0),
                                         collate_fn=collate_batched)
    x, y = next(iter(loader))
    assert x.device.type == "cpu" and x.shape == (8, 3, 64, 64)
    kwargs = {"keep_stem_resolution": False} if arch.startswith("resnet") else {}
    model = create_model(arch, 3, 64, dropout=0.1, **kwargs).to(META)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    loss = forward_loss(model, x, y, META, step=0, seed=0, augment=True, channels_last=channels_last, amp_dtype=None)
    assert loss.device.type == META and loss.shape == ()
    loss.backward()
    assert all(p.grad is not None and p.grad.device.type == META for p in model.parameters() if p.requires_grad)


def test_warm_started_model_trains_on_the_device(sim_dir, run_dir):
    """--init as train_member does it: the source's weights go into the CPU model, which then moves; no
    CPU tensor may stay behind to meet the device batch."""
    from lenstrt.train import init as winit

    (meta,), _ = winit.resolve(str(run_dir), [("resnet18", 0)])
    model = create_model("resnet18", 3, 64, **meta["arch_kwargs"])
    winit.load_weights(model, meta)
    model = model.to(META).to(memory_format=torch.channels_last).train()
    data = load_training_data([str(sim_dir)])
    x, y = torch.from_numpy(data.images[:8]), torch.from_numpy(data.labels[:8].astype(np.float32))
    loss = forward_loss(model, x, y, META, step=0, seed=0, augment=True, channels_last=True, amp_dtype=None)
    assert loss.device.type == META and loss.shape == ()
    loss.backward()
    assert all(p.grad is not None and p.grad.device.type == META for p in model.parameters() if p.requires_grad)


def test_validation_prediction_on_the_device():
    model = create_model("resnet18", 3, 64).to(META)
    images = np.zeros((10, 3, 64, 64), np.float32)
    outs = list(logits_on_device(model, images, META, batch_size=4))
    assert [o.shape for o in outs] == [(4,), (4,), (2,)] and all(o.device.type == META for o in outs)


def test_torch_runner_forward_on_the_device(run_dir):
    from lenstrt.runtime.torch import TorchRunner

    images = np.zeros((6, 3, 64, 64), np.float32)
    for member in ("resnet18-s0", "vit_tiny-s1000"):
        with TorchRunner(member, run_dir / member / "best.pt", device=META) as r:
            out = r.infer_async(images)  # host array in
            assert out.device.type == META and out.shape == (6,)
            shared = torch.empty(6, 3, 64, 64, device=META)  # a batch the ensemble uploaded once
            assert r.infer_async(shared).shape == (6,)
