"""Data parallel under real MPI (tests/bats/mpi.bats): test_model's torch fixture
(tests/fixtures/model/tiny.tns: params, a batch, dLoss/dpred, torch's gradients) cut
into the parts of N ranks, and a rank's grads record checked against torch's gradients
of the whole batch.

  mpi_parts.py split FIXTURE DIR N   DIR/params.tns, DIR/batch<k>.tns, DIR/grad<k>.tns
  mpi_parts.py check FIXTURE GRADS [OTHER]
                                     prints the worst differences; exit 1 past tolerance
                                     (or if OTHER's grads differ from GRADS' in any bit)

A part's grad record says num_total_pos = its image count and carries its rows of
dLoss/dpred times (all images / its images): forward --mpi rescales each part by its
share of the summed num_total_pos, which gives back the fixture's rows.
"""
import sys

import numpy as np

import tnsfile


def split(fixture, out, n):
    params, batch, _, grad, _, _ = tnsfile.read(fixture)
    images = batch[1]["image"]
    total = images.shape[0]
    # uneven parts: the first rank takes the remainder
    sizes = [total // n + (1 if k < total % n else 0) for k in range(n)]
    if min(sizes) < 1:
        sys.exit(f"mpi_parts: {total} images cannot go to {n} ranks")
    tnsfile.write(f"{out}/params.tns", [params])
    at = 0
    for k, size in enumerate(sizes):
        rows = slice(at, at + size)
        meta = dict(batch[2], ids=batch[2]["ids"][rows])
        tnsfile.write(f"{out}/batch{k}.tns", [("batch", {"image": images[rows]}, meta)])
        scale = np.float32(total / size)
        parts = {name: grad[1][name][rows] * scale for name in ("cls", "reg")}
        gmeta = {"step": 0, "num_total_pos": size, "loss_cls": 0, "loss_bbox": 0, "num_pos": 0, "num_neg": 0,
                 "images": size}
        tnsfile.write(f"{out}/grad{k}.tns", [("grad", parts, gmeta)])
        at += size


def grads_of(path):
    return next(t for kind, t, _ in tnsfile.read(path) if kind == "grads")


def check(fixture, grads_path, other=None):
    ref = tnsfile.read(fixture)[4][1]
    got = grads_of(grads_path)
    theirs = grads_of(other) if other else got
    same = all(np.array_equal(a, theirs[k]) for k, a in got.items())
    if not same:
        print(f"{other}: gradients differ from {grads_path}'s")
    worst = {"parameter grads": (0.0, ""), "BN batch mean/var": (0.0, "")}
    for name, c in got.items():
        t = ref[name]
        stat = ".batch_" in name
        scale = np.abs(t).max()
        # a BN bias of exactly zero gradient (the BN after it removes any shift) is
        # rounding noise on both sides: measured against its weight's gradient
        if name.endswith(".bias") and name[:-5] + ".weight" in ref:
            scale = max(scale, np.abs(ref[name[:-5] + ".weight"]).max())
        d = float(np.abs(c - t).max() / max(scale, 1e-30))
        key = "BN batch mean/var" if stat else "parameter grads"
        if d > worst[key][0]:
            worst[key] = (d, name)
    missing = set(ref) - set(got) - {"image"}
    for key, (d, name) in worst.items():
        print(f"{key}: max rel {d:.2e} ({name})")
    if missing:
        print("missing:", sorted(missing)[:5])
    ok = same and not missing and worst["parameter grads"][0] <= 1e-3 and worst["BN batch mean/var"][0] <= 1e-4
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "check":
        check(*sys.argv[2:])
    else:
        sys.exit(__doc__)
