"""The MPI side of tests/test_distributed.py.

Run as ``mpiexec -n 2 python tests/distributed_job.py OUT_DIR``: every scenario trains with
``fit(distributed=True)`` and each rank writes what it ended with to ``OUT_DIR``. The test
imports this module too, to train the same configurations in one process as the reference.
"""
import json
import os
import signal
import warnings
import sys

import numpy as np

import gpunet
from gpunet import callbacks, distributed, layers, models, optimizers

# name -> configuration; n / batch chosen so that shards are uneven and, in the first, the last
# global batch has 1 sample (rank 0's shard is empty)
CONFIGS = {
    "rmsprop-fused": dict(optimizer=("rmsprop", {}), jit="auto", n=257, batch=64, epochs=3),
    "adam-tape-uneven": dict(optimizer=("adam", {}), jit=False, n=299, batch=7, epochs=2),
    "sgd-nesterov-validation": dict(optimizer=("sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
                                    jit="auto", n=200, batch=32, epochs=2, validation_split=0.2),
    "uint8-sparse-rescaling": dict(optimizer=("rmsprop", {}), jit="auto", n=160, batch=40, epochs=2, uint8=True),
    # dropout masks equal one process's (last global batch of 1: rank 0 has no rows and still draws)
    "dropout-uneven": dict(optimizer=("rmsprop", {}), jit="auto", n=129, batch=32, epochs=3, dropout=0.3),
    # sample weights in the loss and the weighted metrics, clipping and weight decay on the reduced gradients
    "sample-weights-clipped": dict(optimizer=("adam", dict(weight_decay=0.01, global_clipnorm=0.5)), jit="auto",
                                   n=150, batch=32, epochs=2, uint8=True, sample_weight=True, validation_split=0.2),
    # one GPU per rank (gpu:0 and gpu:1: real ones, or the emulated CuPy's), all-reduce through NCCL
    "gpu-per-rank-nccl": dict(optimizer=("rmsprop", {}), jit="auto", n=129, batch=32, epochs=2, dropout=0.2,
                              device="gpu"),
    # both ranks on gpu:0 (one GPU, two processes): NCCL refuses that; the host-staged MPI path, with a warning
    "two-ranks-one-gpu": dict(optimizer=("adam", {}), jit="auto", n=129, batch=32, epochs=2, device="gpu:0"),
}


def data(cfg):
    """Seeded classification data: 20 features, 4 classes (one-hot, or integer labels for ``sparse``)."""
    rng = np.random.default_rng(7)
    n = cfg["n"]
    if cfg.get("uint8"):
        x = rng.integers(0, 256, size=(n, 20), dtype=np.uint8)
        labels = x[:, :4].argmax(axis=1)
        return x, labels
    x = rng.standard_normal((n, 20)).astype(np.float32)
    labels = x[:, :4].argmax(axis=1)
    return x, np.eye(4, dtype=np.float32)[labels]


def build(cfg, seed=3):
    gpunet.random.seed(seed)
    device = None
    if cfg.get("device") == "gpu":       # under MPI each rank takes its local GPU; the reference process gpu:0
        device = distributed.local_device("gpu") if distributed.is_initialized() else "gpu"
    elif cfg.get("device"):
        device = cfg["device"]
    model = models.Sequential(device=device)
    if cfg.get("uint8"):
        model.add(layers.Rescaling(1 / 255, input_shape=(20,)))
        model.add(layers.Dense(32, activation="relu"))
    else:
        model.add(layers.Dense(32, activation="relu", input_shape=(20,)))
    if cfg.get("dropout"):
        model.add(layers.Dropout(cfg["dropout"]))
    model.add(layers.Dense(4, activation="softmax"))
    name, kwargs = cfg["optimizer"]
    loss = "sparse_categorical_crossentropy" if cfg.get("uint8") else "categorical_crossentropy"
    opt = {"sgd": optimizers.SGD, "rmsprop": optimizers.RMSprop, "adam": optimizers.Adam}[name](**kwargs)
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"],
                  weighted_metrics=["accuracy"] if cfg.get("sample_weight") else None, jit_compile=cfg["jit"])
    return model


