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

A mistake never shows a traceback: it is one line on stderr, ``mnist.py: error: ...``, naming
the flag, the bad value and the fix. Every flag is checked before any data is loaded: numbers,
the files to write (their folder must exist and be writable; nothing is created), the
``--resume`` checkpoint (loaded and checked against this network) and the device. Exit
statuses: see ``EPILOG``.
"""
import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time

try:
    import gpunet
    from gpunet import callbacks, distributed, layers, models
    from gpunet.datasets import DatasetUnavailableError, fashion_mnist, mnist
    from gpunet.errors import FileFormatError
    from gpunet.fileio import atomic_write
    from gpunet.utils import to_categorical
except KeyboardInterrupt:           # Ctrl-C while Python imports gpunet: no traceback either
    if __name__ != "__main__":
        raise
    sys.stderr.write(f"{os.path.basename(sys.argv[0])}: interrupted (Ctrl-C) while starting; nothing was written\n")
    sys.exit(130)

PIXELS, CLASSES = 28 * 28, 10
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
EPILOG = """exit status: 0 done; 2 a bad flag or value (one line on stderr, before any data is loaded);
1 the run failed for another expected reason (dataset unavailable or corrupt, a checkpoint or the plot
could not be written); 130 Ctrl-C (one line naming the last complete checkpoint).
Output folders are never created: they must exist."""


class UsageError(Exception):
    """A flag or its value cannot work: one line on stderr, exit status 2, before any data is loaded."""


class Failure(Exception):
    """The run failed for an expected reason that is not a flag (dataset, disk): one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """argparse's own errors (unknown flag, not an integer, not a choice) are one line too: no usage block."""
        raise UsageError(message if "e.g." in message else f"{message} (see {self.prog} --help)")


def integer(what, minimum, example):
    """An argparse type: an integer of at least ``minimum``. argparse puts the flag in front of the message."""
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"got {text if value is not None else repr(text)}; {what} must be an "
                                             f"integer, {minimum} or more (e.g. {example})")
        return value
    return convert


def parser():
    p = Parser(description=__doc__.splitlines()[0], epilog=EPILOG)
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    p.add_argument("--dataset", default="auto", choices=["auto", "mnist", "mnist-sample", "fashion-mnist"])
    p.add_argument("--epochs", type=integer("the number of epochs", 1, "--epochs 5"), default=5,
                   help="the number of epochs to reach (default: 5); with --resume, counting the checkpoint's")
    p.add_argument("--batch-size", type=integer("the batch size", 1, "--batch-size 128"), default=128)
    p.add_argument("--optimizer", default=None, choices=["rmsprop", "sgd", "adam"],
                   help="default: rmsprop (with --resume: the checkpoint's)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write loss/accuracy curves and sample predictions (the format from the suffix: .png, "
                        ".pdf, .svg...; no suffix: FILE.png)")
    p.add_argument("--seed", type=integer("the seed", 0, "--seed 0"), default=0)
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    p.add_argument("--save", metavar="FILE.npz", help="write a full checkpoint after every epoch (atomically)")
    p.add_argument("--resume", metavar="FILE.npz", help="continue from a checkpoint written by --save")
    p.add_argument("--memory", action="store_true",
                   help="report peak host memory and the GPU memory pool after training, then release the pool")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over the processes of an MPI job (mpirun -n N ...); "
                        "--batch-size stays the global batch; with --device gpu each rank takes gpu:<local rank>")
    return p


