"""One batch -> its loss, the gradients of the trainable weights, and the model's outputs.

Two implementations of one interface, ``gradients(x, y, w) -> (loss, grads, outputs)`` (device
arrays; ``w`` per-sample weights or None; ``grads`` in ``model.trainable_weights`` order, None for
a weight the loss does not reach; ``outputs`` are logits when :attr:`on_logits`):

* :class:`TapedGradients` — the model's layers on Tensors under a GradientTape (any model);
* :class:`TapelessGradients` — each layer's array-level ``forward``, the loss's array form, each
  layer's ``backward`` in reverse: the same array functions in the same order as the tape, so
  the same numbers bit for bit (tested), with a fraction of the Python per step and work
  arrays reused from step to step (the loss kernels' too: on a GPU a step allocates nothing).
  Used when every layer has array math and the loss an array form
  (``compile(jit_compile=False)`` asks for the tape always).

Either way the trainer decides whether the loss is computed on the logits of the model's last
activation (:func:`loss_on_logits`): layers know nothing about losses.
"""
from __future__ import annotations

from .. import activations
from ..autograd import GradientTape
from ..kernels import softmax_xent

DEFAULT_REDUCTION = "sum_over_batch_size"      # Keras' default: the mean over the batch
from ..layers import Workspace
from ..tensor import Tensor


def loss_on_logits(model, loss) -> bool:
    """True when the model ends in the activation whose logits ``loss`` can take instead (softmax with a
    categorical cross-entropy, sigmoid with a binary one): the loss is then computed on the logits."""
    act = model.layers[-1].output_activation() if model.layers else None
    return (loss.logits_activation is not None and not loss.from_logits
            and activations.name_of(act) == loss.logits_activation)


class TapedGradients:
    """Loss and gradients of one batch through the GradientTape (any model)."""

    def __init__(self, model, loss):
        self.model, self.loss, self.params = model, loss, model.trainable_weights
        self.on_logits = loss_on_logits(model, loss)

    def __call__(self, x, y, w=None):
        dev = self.model.device
        xt, yt = Tensor.wrap(x, dev), Tensor.wrap(y, dev)
        with GradientTape() as tape:
            out = self.model.call(xt, training=True, final_activation=not self.on_logits)
            loss = compute_loss(self.loss, yt, out, self.on_logits, w)
        grads = tape.gradient(loss, self.params)
        return loss.data, [None if g is None else g.data for g in grads], out.data


def compute_loss(loss, y, out, on_logits, w=None):
    """The loss Tensor of outputs ``out`` (logits when ``on_logits``) against ``y``, weighted by ``w``."""
    weights = {} if w is None else {"sample_weight": Tensor.wrap(w, y.device)}
    return loss.from_logits_loss(y, out, **weights) if on_logits else loss(y, out, **weights)


