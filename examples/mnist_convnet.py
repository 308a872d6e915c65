#!/usr/bin/env python3
"""Train the convnet of *Deep Learning with Python* (chapter 5) on MNIST — on the CPU or a CUDA GPU.

    python examples/mnist_convnet.py --dataset mnist-sample         # offline: the embedded 10,000 digits
    python examples/mnist_convnet.py --dataset fashion-mnist --plot convnet.png
    python examples/mnist_convnet.py --epochs 2 --save ckpt.npz     # then, to continue to epoch 5 exactly:
    python examples/mnist_convnet.py --resume ckpt.npz --save ckpt.npz

The book's network (listings 5.1-5.3): three 3x3 convolutions with ReLU (32, 64, 64 filters) with a 2x2
max-pooling after the first two, then Flatten -> Dense(64, relu) -> Dense(10, softmax); RMSprop,
categorical cross-entropy, accuracy, 5 epochs of batches of 64. As in ``mnist.py``, the images stay
uint8, of shape (n, 28, 28, 1) — channels last, like Keras — and a ``Rescaling(1 / 255)`` layer scales
each batch.

Everything but the network and the shape of the images is ``mnist.py``'s, imported from it: the flags
(``--device``, ``--dataset``, ``--epochs``, ``--batch-size``, ``--plot``, ``--save``/``--resume``,
``--seed``, ``--verbose``, ...), the one-line errors and the exit statuses (0 done, 2 a bad flag,
1 another expected failure, 130 Ctrl-C); see ``python examples/mnist.py --help``.
"""
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import mnist as base        # examples/mnist.py: flags, data, checks, checkpoints, plot, errors
    import gpunet
    from gpunet import callbacks, distributed, layers, models
    from gpunet.datasets import DatasetUnavailableError
    from gpunet.errors import FileFormatError
    from gpunet.utils import to_categorical
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    sys.stderr.write(f"{os.path.basename(sys.argv[0])}: interrupted (Ctrl-C) while starting; nothing was written\n")
    sys.exit(130)

IMAGE, CLASSES = (28, 28, 1), base.CLASSES


