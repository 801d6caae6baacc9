"""Throughput of the built-in trainer per model preset: tokens/s and model FLOPs utilisation.

Times the real training step of ``workers.trainer`` (GPT, AdamW fused, bf16 autocast,
torch.compile) on random tokens, so data loading is not measured. MFU counts the PaLM
formula, 6 N + 12 L T d FLOPs per token (N non-embedding parameters, L layers, T sequence
length, d width), against the GPU's dense bf16 peak (``--peak-tflops``; H100 SXM: 989).

    .venv/bin/python bench/trainer_gpu.py                       # CUDA, the GPU presets
    .venv/bin/python bench/trainer_gpu.py --device cpu --presets tiny,mini --steps 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from workers.trainer.model import GPT, PRESETS, count_params

DEFAULT_PRESETS = "20m,60m,125m,350m,760m,1.3b"


def flops_per_token(name: str, seq_len: int) -> float:
    cfg = PRESETS[name]
    return 6.0 * count_params(cfg, non_embedding=True) + 12.0 * cfg.n_layer * seq_len * cfg.n_embd


def time_preset(name: str, device: torch.device, batch: int, seq_len: int, steps: int,
                warmup: int, compile_model: bool) -> dict:
    cfg = PRESETS[name]
    model = GPT(cfg).to(device)
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    step_model = torch.compile(model) if (compile_model and cuda) else model
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                else torch.autocast("cpu", enabled=False))
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device=device)
    inp, tgt = x[:, :-1], x[:, 1:]

    def one_step() -> None:
        with autocast:
            _, loss = step_model(inp, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_compile = time.perf_counter()
    for _ in range(warmup):
        one_step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t_compile = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tok_s = batch * seq_len * steps / dt
    return {"preset": name, "params_non_embedding": count_params(cfg, non_embedding=True),
            "batch": batch, "seq_len": seq_len, "tokens_per_s": tok_s,
            "tflops": tok_s * flops_per_token(name, seq_len) / 1e12,
            "warmup_s": t_compile,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default=DEFAULT_PRESETS)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="dense bf16 peak of the GPU (H100 SXM 989, H200 989, A100 312)")
    ap.add_argument("--json", default="bench/results/trainer_gpu.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
        if name not in PRESETS:
            raise SystemExit(f"unknown preset {name!r}; known: {list(PRESETS)}")
        seq = min(args.seq_len, PRESETS[name].block_size)
        try:
            r = time_preset(name, device, args.batch, seq, args.steps, args.warmup,
                            not args.no_compile)
        except torch.OutOfMemoryError:
            print(f"{name}: out of memory at batch {args.batch}; lower --batch")
            torch.cuda.empty_cache()
            continue
        r["mfu"] = r["tflops"] / args.peak_tflops if device.type == "cuda" else None
        rows.append(r)
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        print(f"{name:>6s}  {r['params_non_embedding'] / 1e6:8.1f}M  {r['tokens_per_s']:12,.0f}"
              f" tok/s  {r['tflops']:7.1f} TFLOP/s  MFU {mfu:>6s}  mem {mem} GiB", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": gpu, "torch": torch.__version__,
                                               "config": vars(args), "rows": rows}, indent=1))
        print(f"wrote {args.json} ({gpu})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
