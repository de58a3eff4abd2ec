#!/usr/bin/python3
"""PyTorch timings of the shapes in bench/bench_layers.c (same batch, 2 threads).

/usr/bin/python3 bench/bench_layers_torch.py [-n batch] [-t seconds] [filter]
Best time over repeated runs after a warm-up; backward counts dinput + dweight
(+ dbias) via autograd, like the C benchmark's conv2d_backward.
"""
import argparse
import time

import torch
import torch.nn.functional as F

CASES = [  # name, c, h, k, kernel, stride, pad, groups
    ("stem 3x3 s2 3->32 @512", 3, 512, 32, 3, 2, 1, 1),
    ("pw 1x1 32->192 @128", 32, 128, 192, 1, 1, 0, 1),
    ("pw 1x1 192->32 @128", 192, 128, 32, 1, 1, 0, 1),
    ("dw 3x3 s1 192 @128", 192, 128, 192, 3, 1, 1, 192),
    ("dw 3x3 s2 192 @128", 192, 128, 192, 3, 2, 1, 192),
    ("dw 3x3 s2 96 @256", 96, 256, 96, 3, 2, 1, 96),
    ("regnet 3x3 g8 128 @64", 128, 64, 128, 3, 1, 1, 8),
    ("fpn 3x3 256->256 @32", 256, 32, 256, 3, 1, 1, 1),
    ("head 3x3 s1 96->24 @64", 96, 64, 24, 3, 1, 1, 1),
]


def best(fn, secs):
    fn()
    t_end, b, reps = time.perf_counter() + secs, 1e30, 0
    while reps < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        b = min(b, time.perf_counter() - t0)
        reps += 1
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("-t", type=float, default=1.0)
    ap.add_argument("filter", nargs="?")
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.n}")
    if not a.filter or a.filter in "sgemm":
        x, y = torch.randn(2048, 2048), torch.randn(2048, 2048)
        t = best(lambda: torch.mm(x, y), a.t)
        print(f"{'torch.mm 2048^3':40s} {t * 1e3:8.2f} ms  {2 * 2048 ** 3 / t * 1e-9:7.1f} GFLOP/s")
    for name, c, h, k, ks, s, p, g in CASES:
        if a.filter and a.filter not in name:
            continue
        x = torch.randn(a.n, c, h, h, requires_grad=True)
        w = torch.randn(k, c // g, ks, ks, requires_grad=True)
        b = torch.randn(k, requires_grad=True)
        with torch.no_grad():
            y = F.conv2d(x, w, b, s, p, 1, g)
        dy = torch.randn_like(y)
        flops = 2.0 * y.numel() * (c // g) * ks * ks

        def fwd():
            with torch.no_grad():
                F.conv2d(x, w, b, s, p, 1, g)

        def bwd():
            # the backward alone: autograd.grad on a graph built outside the timing
            # is not reusable, so time forward+backward and subtract the forward
            out = F.conv2d(x, w, b, s, p, 1, g)
            torch.autograd.grad(out, (x, w, b), dy)

        tf = best(fwd, a.t)
        tfb = best(bwd, a.t)
        tb = max(tfb - tf, 1e-9)
        print(f"{name:40s} fwd {tf * 1e3:8.2f} ms {flops / tf * 1e-9:7.1f} GFLOP/s   "
              f"bwd {tb * 1e3:8.2f} ms {2 * flops / tb * 1e-9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
