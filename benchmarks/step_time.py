"""Train-step time and peak memory of each architecture, as ratios to dense, measured in one run.

    python benchmarks/step_time.py                       # default size and d_model 512 / 8 layers / seq 1024
    python benchmarks/step_time.py --device cuda --precision bf16 --batch 16

Each (size, architecture) is measured in a fresh subprocess (clean peak memory), architectures
interleaved per repeat so machine noise hits them alike; the table reports medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SIZES = {
    "default": dict(d_model=128, n_layers=4, n_heads=4, ffn_hidden=352, seq_len=96, vocab=320),
    "d512": dict(d_model=512, n_layers=8, n_heads=8, ffn_hidden=1376, seq_len=1024, vocab=8192),
}
ARCHS = {
    "dense": dict(untie=(), moe=None),
    "mot": dict(untie=("attn", "ffn", "norm"), moe=None),
    "moe4x": dict(untie=(), moe={"experts": 4}),
    "hybrid-text_moe4x": dict(untie=("attn", "ffn", "norm"), moe={"experts": 4, "modalities": ["text"]}),
}


def measure(size: str, arch: str, batch: int, steps: int, device: str, precision: str, threads: int,
            compile_model: bool = False) -> dict:
    import torch

    from mot.grouping import group_tokens
    from mot.models.plan import ParameterPlan
    from mot.models.transformer import ModelConfig, Transformer
    from mot.train.optim import build_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s, a = SIZES[size], ARCHS[arch]
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), a["untie"], a["moe"])
    cfg = ModelConfig(vocab_size=s["vocab"], max_seq_len=s["seq_len"], d_model=s["d_model"], n_layers=s["n_layers"],
                      n_heads=s["n_heads"], ffn_hidden=s["ffn_hidden"], plan=plan)
    model = Transformer(cfg).to(device)
    optimizer = build_optimizer(model, {"lr": 1e-3, "weight_decay": 0.1, "betas": (0.9, 0.95)})
    # a Chameleon-like mix: a third text, two thirds image tokens, split point varying per row
    tokens = torch.randint(0, s["vocab"], (batch, s["seq_len"]))
    modality = torch.zeros(batch, s["seq_len"], dtype=torch.long)
    for row in range(batch):
        start = (row * 7) % (s["seq_len"] // 3 + 1)
        modality[row, start:start + 2 * s["seq_len"] // 3] = 1
    groups = group_tokens(modality, plan.group_of_modality, plan.n_groups).to(device)
    tokens = tokens.to(device)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=precision == "bf16")

    forward = torch.compile(model) if compile_model else model

    def step():
        with autocast:
            logits = forward(tokens, groups)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
            aux = model.aux_loss()
            if aux is not None:
                loss = loss + 0.01 * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step()
    step()  # warm-up (allocator, kernels)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, whole process
    from mot.models.accounting import flops_per_token

    params = sum(p.numel() for p in model.parameters())
    return {"step_s": statistics.median(times), "peak_mib": peak, "params": params,
            "tokens_per_s": batch * s["seq_len"] / statistics.median(times),
            "flops_per_token": flops_per_token(cfg, s["seq_len"])["train"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--batch", type=int, default=None, help="default: 24 (default size), 2 (d512)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="accelerator peak for MFU (default: H100 SXM dense bf16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "ARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    def batch_for(size):
        return args.batch or (24 if size == "default" else 2)

    if args.child:
        size, arch = args.child
        print(json.dumps(measure(size, arch, batch_for(size), args.steps, args.device, args.precision, args.threads,
                                 args.compile)))
        return

    results: dict = {}
    for size in args.sizes:
        for _ in range(args.repeats):
            for arch in args.archs:
                cmd = [sys.executable, __file__, "--child", size, arch, "--steps", str(args.steps),
                       "--device", args.device, "--precision", args.precision, "--threads", str(args.threads)]
                if args.batch:
                    cmd += ["--batch", str(args.batch)]
                if args.compile:
                    cmd.append("--compile")
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results.setdefault((size, arch), []).append(json.loads(out.strip().splitlines()[-1]))
    print(f"device={args.device} precision={args.precision} threads={args.threads} steps={args.steps} "
          f"repeats={args.repeats} compile={args.compile}")
    print(f"{'size':8} {'arch':20} {'params':>11} {'step (s)':>9} {'/dense':>7} {'tok/s':>9} {'peak MiB':>9} {'/dense':>7}"
          f" {'MFU':>6}")
    for size in args.sizes:
        s = SIZES[size]
        print(f"# {size}: d_model {s['d_model']}, {s['n_layers']} layers, seq {s['seq_len']}, batch {batch_for(size)}")
        base = None
        for arch in args.archs:
            runs = results[(size, arch)]
            step_s = statistics.median(r["step_s"] for r in runs)
            peak = statistics.median(r["peak_mib"] for r in runs)
            if arch == "dense" or base is None:
                base = (step_s, peak)
            tokens_per_s = statistics.median(r["tokens_per_s"] for r in runs)
            mfu = tokens_per_s * runs[0]["flops_per_token"] / (args.peak_tflops * 1e12)
            print(f"{size:8} {arch:20} {runs[0]['params']:>11,} {step_s:>9.4f} {step_s / base[0]:>7.3f} "
                  f"{tokens_per_s:>9.0f} {peak:>9.0f} {peak / base[1]:>7.3f} "
                  f"{(f'{100 * mfu:5.1f}%' if args.device == 'cuda' else '-'):>6}")


if __name__ == "__main__":
    main()
