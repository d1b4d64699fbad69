"""Seconds per training step of each registered architecture on this machine (forward, backward, AdamW
step; fp32, channels-last for the CNNs, random data). On a CPU the budget in steps, not the network's
capacity, limits what twenty minutes learn (docs/training.md, "The quality bar"), so this table picks
the CPU recipe's model.

    python benchmarks/train_step.py [--arch resnet18 --arch mobilenet_v3_small ...] [--batch 64]

Figures are this run's medians; compare ratios within one run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import time


def step_seconds(arch: str, batch: int, size: int, bands: int, steps: int, warmup: int, **kwargs) -> tuple[float, int]:
    """The median step time and the model's number of weights."""
    import torch

    from lenstrt.models import create_model, prefers_channels_last

    torch.manual_seed(0)
    model = create_model(arch, bands, size, dropout=0.1, **kwargs)
    cnn = prefers_channels_last(arch)
    if cnn:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, bands, size, size)
    if cnn:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch, 1)).float()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--arch",
        action="append",
        help="repeatable [resnet18, resnet18_half, mobilenet_v3_small, mobilenet_v3_large, vit_small]",
    )
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--bands", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-pool", action="store_true",
                    help="also time each resnet with its stem max-pool kept (on by default without --arch)")
    args = ap.parse_args(argv)
    import torch

    archs = args.arch or ["resnet18", "resnet18_half", "mobilenet_v3_small", "mobilenet_v3_large", "vit_small"]
    rows: list[tuple[str, dict]] = []
    for a in archs:
        rows.append((a, {}))
        if a.startswith("resnet") and (args.max_pool or not args.arch):
            rows.append((a, {"keep_stem_resolution": False}))
    print(
        f"batch {args.batch}, {args.bands}x{args.size}x{args.size}, fp32, {torch.get_num_threads()} threads\n"
    )
    print("| arch | s / step | img / s | speed vs the first row | weights |\n|---|---|---|---|---|")
    ref = None
    for arch, kw in rows:
        s, n = step_seconds(arch, args.batch, args.size, args.bands, args.steps, args.warmup, **kw)
        ref = ref or s
        name = arch + (" (max-pool kept)" if kw else "")
        print(f"| {name} | {s:.3f} | {args.batch / s:.0f} | {ref / s:.1f}x | {n / 1e6:.1f} M |", flush=True)

if __name__ == "__main__":
    main()