def one_line(text) -> str:
    """``text`` on one line: its lines joined by '; ' (after a colon, by a space)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip()).replace(":; ", ": ")


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
    network.add(layers.Rescaling(1 / 255, input_shape=(PIXELS,)))
    network.add(layers.Dense(512, activation="relu"))
    network.add(layers.Dense(CLASSES, activation="softmax"))
    return network


# ---------------------------------------------------------------------------------- checking the flags
def check_output(flag, path, example):
    """A file the run will write: not a folder, in a folder that exists and that this process can write to
    (tried with a temporary file, removed at once). Creates nothing."""
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder, not a file name; give one, e.g. {flag} "
                         f"{os.path.join(path, example)}")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist; create it first "
                         f"(mkdir -p {shlex.quote(folder)}) or choose another path")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: exists and is not a regular file; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mnist-write-test.", dir=folder)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write in the folder {folder} ({exc.strerror}); "
                         "choose a folder you can write to") from None
    os.close(fd)
    os.unlink(probe)


def plot_file(value):
    """The exact file --plot writes and its image format (a name without a suffix gets '.png'; an unknown
    suffix is refused), checked like --save. matplotlib is imported here, before training."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise UsageError(f"--plot {value}: needs matplotlib: pip install 'gpunet[plot]' (or drop --plot)") from None
    check_output("--plot", value, "mnist.png")      # a folder DIR is refused, never turned into DIR.png
    suffix = os.path.splitext(os.path.basename(value))[1]
    path, fmt = (value, suffix[1:].lower()) if suffix else (value + ".png", "png")
    if fmt not in FigureCanvasAgg.get_supported_filetypes():
        raise UsageError(f"--plot {value}: unknown image format {suffix!r}; end the name with .png, .pdf or .svg, "
                         f"e.g. --plot {os.path.splitext(value)[0]}.png")
    if path != value:
        check_output("--plot", path, "mnist.png")
    return path, fmt


def same_file(a, b) -> bool:
    return a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b)


def check_flags(args):
    """Everything about the flags that can be checked without a device: the files to write and to read.
    Returns the plot's (path, format), or (None, None) without --plot."""
    for flag, value, example in (("--save", args.save, "ckpt.npz"), ("--plot", args.plot, "mnist.png"),
                                 ("--resume", args.resume, "ckpt.npz")):
        if value == "":
            raise UsageError(f"{flag} '': the file name is empty; give one, e.g. {flag} {example}")
    if args.save:
        check_output("--save", args.save, "ckpt.npz")
    plot_path, fmt = plot_file(args.plot) if args.plot else (None, None)
    for flag, other in (("--save", args.save), ("--resume", args.resume)):
        if same_file(plot_path, other):
            raise UsageError(f"--plot {args.plot}: is also the {flag} file; give the plot another name, "
                             "e.g. --plot mnist.png")
    if args.resume and not os.path.isfile(args.resume):
        why = "is a folder" if os.path.isdir(args.resume) else "no such file"
        raise UsageError(f"--resume {args.resume}: {why}; give a checkpoint file written by --save")
    return plot_path, fmt


def open_device(args):
    try:
        if args.distributed:
            distributed.init()          # DistributedUnavailableError without mpi4py / an MPI library
            if args.device in ("cpu", "gpu"):
                return distributed.local_device(args.device)
        return gpunet.device(args.device)
    except gpunet.DistributedUnavailableError as exc:
        raise UsageError(f"--distributed: {one_line(exc)}") from None
    except (gpunet.DeviceUnavailableError, ValueError) as exc:
        text = one_line(exc).replace("device='cpu'", "--device cpu")
        raise UsageError(f"--device {args.device}: {text}"
                         + ("" if "--device cpu" in text else " (--device cpu always works)")) from None


