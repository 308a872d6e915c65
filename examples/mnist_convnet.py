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
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import mnist as base        # examples/mnist.py: flags, data, checks, checkpoints, training, plot, errors
    from gpunet import layers, models
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


def main(argv=None):
    """``mnist.main`` with this network, its images of shape (28, 28, 1) and its flags: the exit status."""
    return base.main(argv, make_parser=parser, train=functools.partial(base.train, build=build, image=IMAGE))


if __name__ == "__main__":
    base.exit_with(main)