def build(device):
    """The book's convnet (listings 5.1-5.2), with the scaling of the images as its first layer."""
    model = models.Sequential(device=device)
    model.add(layers.Rescaling(1 / 255, input_shape=IMAGE))
    model.add(layers.Conv2D(32, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(CLASSES, activation="softmax"))
    return model


def parser():
    p = base.parser()
    p.description = __doc__.splitlines()[0]
    p.set_defaults(batch_size=64)           # the book's batch for the convnet (mnist.py's: 128)
    return p


def resume(args, device):
    """The --resume checkpoint (see ``mnist.resume``), checked against this network's images."""
    fix = "--resume needs a checkpoint written by this script's --save"
    try:
        model = models.load_model(args.resume, device=device)
    except (FileFormatError, ValueError, OSError) as exc:
        text = base.one_line(exc)
        for prefix in (f"{args.resume}: ", f"{os.path.abspath(args.resume)}: "):
            text = text[len(prefix):] if text.startswith(prefix) else text
        raise base.UsageError(f"--resume {args.resume}: {text} ({fix})") from None
    shapes = model.input_shape[1:], model.output_shape[1:]
    if shapes != (IMAGE, (CLASSES,)):
        raise base.UsageError(f"--resume {args.resume}: its model maps inputs of shape {shapes[0]} to {shapes[1]}, "
                              f"not MNIST's {IMAGE} images to {CLASSES} classes ({fix})")
    if not model.compiled:
        raise base.UsageError(f"--resume {args.resume}: its model was saved before compile (no optimizer, loss "
                              f"or metrics to continue with) ({fix})")
    try:        # its loss and metrics must take this script's data: two blank images and one-hot labels
        model.evaluate(np.zeros((2,) + IMAGE, np.uint8), to_categorical([0, 1], CLASSES), verbose=0)
    except ValueError as exc:
        raise base.UsageError(f"--resume {args.resume}: its model cannot train on MNIST: {base.one_line(exc)} "
                              f"({fix})") from None
    saved = type(model.optimizer).__name__.lower()
    if args.optimizer is not None and args.optimizer != saved:
        raise base.UsageError(f"--optimizer {args.optimizer}: the checkpoint {args.resume} continues with its own "
                              f"optimizer, {saved}; drop --optimizer (or start afresh without --resume)")
    if args.epochs < model.epochs_completed:
        done = model.epochs_completed
        raise base.UsageError(f"--epochs {args.epochs}: the checkpoint {args.resume} has already completed {done} "
                              f"epochs and --epochs is the total to reach; pass --epochs {done + 1} or more")
    return model


def train(args, run):
    """``mnist.train`` with this network and images of shape (n, 28, 28, 1)."""
    plot_path, fmt = base.check_flags(args)
    device = base.open_device(args)
    say = distributed.root_print
    gpunet.random.seed(args.seed)
    model = resume(args, device) if args.resume else None       # restores the checkpoint's RNG state
    if model is not None:
        run.checkpoint = (args.resume, model.epochs_completed)
    try:
        ((x_train, y_train), (x_test, y_test)), what = base.load(args.dataset)
    except (DatasetUnavailableError, FileFormatError, OSError) as exc:
        raise base.Failure(f"--dataset {args.dataset}: {base.one_line(exc)} (offline: --dataset mnist-sample "
                           "trains on the embedded sample)") from None
    where = f"{distributed.size()} processes (MPI), rank 0 on {device}" if args.distributed else f"device {device}"
    say(f"Training on {what}, {where}.")
    x_train = x_train.reshape((len(x_train),) + IMAGE)          # uint8, channels last
    x_test = x_test.reshape((len(x_test),) + IMAGE)
    if model is None:
        model = build(device)
        model.compile(optimizer=args.optimizer or "rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    else:
        say(f"Resuming from {args.resume} after epoch {model.epochs_completed}.")
    model.summary(print_fn=say)
    y_train, test_labels = to_categorical(y_train, CLASSES), to_categorical(y_test, CLASSES)
    save = [callbacks.ModelCheckpoint(args.save.replace("{", "{{").replace("}", "}}"))] if args.save else []
    run.stage = "train"
    t0 = time.perf_counter()
    try:
        history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose,
                            validation_data=(x_test, test_labels) if plot_path else None,
                            initial_epoch=model.epochs_completed, callbacks=save + [base.Progress(run)],
                            distributed=args.distributed)
    except OSError as exc:
        if not args.save:
            raise
        last = "the last complete one: {} (after epoch {})".format(*run.checkpoint) if run.checkpoint else \
            "none was saved"
        raise base.Failure(f"--save {args.save}: could not write the checkpoint after epoch {run.epoch} "
                           f"({exc.strerror or exc}); {last}") from None
    run.stage = "done"
    train_s = time.perf_counter() - t0
    test_loss, test_acc = model.evaluate(x_test, test_labels, verbose=0, distributed=args.distributed)
    say(f"test_loss: {test_loss:.4f} - test_acc: {test_acc:.4f}")
    if history.epoch_times:
        times = history.epoch_times
        say(f"time per epoch: median {statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)}); "
            f"training {train_s:.1f} s on {device}")
    if plot_path and distributed.is_root():
        try:
            base.plot(plot_path, fmt, history, x_test, y_test, model.predict(x_test[:16]))
        except OSError as exc:
            raise base.Failure(f"--plot {args.plot}: could not write {plot_path} ({exc.strerror or exc})") from None
        say(f"wrote {plot_path}")
    if args.memory:
        base.report_memory(device, say)
    return 0


def main(argv=None):
    """``mnist.main`` with this script's flags and training: returns the exit status, 0, 1, 2 or 130."""
    p = parser()
    run = base.Run(p.prog)
    try:
        run.args = p.parse_args(argv)
        return train(run.args, run)
    except base.UsageError as exc:
        return base.stop(f"{p.prog}: error: {base.one_line(exc)}", base.EXIT_USAGE)
    except base.Failure as exc:
        return base.stop(f"{p.prog}: error: {base.one_line(exc)}", base.EXIT_FAILURE)
    except KeyboardInterrupt:
        return base.stop(run.interrupted(), base.EXIT_INTERRUPTED, only_root=True)


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = base.EXIT_FAILURE
    sys.exit(status)