def resume(args, device, image=(PIXELS,)):
    """The --resume checkpoint, loaded (which also restores gpunet's RNG state) and checked against this
    script's network, data (one sample of shape ``image``) and flags; UsageError otherwise."""
    fix = "--resume needs a checkpoint written by this script's --save"
    try:
        network = models.load_model(args.resume, device=device)
    except (FileFormatError, ValueError, OSError) as exc:
        text = one_line(exc)
        for prefix in (f"{args.resume}: ", f"{os.path.abspath(args.resume)}: "):
            text = text[len(prefix):] if text.startswith(prefix) else text
        raise UsageError(f"--resume {args.resume}: {text} ({fix})") from None
    shapes = network.input_shape[1:], network.output_shape[1:]
    if shapes != (tuple(image), (CLASSES,)):
        inputs = f"{PIXELS} pixels" if tuple(image) == (PIXELS,) else f"{tuple(image)} images"
        raise UsageError(f"--resume {args.resume}: its model maps inputs of shape {shapes[0]} to {shapes[1]}, not "
                         f"MNIST's {inputs} to {CLASSES} classes ({fix})")
    if not network.compiled:
        raise UsageError(f"--resume {args.resume}: its model was saved before compile (no optimizer, loss or "
                         f"metrics to continue with) ({fix})")
    try:        # its loss and metrics must take this script's data: two blank images and one-hot labels
        blank = to_categorical([0, 1], PIXELS, dtype="uint8").reshape((2,) + tuple(image))
        network.evaluate(blank, to_categorical([0, 1], CLASSES), verbose=0)
    except ValueError as exc:
        raise UsageError(f"--resume {args.resume}: its model cannot train on MNIST: {one_line(exc)} ({fix})") from None
    saved_optimizer = type(network.optimizer).__name__.lower()
    if args.optimizer is not None and args.optimizer != saved_optimizer:
        raise UsageError(f"--optimizer {args.optimizer}: the checkpoint {args.resume} continues with its own "
                         f"optimizer, {saved_optimizer}; drop --optimizer (or start afresh without --resume)")
    done = network.epochs_completed
    if args.epochs < done:
        raise UsageError(f"--epochs {args.epochs}: the checkpoint {args.resume} has already completed {done} "
                         f"epochs and --epochs is the total to reach; pass --epochs {done + 1} or more "
                         f"(--epochs {done} only evaluates)")
    return network


# ---------------------------------------------------------------------------------- Ctrl-C
class Run:
    """Where the run stands, for the one line that Ctrl-C prints: the stage, the epoch in progress and the
    last complete checkpoint (ModelCheckpoint writes atomically, so the file on disk is always complete)."""

    def __init__(self, prog):
        self.prog, self.args = prog, None
        self.stage, self.epoch = "setup", None        # setup, train, done
        self.checkpoint = None                        # (path, epochs completed) of the last complete one

    def interrupted(self) -> str:
        head = f"{self.prog}: interrupted (Ctrl-C)"
        if self.stage == "setup":
            return f"{head} before training started; nothing was written"
        head += f" during epoch {self.epoch}" if self.stage == "train" and self.epoch else \
            " before the first epoch" if self.stage == "train" else " after training"
        if self.checkpoint is None:
            fix = f"{self.args.save} is written after each epoch" if self.args.save else \
                "--save FILE.npz writes one after every epoch"
            return f"{head}; no checkpoint was saved ({fix})"
        path, epochs = self.checkpoint
        return f"{head}; the last complete checkpoint is {path} (after epoch {epochs}): continue with --resume " \
               f"{shlex.quote(path)}"


