"""The training loop, apart from the model: ``compile``/``fit``/``evaluate``/``predict``
(:mod:`~gpunet.trainers.trainer`), the one training step's gradients, taped or tapeless
(:mod:`~gpunet.trainers.gradients`), the batches of each epoch
(:mod:`~gpunet.trainers.epoch_iterator`), the running sums, the input checks and the guards
against losing work (:mod:`~gpunet.trainers.guards`); the step captured into CUDA graphs on a GPU
(:mod:`~gpunet.trainers.step_graphs`) or recorded and replayed on the CPU
(:mod:`~gpunet.trainers.step_replays`)."""
from .trainer import Trainer

__all__ = ["Trainer"]
