#!/usr/bin/python3
"""PyTorch timing of the model forward runs (tests/ref_model.py builds it from the config):
images/s for inference (eval, no_grad) at batch 1 and 8 and for a train step (train mode,
forward + backward of sum(pred * g)) at batch 8, NCHW and channels_last, 2 threads.

usage: bench_model_torch.py CONFIG [--sizes 512,320] [--iters N] [--threads N]
Prints one line per case: torch <mode> <layout> size S batch B: X img/s (T s/iter)."""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_model import Detector  # noqa: E402


def timed(fn, iters):
    fn()  # warm-up: allocations, algorithm choices
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--sizes", default="512,320")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="infer1,infer8,train8")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Detector(json.load(open(a.config)))
    cases = a.cases.split(",")
    for size in [int(s) for s in a.sizes.split(",")]:
        for layout in ("nchw", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            m = model.to(memory_format=fmt)
            for case in cases:
                mode = "train" if case.startswith("train") else "infer"
                b = int(case[len(mode):])
                if mode == "infer" and size != 512:
                    continue
                x = torch.randn(b, 3, size, size).contiguous(memory_format=fmt)
                if mode == "infer":
                    m.eval()

                    def step():
                        with torch.no_grad():
                            m(x)
                else:
                    m.train()
                    with torch.no_grad():
                        cls, reg = m(x)
                    gc, gr = torch.randn_like(cls), torch.randn_like(reg)

                    def step():
                        m.zero_grad(set_to_none=False)
                        c, r = m(x)
                        ((c * gc).sum() + (r * gr).sum()).backward()
                t = timed(step, a.iters)
                print(f"torch {mode} {layout} size {size} batch {b}: {b / t:.2f} img/s ({t:.3f} s/iter)", flush=True)


if __name__ == "__main__":
    main()