class TapelessGradients:
    """Loss and gradients of one batch from the layers' array math, without Tensors or a tape.

    One step, for the chapter's network (x uint8 ``(n, 784)``, y one-hot ``(n, 10)``)::

        x1 = float32(x) * (1/255)                  # Rescaling.forward
        z1 = x1 @ W1 + b1;  h = relu(z1)           # Dense.forward, then its activation
        z2 = h @ W2 + b2                           # Dense.forward: the logits (softmax left out)
        loss, p = softmax_xent(z2, y)              # the loss's array form (one fused kernel)
        dz2 = (p - y) / n                          # its backward
        dW2, db2, dh = h.T @ dz2, sum(dz2), dz2 @ W2.T     # Dense.backward
        dz1 = dh * (h > 0);  dW1, db1 = x1.T @ dz1, sum(dz1)  # relu backward, Dense.backward
    """

    @staticmethod
    def supports(model, loss) -> bool:
        """Every layer has array-level forward/backward and a built-in activation, and the loss an array
        form (with Keras' default reduction, the mean over the batch)."""
        if loss.logits_function is None or not (loss.from_logits or loss_on_logits(model, loss)) or \
                getattr(loss, "reduction", DEFAULT_REDUCTION) != DEFAULT_REDUCTION:
            return False
        return all(layer.has_array_math and (layer.output_activation() is None or
                                             isinstance(layer.output_activation(), activations.Activation))
                   for layer in model.layers)

    def __init__(self, model, loss):
        self.layers, self.loss, self.xp = list(model.layers), loss, model.device.xp
        self.on_logits = loss_on_logits(model, loss)
        last = len(self.layers) - 1     # each layer's activation; the last one's left out for a loss on logits
        self.activations = [None if i == last and self.on_logits else layer.output_activation()
                            for i, layer in enumerate(self.layers)]
        # the activations a layer's forward applies with its bias (one pass; the same bits as two)
        self.fused = [act is not None and layer.activation_in_place and activations.name_of(act) in
                      layer.fused_activations for layer, act in zip(self.layers, self.activations)]
        # a ReLU whose backward the next layer applies in its own (max pooling: one pass, not two)
        self.absorbed = [activations.name_of(act) == "relu" and nxt.absorbs_relu_gradient
                         for act, nxt in zip(self.activations, self.layers[1:])] + [False]
        self.workspaces = [Workspace(self.xp) for _ in self.layers]
        self.loss_workspace = Workspace(self.xp)        # the fused loss kernels' results
        # a layer computes the gradient of its input only when some trainable weight lies before it
        trained = [bool(layer.trainable_weights) and model.trainable for layer in self.layers]
        self.need_input = [any(trained[:i]) for i in range(len(self.layers))]
        self.trained = trained
        self.n_weights = [len(layer.trainable_weights) if t else 0 for layer, t in zip(self.layers, trained)]
        self.seed = self.xp.ones((), dtype="float32")    # d(loss)/d(loss), as the tape seeds it

    def __call__(self, x, y, w=None):
        xp = self.xp
        stages = []
        for layer, act, fused, ws in zip(self.layers, self.activations, self.fused, self.workspaces):
            if fused:
                z, saved = layer.forward(xp, layer.prepare_input(x), True, ws, activation=act.name)
            else:
                z, saved = layer.forward(xp, layer.prepare_input(x), True, ws)
            x = z if act is None or fused else act.forward(xp, z, out=z if layer.activation_in_place else
                                                           ws.array("activation", z.shape, z.dtype))
            stages.append((saved, x))
        with softmax_xent.workspace(self.loss_workspace):     # its loss, probabilities and gradient reused
            loss, loss_backward = self.loss.logits_function(xp, x, y) if w is None else \
                self.loss.logits_function(xp, x, y, w)
            g = loss_backward(self.seed, (True, False))[0]
        grads = []
        for i in range(len(self.layers) - 1, -1, -1):
            saved, out = stages[i]
            act = self.activations[i]
            if act is not None and not self.absorbed[i]:
                g = act.backward(xp, g, out, out=self.workspaces[i].array("activation_grad", g.shape, g.dtype))
            if i > 0 and self.absorbed[i - 1]:
                g, weight_grads = self.layers[i].backward(saved, g, self.need_input[i], relu_output=stages[i - 1][1])
            else:
                g, weight_grads = self.layers[i].backward(saved, g, self.need_input[i])
            if self.trained[i]:     # (a layer frozen during fit gives none: its weights stay, as on the tape)
                grads[:0] = weight_grads if len(weight_grads) == self.n_weights[i] else [None] * self.n_weights[i]
            if not self.need_input[i]:       # no weights before this layer: the walk back ends here
                break
        return loss, grads, x


def make_gradients(model, loss, jit_compile):
    """The tapeless implementation where ``jit_compile`` allows it and the model supports it, else the tape."""
    if jit_compile and TapelessGradients.supports(model, loss):
        return TapelessGradients(model, loss)
    return TapedGradients(model, loss)
