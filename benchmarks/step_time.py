"""Train-step time, tokens/s, MFU and peak memory of each architecture, and each one's ratio to dense, measured
in one run.

    python benchmarks/step_time.py                                  # CPU: default size and d512, eager
    python benchmarks/step_time.py --device cuda                    # GPU: d512, d1024, d2048, bf16, eager + compiled
    python benchmarks/step_time.py --device cuda --sizes d2048 --modes compiled --activation-checkpointing

Each (size, mode, architecture) is measured in a fresh subprocess (clean peak memory), the architectures
interleaved per repeat so machine noise hits them alike; the table reports medians over repeats of the median
step. A step is what training runs: forward, cross-entropy (+ MoE aux loss), backward, AdamW (fused on a GPU).
On a GPU every timed step runs under `torch.cuda.set_sync_debug_mode("error")` after warm-up, so a step that
reads device data back on the host fails the benchmark instead of silently serialising it. The table is
printed and written as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = {  # batch: rows per step on that device kind
    "default": dict(d_model=128, n_layers=4, n_heads=4, ffn_hidden=352, seq_len=96, vocab=320,
                    batch={"cpu": 24, "cuda": 256}),
    "d512": dict(d_model=512, n_layers=8, n_heads=8, ffn_hidden=1376, seq_len=1024, vocab=8192,
                 batch={"cpu": 2, "cuda": 32}),
    "d1024": dict(d_model=1024, n_layers=16, n_heads=16, ffn_hidden=2816, seq_len=2048, vocab=65536,
                  batch={"cpu": 1, "cuda": 8}),
    "d2048": dict(d_model=2048, n_layers=16, n_heads=16, ffn_hidden=5632, seq_len=2048, vocab=65536,
                  batch={"cpu": 1, "cuda": 8}),
}
DEFAULT_SIZES = {"cpu": ["default", "d512"], "cuda": ["d512", "d1024", "d2048"]}
ARCHS = {
    "dense": dict(untie=(), moe=None),
    "mot": dict(untie=("attn", "ffn", "norm"), moe=None),
    "moe4x": dict(untie=(), moe={"experts": 4}),
    "hybrid-text_moe4x": dict(untie=("attn", "ffn", "norm"), moe={"experts": 4, "modalities": ["text"]}),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16, no sparsity


def measure(size: str, arch: str, batch: int, steps: int, device: str, precision: str, threads: int,
            compiled: bool, activation_checkpointing: bool, sorted_attention: bool = False) -> dict:
    import torch

    from mot.grouping import group_tokens
    from mot.models.accounting import flops_per_token
    from mot.models.plan import ParameterPlan
    from mot.models.transformer import ModelConfig, Transformer
    from mot.train.distributed import checkpoint_activations
    from mot.train.optim import build_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s, a = SIZES[size], ARCHS[arch]
    plan = ParameterPlan.from_run(("text", "image"), (("text",), ("image",)), a["untie"], a["moe"])
    cfg = ModelConfig(vocab_size=s["vocab"], max_seq_len=s["seq_len"], d_model=s["d_model"], n_layers=s["n_layers"],
                      n_heads=s["n_heads"], ffn_hidden=s["ffn_hidden"], plan=plan)
    model = Transformer(cfg).to(device)
    model.sorted_attention = sorted_attention  # MoT attention over the sorted rows (flex, GPU): no permutations
    for block in model.blocks:  # what training does (mot.train.distributed.parallelize)
        if activation_checkpointing:
            checkpoint_activations(block)
        if compiled:
            block.compile()
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

    def step():
        with autocast:
            logits = model(tokens, groups)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
            aux = model.aux_loss()
            if aux is not None:
                loss = loss + 0.01 * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3 if compiled else 2):  # warm-up: compilation, allocator, kernel selection
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_sync_debug_mode("error")  # a host-device sync inside a step raises
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
        sync()
        times.append(time.perf_counter() - t0)
        if cuda:
            torch.cuda.set_sync_debug_mode("error")
    if cuda:
        torch.cuda.set_sync_debug_mode(0)
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, whole process
    step_s = statistics.median(times)
    return {"step_s": step_s, "peak_mib": peak, "params": sum(p.numel() for p in model.parameters()),
            "tokens_per_s": batch * s["seq_len"] / step_s, "flops_per_token": flops_per_token(cfg, s["seq_len"])["train"],
            "sync_free": cuda or None}


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), help="default: default d512 (cpu), "
                        "d512 d1024 d2048 (cuda)")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"],
                        help="default: eager (cpu), eager compiled (cuda)")
    parser.add_argument("--batch", type=int, default=None, help="rows per step (default: per size and device)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--sorted-attention", action="store_true",
                        help="MoT attention in modality-sorted order (flex attention; GPU: no CPU backward)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="accelerator peak for MFU (default: looked up from the GPU's name, dense bf16)")
    parser.add_argument("--json", type=Path, default=None, help="write the table here as JSON "
                        "(default: results/benchmarks/step_time_{device}.json)")
    parser.add_argument("--child", nargs=3, metavar=("SIZE", "ARCH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    precision = args.precision or ("bf16" if kind == "cuda" else "fp32")
    sizes = args.sizes or DEFAULT_SIZES[kind]
    modes = args.modes or (["eager", "compiled"] if kind == "cuda" else ["eager"])

    def batch_for(size):
        return args.batch or SIZES[size]["batch"][kind]

    if args.child:
        size, arch, mode = args.child
        print(json.dumps(measure(size, arch, batch_for(size), args.steps, args.device, precision, args.threads,
                                 mode == "compiled", args.activation_checkpointing, args.sorted_attention)))
        return

    runs: dict = {}
    for size in sizes:
        for mode in modes:
            for repeat in range(args.repeats):
                for arch in args.archs:
                    cmd = [sys.executable, __file__, "--child", size, arch, mode, "--steps", str(args.steps),
                           "--device", args.device, "--precision", precision, "--threads", str(args.threads)]
                    if args.batch:
                        cmd += ["--batch", str(args.batch)]
                    if args.activation_checkpointing:
                        cmd.append("--activation-checkpointing")
                    if args.sorted_attention:
                        cmd.append("--sorted-attention")
                    done = subprocess.run(cmd, capture_output=True, text=True)
                    if done.returncode != 0:
                        sys.exit(f"step_time: {size} {arch} {mode} failed:\n{done.stderr[-3000:]}")
                    runs.setdefault((size, mode, arch), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(f"  {size} {mode} {arch} repeat {repeat + 1}: {runs[size, mode, arch][-1]['step_s']:.4f} s",
                          file=sys.stderr, flush=True)

    peak = peak_tflops(args.device, args.peak_tflops)
    rows = []
    for size in sizes:
        for mode in modes:
            dense = None
            for arch in args.archs:
                rs = runs[(size, mode, arch)]
                step_s = statistics.median(r["step_s"] for r in rs)
                peak_mib = statistics.median(r["peak_mib"] for r in rs)
                tokens_per_s = statistics.median(r["tokens_per_s"] for r in rs)
                row = {"size": size, "mode": mode, "arch": arch, "batch": batch_for(size), **{
                    k: SIZES[size][k] for k in ("d_model", "n_layers", "seq_len")}, "params": rs[0]["params"],
                    "step_s": step_s, "step_s_repeats": [r["step_s"] for r in rs], "tokens_per_s": tokens_per_s,
                    "peak_mib": peak_mib, "mfu": tokens_per_s * rs[0]["flops_per_token"] / (peak * 1e12) if peak else None,
                    "sync_free": rs[0]["sync_free"]}
                if arch == "dense":
                    dense = row
                base = dense or row
                row["step_vs_dense"] = step_s / base["step_s"]
                row["peak_vs_dense"] = peak_mib / base["peak_mib"]
                rows.append(row)

    print(f"device={args.device} precision={precision} threads={args.threads} steps={args.steps} "
          f"repeats={args.repeats} activation_checkpointing={args.activation_checkpointing} "
          f"sorted_attention={args.sorted_attention} peak_tflops={peak}")
    print(f"| size | mode | arch | params | step (s) | /dense | tokens/s | MFU | peak MiB | /dense |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"| {r['size']} | {r['mode']} | {r['arch']} | {r['params']:,} | {r['step_s']:.4f} | "
              f"{r['step_vs_dense']:.3f} | {r['tokens_per_s']:,.0f} | {mfu} | {r['peak_mib']:,.0f} | "
              f"{r['peak_vs_dense']:.3f} |")
    path = args.json or Path("results/benchmarks") / f"step_time_{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": args.device, "precision": precision, "threads": args.threads,
                                "steps": args.steps, "repeats": args.repeats, "peak_tflops": peak,
                                "activation_checkpointing": args.activation_checkpointing,
                                "sorted_attention": args.sorted_attention, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
