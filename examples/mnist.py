#!/usr/bin/env python3
"""Train the network of *Deep Learning with Python*, chapter 2, on MNIST — on the CPU or a CUDA GPU.

    python examples/mnist.py                       # full MNIST if it can be had, else the embedded sample
    python examples/mnist.py --device gpu --epochs 5
    python examples/mnist.py --dataset fashion-mnist --plot mnist.png
    python examples/mnist.py --epochs 2 --save ckpt.npz      # then, to continue to epoch 5 exactly:
    python examples/mnist.py --resume ckpt.npz --save ckpt.npz
    mpirun -n 2 python examples/mnist.py --distributed      # data-parallel over 2 processes (MPI)

The network, loss, optimizer and metrics are the chapter's (listings 2.2-2.5).
One deliberate difference: the images stay uint8 on the device (4x less memory)
and a ``Rescaling(1 / 255)`` layer does the chapter's ``astype('float32') / 255``
batch by batch.
"""
import argparse
import statistics
import sys
import time

import gpunet
from gpunet import callbacks, distributed, layers, models
from gpunet.utils import to_categorical
from gpunet.datasets import DatasetUnavailableError, fashion_mnist, mnist


def load(name):
    """Returns (data, description)."""
    if name == "mnist-sample":
        return mnist.load_sample(), "the embedded sample of 10,000 real MNIST digits (8,000 train / 2,000 test)"
    if name == "fashion-mnist":
        return fashion_mnist.load_data(), "Fashion-MNIST (60,000 train / 10,000 test)"
    try:
        return mnist.load_data(), "MNIST (60,000 train / 10,000 test)"
    except DatasetUnavailableError as exc:
        if name == "mnist":
            raise
        why = exc.tried[-1][1] if exc.tried else "no source available"
        return mnist.load_sample(), ("the embedded sample of 10,000 real MNIST digits (8,000 train / 2,000 test), "
                                     f"because full MNIST is not in the cache and could not be downloaded ({why})")


def build(device):
    network = models.Sequential(device=device)
    network.add(layers.Rescaling(1 / 255, input_shape=(28 * 28,)))
    network.add(layers.Dense(512, activation="relu"))
    network.add(layers.Dense(10, activation="softmax"))
    return network


def plot(path, history, x_test, y_test, predictions):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'gpunet[plot]'") from None
    fig = plt.figure(figsize=(12, 7))
    grid = fig.add_gridspec(4, 8)
    h = history.history
    epochs = range(1, len(h["loss"]) + 1)
    for col, key in ((0, "loss"), (1, "accuracy")):
        ax = fig.add_subplot(grid[0:2, col * 4:col * 4 + 4])
        ax.plot(epochs, h[key], "o-", label=f"train {key}")
        if "val_" + key in h:
            ax.plot(epochs, h["val_" + key], "s--", label=f"test {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(key)
        ax.legend()
    pred = predictions.argmax(1)
    for i in range(16):
        ax = fig.add_subplot(grid[2 + i // 8, i % 8])
        ax.imshow(x_test[i].reshape(28, 28), cmap="gray_r")
        wrong = pred[i] != y_test[i]
        ax.set_title(f"pred {pred[i]} / true {y_test[i]}" + (" ✗" if wrong else ""), fontsize=8,
                     color="red" if wrong else "black")
        ax.set_xticks([])
        ax.set_yticks([])
        if wrong:
            for s in ax.spines.values():
                s.set_color("red")
                s.set_linewidth(2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    distributed.root_print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    p.add_argument("--dataset", default="auto", choices=["auto", "mnist", "mnist-sample", "fashion-mnist"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "sgd", "adam"])
    p.add_argument("--plot", metavar="FILE.png", help="write loss/accuracy curves and sample predictions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    p.add_argument("--save", metavar="FILE.npz", help="write a full checkpoint after every epoch (atomically)")
    p.add_argument("--resume", metavar="FILE.npz", help="continue from a checkpoint written by --save")
    p.add_argument("--memory", action="store_true",
                   help="report peak host memory and the GPU memory pool after training, then release the pool")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over the processes of an MPI job (mpirun -n N ...); "
                        "--batch-size stays the global batch; with --device gpu each rank takes gpu:<local rank>")
    args = p.parse_args(argv)
    try:
        if args.distributed:
            distributed.init()          # DistributedUnavailableError without mpi4py / an MPI library
            device = distributed.local_device("cpu" if args.device == "cpu" else "gpu") \
                if args.device in ("cpu", "gpu") else gpunet.device(args.device)
        else:
            device = gpunet.device(args.device)
    except (gpunet.DeviceUnavailableError, gpunet.DistributedUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say = distributed.root_print       # print on rank 0 only (plain print without MPI)
    gpunet.random.seed(args.seed)
    try:
        ((x_train, y_train), (x_test, y_test)), what = load(args.dataset)
    except (DatasetUnavailableError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    where = f"{distributed.size()} processes (MPI), rank 0 on {device}" if args.distributed else f"device {device}"
    say(f"Training on {what}, {where}.")
    x_train = x_train.reshape((len(x_train), 28 * 28))
    x_test = x_test.reshape((len(x_test), 28 * 28))
    if args.resume:
        try:
            network = models.load_model(args.resume, device=device)   # also restores the RNG state
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 4
        say(f"Resuming from {args.resume} after epoch {network.epochs_completed}.")
    else:
        network = build(device)
        network.compile(optimizer=args.optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    network.summary(print_fn=say)
    t0 = time.perf_counter()
    train_labels, test_labels = to_categorical(y_train, 10), to_categorical(y_test, 10)
    history = network.fit(x_train, train_labels, epochs=args.epochs, batch_size=args.batch_size,
                          verbose=args.verbose, validation_data=(x_test, test_labels) if args.plot else None,
                          initial_epoch=network.epochs_completed,
                          callbacks=[callbacks.ModelCheckpoint(args.save)] if args.save else None,
                          distributed=args.distributed)     # checkpoints: rank 0 writes
    train_s = time.perf_counter() - t0
    test_loss, test_acc = network.evaluate(x_test, test_labels, verbose=0, distributed=args.distributed)
    times = history.epoch_times
    say(f"test_loss: {test_loss:.4f} - test_acc: {test_acc:.4f}")
    if times:
        say(f"time per epoch: median {statistics.median(times):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in times)}); training {train_s:.1f} s on {device}")
    if args.plot and distributed.is_root():
        plot(args.plot, history, x_test, y_test, network.predict(x_test[:16]))
    if args.memory:
        report_memory(device, say)
    return 0


def report_memory(device, say=print):
    """Peak host memory (RSS) of this process; on a GPU, CuPy's pool before and after release."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # KiB on Linux
    line = f"peak host memory: {peak:.0f} MiB"
    if device.is_gpu:
        used = gpunet.memory_info()
        gpunet.free_memory()
        after = gpunet.memory_info()
        line += (f"; GPU pool: {used['used_bytes'] / 2**20:.1f} MiB in use, {used['total_bytes'] / 2**20:.1f} MiB "
                 f"held, {after['total_bytes'] / 2**20:.1f} MiB held after gpunet.free_memory()")
    say(line)


if __name__ == "__main__":
    sys.exit(main())
