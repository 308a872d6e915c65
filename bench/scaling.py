#!/usr/bin/env python3
"""Scaling of ``fit(distributed=True)``: the chapter's network trained by 1, 2, ... MPI ranks.

    python bench/scaling.py                       # 1 and 2 ranks on this machine, Fashion-MNIST if installed
    python bench/scaling.py --ranks 1 2 4 --epochs 3 --json bench/results/scaling.json

The global batch (``--batch-size``, default 128) is the same for every rank count, so every run
does the same arithmetic (strong scaling); the table gives the median seconds per epoch, the
speed-up over 1 rank, the efficiency (speed-up / ranks), the test accuracy, and what one step
all-reduces. It also times a bare all-reduce of that buffer, the floor of the communication.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def worker(args):
    import gpunet
    from gpunet import distributed, layers, models
    from gpunet.utils import to_categorical
    ctx = distributed.init()
    (x, y), (xt, yt) = _load(args.dataset)
    x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    device = distributed.local_device("gpu" if args.device == "gpu" else "cpu")
    gpunet.random.seed(0)
    model = models.Sequential(device=device)
    model.add(layers.Rescaling(1 / 255, input_shape=(784,)))
    model.add(layers.Dense(512, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, to_categorical(y, 10), batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                        distributed=True)
    _, acc = model.evaluate(xt, to_categorical(yt, 10), verbose=0, distributed=True)
    bare = _bare_allreduce(device, model.count_params() + 4)
    if distributed.is_root():
        print(json.dumps({"ranks": distributed.size(), "epoch_times": history.epoch_times, "test_accuracy": acc,
                          "allreduce_ms": bare * 1e3, "params": model.count_params(),
                          "device": str(device), "transport": ctx.transport(device).kind, "mpi": ctx.MPI.Get_library_version().splitlines()[0].strip()}))


def _bare_allreduce(device, count, repeat=200):
    """Seconds per all-reduce of ``count`` float32 (the step's buffer) through gpunet's transport."""
    from gpunet import distributed
    buf = device.xp.ones(count, dtype="float32")
    for _ in range(10):
        distributed.allreduce(buf, average=False)
    device.synchronize()
    distributed.barrier()
    t0 = time.perf_counter()
    for _ in range(repeat):
        distributed.allreduce(buf, average=False)
    device.synchronize()
    return (time.perf_counter() - t0) / repeat


def _load(name):
    from gpunet.datasets import fashion_mnist, mnist
    if name == "fashion-mnist" or (name == "auto" and os.path.isdir("/usr/share/datasets/fashion-mnist")):
        return fashion_mnist.load_data()
    return mnist.load_sample()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dataset", default="auto", choices=["auto", "fashion-mnist", "mnist-sample"])
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from gpunet import distributed
    rows = []
    for n in args.ranks:
        cmd = distributed.mpiexec_command(n) + [sys.executable, __file__, "--worker", "--epochs", str(args.epochs),
                                                "--batch-size", str(args.batch_size), "--dataset", args.dataset,
                                                "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["median_s_per_epoch"] = statistics.median(row["epoch_times"][1:] or row["epoch_times"])
        rows.append(row)
    base = rows[0]["median_s_per_epoch"] * rows[0]["ranks"]
    params = rows[0]["params"]
    print(f"\n{args.epochs} epochs of 784-512-10 RMSprop, global batch {args.batch_size}, {args.dataset}, "
          f"{args.device}; {os.cpu_count()} cores")
    print(f"one step all-reduces {params + 4:,} float32 = {(params + 4) * 4 / 2**20:.2f} MiB "
          "(gradients, loss, 2 stop flags, accuracy); a ring all-reduce sends and receives 2(N-1)/N of it per rank")
    print(f"{'ranks':>5} {'s/epoch':>9} {'speed-up':>9} {'efficiency':>11} {'test acc':>9} {'bare all-reduce':>16}")
    for r in rows:
        r["speedup"] = base / r["median_s_per_epoch"]
        r["efficiency"] = r["speedup"] / r["ranks"]
        print(f"{r['ranks']:>5} {r['median_s_per_epoch']:>9.3f} {r['speedup']:>9.2f} {r['efficiency']:>11.2f} "
              f"{r['test_accuracy']:>9.4f} {r['allreduce_ms']:>13.3f} ms")
    if args.json:
        import gpunet
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "processor": platform.processor(),
                "cores": os.cpu_count(), "python": platform.python_version(), "gpunet": gpunet.__version__,
                "mpi": rows[0]["mpi"], "epochs": args.epochs, "batch_size": args.batch_size,
                "dataset": args.dataset, "device": args.device}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
