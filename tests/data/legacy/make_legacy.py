"""Run with the previous gpunet (e1f4b52): writes checkpoints and weights in its formats, and what
training on from them gives, for tests/test_saving_compat.py:  PYTHONPATH=<checkout of e1f4b52> python make_legacy.py tests/data/legacy"""
import json, sys
import numpy as np
import gpunet
from gpunet import layers, models, optimizers
from gpunet.utils import to_categorical


def main(out):
    rng = np.random.default_rng(0)
    x = rng.random((48, 6), dtype=np.float32)
    y = to_categorical(rng.integers(0, 3, 48), 3)
    for name, opt in (("rmsprop", lambda: optimizers.RMSprop(0.01)), ("adam", lambda: optimizers.Adam(0.01)),
                      ("rmsprop-centered", lambda: optimizers.RMSprop(0.01, centered=True, momentum=0.5))):
        gpunet.random.seed(3)
        net = models.Sequential([layers.Dense(5, activation="relu", input_shape=(6,)), layers.Dropout(0.25),
                                 layers.Dense(3, activation="softmax")])
        net.compile(optimizer=opt(), loss="categorical_crossentropy", metrics=["accuracy"])
        net.fit(x, y, epochs=2, batch_size=16, verbose=0)
        net.save(f"{out}/{name}-checkpoint.npz")
        back = models.load_model(f"{out}/{name}-checkpoint.npz")
        back.fit(x, y, epochs=3, batch_size=16, verbose=0, initial_epoch=2)
        np.savez(f"{out}/{name}-resumed-weights.npz", *back.get_weights())
    net.save_weights(f"{out}/weights-file.npz")
    np.savez(f"{out}/data.npz", x=x, y=y)


if __name__ == "__main__":
    main(sys.argv[1])
