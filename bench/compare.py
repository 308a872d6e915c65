#!/usr/bin/env python3
"""Train the chapter's network with gpunet, a hand-written NumPy/CuPy loop and PyTorch; print a table.

    python bench/compare.py --device cpu --epochs 3 [--json results.json]
    python bench/compare.py --model convnet --epochs 2      # the book's convnet: gpunet and PyTorch

All runs use the same data, initial weights, batch order and hyper-parameters
(784-512-10, RMSprop lr=1e-3 rho=0.9, batch 128, uint8 images scaled per batch).
Epochs are interleaved (gpunet, reference, torch; then reference, torch, gpunet; ...) in one process so
that machine noise hits all alike; the table gives the median seconds per epoch,
ratios, test accuracy, and the peak memory of each run measured alone in a
subprocess (host RSS; device memory from CuPy's pool on GPU). PyTorch uses all cores, or
``OMP_NUM_THREADS`` when set (with ``OPENBLAS_NUM_THREADS`` the same, both libraries use that many).

``--model convnet``: the book's convnet (examples/mnist_convnet.py: Conv2D 32-64-64 3x3 ReLU, two 2x2
max-poolings, Dense 64 and 10; RMSprop, batch 64, uint8 images (n, 28, 28, 1) scaled by its first
layer) against the same network in PyTorch (NCHW, gpunet's initial weights transposed to its layout:
``reference.torch_convnet_setup``); the two are checked to compute the same function before timing.
There is no hand-written NumPy reference for the convnet.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import gpunet  # noqa: E402
from gpunet.utils import to_categorical  # noqa: E402
import reference  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
import mnist as mnist_example  # noqa: E402  (examples/mnist.py: the chapter's network)
import mnist_convnet  # noqa: E402  (examples/mnist_convnet.py: the book's convnet)


def load(dataset):
    from gpunet.datasets import fashion_mnist, mnist
    if dataset == "fashion-mnist":
        (x, y), (xt, yt) = fashion_mnist.load_data(verbose=False)
    elif dataset == "mnist":
        (x, y), (xt, yt) = mnist.load_data(verbose=False)
    elif dataset == "mnist-sample":
        (x, y), (xt, yt) = mnist.load_sample()
    else:  # synthetic, MNIST-shaped
        r = np.random.default_rng(0)
        x, y = r.integers(0, 256, (60000, 784), dtype=np.uint8), r.integers(0, 10, 60000).astype(np.uint8)
        xt, yt = x[:10000], y[:10000]
    return x.reshape(len(x), 784), y, xt.reshape(len(xt), 784), yt


INPUT_SHAPES = {"dense": (784,), "convnet": (28, 28, 1)}
DESCRIPTIONS = {"dense": "784-512-10 RMSprop", "convnet": "the book's convnet (Conv2D 32-64-64, Dense 64-10), RMSprop"}


def build(device, model="dense"):
    """The network of examples/mnist.py (dense) or examples/mnist_convnet.py (the book's convnet), compiled
    as they compile it: the benchmark runs exactly what a reader runs."""
    net = (mnist_convnet if model == "convnet" else mnist_example).build(device)
    net.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return net


def sync(dev):
    dev.synchronize()


def peak_device_bytes():
    info = gpunet.memory_info()
    return info["total_bytes"]


def run_alone(impl, args):
    """Peak host RSS (MiB) of one implementation training ``args.epochs`` epochs alone, in a subprocess."""
    cmd = [sys.executable, __file__, "--device", args.device, "--epochs", str(args.epochs), "--dataset",
           args.dataset, "--model", args.model, "--batch-size", str(args.batch_size), "--only", impl]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="dense", choices=["dense", "convnet"],
                   help="dense: the chapter's 784-512-10 (default); convnet: the book's convnet")
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 (dense), 64 (convnet)")
    p.add_argument("--dataset", default="auto", choices=["auto", "fashion-mnist", "mnist", "mnist-sample", "synthetic"])
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--only", choices=["gpunet", "reference", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dataset == "auto":
        args.dataset = "fashion-mnist" if os.path.isdir("/usr/share/datasets/fashion-mnist") else "synthetic"
    if args.batch_size is None:
        args.batch_size = 64 if args.model == "convnet" else 128
    dev = gpunet.device(args.device)
    x, y, xt, yt = load(args.dataset)
    x, xt = x.reshape((len(x),) + INPUT_SHAPES[args.model]), xt.reshape((len(xt),) + INPUT_SHAPES[args.model])
    bs = args.batch_size

    gpunet.random.seed(0)
    net = build(dev, args.model)
    weights = net.get_weights()
    impls = ["gpunet", "reference"] if args.model == "dense" else ["gpunet"]
    try:
        if not args.no_torch and args.only in (None, "torch"):
            import torch
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))   # as NumPy's BLAS
            impls.append("torch")
    except ImportError:
        torch = None
    if args.only:
        impls = [args.only]

    # device-resident data for the references (the gpunet run moves its own copy once per fit)
    xp = dev.xp
    if "reference" in impls:
        xd, yd = dev.asarray(x), dev.asarray(to_categorical(y, 10))
        ref = reference.NumpyNet(weights, xp=xp)
    if "torch" in impls:
        tdev = "cuda" if dev.is_gpu else "cpu"
        if args.model == "convnet":
            tmodel, topt = reference.torch_convnet_setup(weights, tdev)
            nchw = (lambda a: torch.tensor(a, device=tdev).permute(0, 3, 1, 2).contiguous())
            tx, txt = nchw(x), nchw(xt)
            check_same_function(net, tmodel, x[:64], tx[:64])
        else:
            tmodel, topt = reference.torch_setup(weights, tdev)
            tx, txt = torch.tensor(x, device=tdev), torch.tensor(xt, device=tdev)
        ty = torch.tensor(y.astype(np.int64), device=tdev)
    times = {k: [] for k in impls}
    y1h = to_categorical(y, 10)
    for epoch in range(args.epochs):
        state = gpunet.random.get_state()
        order = gpunet.random.generator().permutation(len(x))
        gpunet.random.set_state(state)          # fit draws this same permutation
        for impl in impls[epoch % len(impls):] + impls[:epoch % len(impls)]:   # rotate who goes first
            sync(dev)
            t0 = time.perf_counter()
            if impl == "gpunet":
                net.fit(x, y1h, epochs=epoch + 1, initial_epoch=epoch, batch_size=bs, verbose=0)
            elif impl == "reference":
                reference.numpy_epoch(ref, xd, yd, dev.asarray(order), bs)
            else:
                reference.torch_epoch(tmodel, topt, tx, ty, torch.tensor(order, device=tdev), bs)
                if dev.is_gpu:
                    torch.cuda.synchronize()
            sync(dev)
            times[impl].append(time.perf_counter() - t0)
    acc = {}
    if "gpunet" in impls:
        acc["gpunet"] = net.evaluate(xt, to_categorical(yt, 10), batch_size=1024, verbose=0)[1]
    if "reference" in impls:
        acc["reference"] = ref.predict_accuracy(dev.asarray(xt), dev.asarray(yt))
    if "torch" in impls:
        acc["torch"] = reference.torch_accuracy(tmodel, txt, torch.tensor(yt, device=tdev))
    if args.only:
        rss = _peak_rss_mib()
        print(json.dumps({"peak_rss_mib": rss, "device_pool_mib": peak_device_bytes() / 2 ** 20,
                          "median_s": statistics.median(times[args.only])}))
        return

    mem = {impl: run_alone(impl, args) for impl in impls}
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    print(f"\n{args.epochs} epochs of {DESCRIPTIONS[args.model]} on {args.dataset} ({len(x)} images), batch {bs}, "
          f"device {dev}; epochs interleaved in one process")
    print(f"{'implementation':<16}{'s/epoch (median)':>18}{'gpunet ratio':>14}{'paired':>8}{'test acc':>10}"
          f"{'peak RSS MiB':>14}" + ("{:>14}".format("device MiB") if dev.is_gpu else ""))
    for impl in impls:
        m = mem.get(impl) or {}
        ratio = med["gpunet"] / med[impl]
        # median of the epoch-by-epoch ratios (each gpunet epoch against the same epoch of impl, run
        # back to back): less sensitive than the ratio of medians to a machine whose speed drifts
        paired = statistics.median(g / t for g, t in zip(times["gpunet"], times[impl]))
        rows.append({"impl": impl, "median_s_per_epoch": med[impl], "epoch_times": times[impl],
                     "gpunet_over_this": ratio, "gpunet_over_this_paired": paired, "test_accuracy": acc[impl],
                     "peak_rss_mib": m.get("peak_rss_mib"), "device_pool_mib": m.get("device_pool_mib")})
        print(f"{impl:<16}{med[impl]:>18.3f}{ratio:>14.2f}{paired:>8.2f}{acc[impl]:>10.4f}"
              f"{(m.get('peak_rss_mib') or float('nan')):>14.0f}"
              + (f"{(m.get('device_pool_mib') or float('nan')):>14.0f}" if dev.is_gpu else ""))
    if args.json:
        versions = {"python": platform.python_version(), "numpy": np.__version__, "gpunet": gpunet.__version__}
        if torch is not None:
            versions["torch"] = torch.__version__
        if dev.is_gpu:
            versions["cupy"] = gpunet.backend.cupy_module().__version__
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "processor": _cpu_name(),
                "cores": os.cpu_count(), "device": str(dev), "model": args.model, "dataset": args.dataset,
                "epochs": args.epochs,
                "batch_size": bs, "versions": versions,
                "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
                "load_average_after": os.getloadavg()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)


def check_same_function(net, tmodel, x, tx):
    """The PyTorch convnet with gpunet's weights must give gpunet's probabilities (float32 rounding aside)."""
    import torch
    with torch.no_grad():
        theirs = torch.softmax(tmodel(tx.float() / 255), dim=1).cpu().numpy()
    err = float(np.abs(net.predict(x) - theirs).max())
    if err > 1e-4:
        raise SystemExit(f"compare.py: the PyTorch convnet does not compute gpunet's function (max |dp| {err:.2e})")


def _peak_rss_mib():
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited from the parent across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