def train(name, distributed_fit, seed=3):
    """Train configuration ``name``; returns (model, history dict, evaluate result)."""
    cfg = CONFIGS[name]
    x, y = data(cfg)
    model = build(cfg, seed)
    weights = np.random.default_rng(9).random(len(x)).astype(np.float32) + 0.5 if cfg.get("sample_weight") else None
    gpunet.random.seed(11)         # the batch order (rank 0's is used by every rank)
    history = model.fit(x, y, batch_size=cfg["batch"], epochs=cfg["epochs"], verbose=0, sample_weight=weights,
                        validation_split=cfg.get("validation_split", 0.0), distributed=distributed_fit)
    ev = model.evaluate(x, y, batch_size=50, verbose=0, sample_weight=weights, distributed=distributed_fit)
    return model, history.history, ev


def _save(out, tag, model, **info):
    rank = distributed.rank()
    np.savez(os.path.join(out, f"{tag}-rank{rank}.npz"), *model.get_weights())
    info["iterations"] = model.optimizer.iterations
    with open(os.path.join(out, f"{tag}-rank{rank}.json"), "w") as f:
        json.dump(info, f)


class _Counter:
    """Counts the all-reduce calls of every transport (CPU: MPI; GPU: NCCL or host-staged)."""

    def __init__(self):
        self.calls = 0
        original = distributed.Transport.allreduce_sum

        def counted(transport, buf):
            self.calls += 1
            return original(transport, buf)

        distributed.Transport.allreduce_sum = counted


class _SignalAt(callbacks.Callback):
    """On one rank, SIGINT itself (or set stop_training) at the end of a given batch."""

    wants_batch_logs = True

    def __init__(self, rank, batch, action):
        self.rank, self.batch, self.action = rank, batch, action

    def on_train_batch_end(self, batch, logs=None):
        if distributed.rank() == self.rank and batch == self.batch:
            if self.action == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                self.model.stop_training = True


def main(out):
    distributed.init()
    rank = distributed.rank()
    counter = _Counter()
    for name, cfg in CONFIGS.items():
        before = counter.calls
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, history, ev = train(name, True, seed=3 + rank)      # rank 1 starts from other weights
        transport = distributed.init().transport(model.device)
        _save(out, name, model, history=history, evaluate=ev, allreduce_calls=counter.calls - before,
              transport=transport.kind, shared_gpu_ranks=transport.shared_gpu_ranks, device=str(model.device),
              warnings=[str(w.message) for w in caught])

    cfg = dict(CONFIGS["rmsprop-fused"], epochs=1)
    x, y = data(cfg)
    # a huge learning rate: the loss becomes non-finite; checked at once, then with the GPU's deferred logic
    for mode in ("immediate", "deferred"):
        model = build(dict(cfg, optimizer=("sgd", dict(learning_rate=1e8))), seed=3)
        model._defer_loss_check = mode == "deferred"
        gpunet.random.seed(11)
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, distributed=True)
        _save(out, f"nonfinite-{mode}", model, stop_reason=model.stop_reason)

    # Ctrl-C on rank 1 only, or stop_training set by a callback on rank 0 only: every rank stops at one step
    for tag, who, action in (("interrupt", 1, "sigint"), ("stop", 0, "stop")):
        model = build(cfg, seed=3)
        gpunet.random.seed(11)
        interrupted = False
        try:
            model.fit(x, y, batch_size=16, epochs=2, verbose=0, distributed=True, callbacks=[_SignalAt(who, 3, action)])
        except KeyboardInterrupt:
            interrupted = True
        _save(out, tag, model, interrupted=interrupted)

    # ModelCheckpoint writes on rank 0 only
    model = build(cfg, seed=3)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, distributed=True,
              callbacks=[callbacks.ModelCheckpoint(os.path.join(out, f"ckpt-rank{rank}.npz"))])

    # a rank given other data: the same clear error on every rank, nothing changed
    model = build(cfg, seed=3)
    before = model.get_weights()
    try:
        model.fit(x[:-1] if rank == 1 else x, y[:-1] if rank == 1 else y, batch_size=64, epochs=1, verbose=0,
                  distributed=True)
        error = None
    except ValueError as exc:
        error = str(exc)
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    _save(out, "mismatch", model, error=error, unchanged=unchanged)
    distributed.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