class Progress(callbacks.Callback):
    """Keeps :class:`Run` up to date. Listed after ModelCheckpoint, so an epoch's end means it was saved."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_begin(self, epoch, logs=None):
        self.run.epoch = epoch + 1

    def on_epoch_end(self, epoch, logs=None):
        if self.run.args.save:
            self.run.checkpoint = (self.run.args.save, epoch + 1)


# ---------------------------------------------------------------------------------- the run
def train(args, run, build=build, image=(PIXELS,)):
    """Train ``build(device)``'s network on samples of shape ``image`` (uint8) as the flags say; 0."""
    plot_path, fmt = check_flags(args)
    device = open_device(args)
    say = distributed.root_print       # print on rank 0 only (plain print without MPI)
    gpunet.random.seed(args.seed)
    network = resume(args, device, image) if args.resume else None     # restores the checkpoint's RNG state
    if network is not None:
        run.checkpoint = (args.resume, network.epochs_completed)
    if plot_path != args.plot:
        say(f"--plot {args.plot} has no suffix: the plot will be written to {plot_path}")
    try:
        ((x_train, y_train), (x_test, y_test)), what = load(args.dataset)
    except (DatasetUnavailableError, FileFormatError, OSError) as exc:
        hint = " (offline: --dataset mnist-sample trains on the embedded sample)" \
            if isinstance(exc, DatasetUnavailableError) else ""
        raise Failure(f"--dataset {args.dataset}: {one_line(exc)}{hint}") from None
    where = f"{distributed.size()} processes (MPI), rank 0 on {device}" if args.distributed else f"device {device}"
    say(f"Training on {what}, {where}.")
    x_train = x_train.reshape((len(x_train),) + tuple(image))
    x_test = x_test.reshape((len(x_test),) + tuple(image))
    if network is not None:
        say(f"Resuming from {args.resume} after epoch {network.epochs_completed}.")
    else:
        network = build(device)
        network.compile(optimizer=args.optimizer or "rmsprop", loss="categorical_crossentropy",
                        metrics=["accuracy"])
    network.summary(print_fn=say)
    t0 = time.perf_counter()
    train_labels, test_labels = to_categorical(y_train, CLASSES), to_categorical(y_test, CLASSES)
    # the literal file name: ModelCheckpoint would fill in '{epoch}' and the like
    checkpoints = [callbacks.ModelCheckpoint(args.save.replace("{", "{{").replace("}", "}}"))] if args.save else []
    run.stage = "train"
    try:
        history = network.fit(x_train, train_labels, epochs=args.epochs, batch_size=args.batch_size,
                              verbose=args.verbose, validation_data=(x_test, test_labels) if args.plot else None,
                              initial_epoch=network.epochs_completed, callbacks=checkpoints + [Progress(run)],
                              distributed=args.distributed)     # checkpoints: rank 0 writes
    except OSError as exc:
        if not args.save:
            raise
        last = "the last complete one: {} (after epoch {})".format(*run.checkpoint) if run.checkpoint else \
            "none was saved"
        raise Failure(f"--save {args.save}: could not write the checkpoint after epoch {run.epoch} "
                      f"({exc.strerror or exc}); {last}") from None
    run.stage = "done"
    train_s = time.perf_counter() - t0
    test_loss, test_acc = network.evaluate(x_test, test_labels, verbose=0, distributed=args.distributed)
    times = history.epoch_times
    say(f"test_loss: {test_loss:.4f} - test_acc: {test_acc:.4f}")
    if times:
        say(f"time per epoch: median {statistics.median(times):.2f} s "
            f"({', '.join(f'{t:.2f}' for t in times)}); training {train_s:.1f} s on {device}")
    if plot_path and distributed.is_root():
        try:
            plot(plot_path, fmt, history, x_test, y_test, network.predict(x_test[:16]))
        except OSError as exc:
            raise Failure(f"--plot {args.plot}: could not write {plot_path} ({exc.strerror or exc})") from None
        say(f"wrote {plot_path}")
    if args.memory:
        report_memory(device, say)
    return 0


def plot(path, fmt, history, x_test, y_test, predictions):
    """Write the figure to ``path`` in format ``fmt``, atomically (an interrupted write leaves no half image)."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker
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
    with atomic_write(path) as f:
        fig.savefig(f, format=fmt, dpi=80)
    plt.close(fig)


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


def main(argv=None, make_parser=parser, train=train):
    """Run the example (another network: give its ``make_parser`` and ``train``); returns the exit status
    (0, 1, 2 or 130: see EPILOG). Genuine bugs still raise."""
    p = make_parser()
    run = Run(p.prog)
    try:
        run.args = p.parse_args(argv)
        return train(run.args, run)
    except UsageError as exc:
        return stop(f"{p.prog}: error: {one_line(exc)}", EXIT_USAGE)
    except Failure as exc:
        return stop(f"{p.prog}: error: {one_line(exc)}", EXIT_FAILURE)
    except KeyboardInterrupt:
        return stop(run.interrupted(), EXIT_INTERRUPTED, only_root=True)


def stop(line, status, only_root=False):
    """Print the one line on stderr and return ``status``; in an MPI job of several ranks, end the whole job
    (the other ranks may be waiting in a collective)."""
    sys.stdout.flush()
    if not only_root or distributed.is_root():
        print(line, file=sys.stderr, flush=True)
    if distributed.is_initialized() and distributed.size() > 1:
        distributed.init().comm.Abort(status)
    return status


def exit_with(main_function):
    """``sys.exit`` with ``main_function()``'s status; a closed stdout (``| head -3``) ends quietly
    (Python's recipe for BrokenPipeError)."""
    try:
        status = main_function()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EXIT_FAILURE
    sys.exit(status)


if __name__ == "__main__":
    exit_with(main)
