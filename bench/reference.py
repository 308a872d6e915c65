"""Hand-written reference implementations of the chapter's training, for benchmarks.

``numpy_epoch`` is a careful NumPy loop doing exactly gpunet's arithmetic
(784-512-10, ReLU, softmax cross-entropy, Keras RMSprop with epsilon inside
the square root, float32, uint8 data converted per batch); ``torch_*`` does the
same in PyTorch eager mode. Both use the same initial weights and batch order
as the gpunet run they are compared with, and, like ``fit(metrics=['accuracy'])``,
both keep the epoch's running loss and accuracy (summed on the device, read once
per epoch) — the numbers a progress bar shows.
"""
import numpy as np


class NumpyNet:
    """The chapter's network with hand-written forward, backward and RMSprop (works with NumPy or CuPy)."""

    def __init__(self, weights, xp=np, lr=1e-3, rho=0.9, eps=1e-7):
        self.xp = xp
        self.params = [xp.asarray(w, dtype=np.float32).copy() for w in weights]   # W1, b1, W2, b2
        self.v = [xp.zeros_like(p) for p in self.params]
        self.tmp = [xp.empty_like(p) for p in self.params]
        self.lr, self.rho, self.eps = np.float32(lr), np.float32(rho), np.float32(eps)

    def step(self, xb, yb):
        xp = self.xp
        W1, b1, W2, b2 = self.params
        x = xb.astype(np.float32)
        x *= np.float32(1 / 255)
        h = x @ W1
        h += b1
        xp.maximum(h, 0, out=h)
        z = h @ W2
        z += b2
        z -= z.max(axis=1, keepdims=True)
        e = xp.exp(z)
        s = e.sum(axis=1, keepdims=True)
        n = len(x)
        loss = -(yb * (z - xp.log(s))).sum() / n
        hits = xp.count_nonzero(z.argmax(axis=1) == yb.argmax(axis=1))     # the running accuracy
        e /= s
        e -= yb
        e *= np.float32(1 / n)                      # (p - y) / n
        grads = [None, None, h.T @ e, e.sum(axis=0)]
        gh = e @ W2.T
        gh *= h > 0
        grads[0] = x.T @ gh
        grads[1] = gh.sum(axis=0)
        for p, g, v, t in zip(self.params, grads, self.v, self.tmp):
            v *= self.rho
            xp.multiply(g, g, out=t)
            t *= 1 - self.rho
            v += t
            xp.add(v, self.eps, out=t)
            xp.sqrt(t, out=t)
            xp.divide(g, t, out=t)
            t *= self.lr
            p -= t
        return loss, hits

    def predict_accuracy(self, x, labels, batch=1024):
        xp = self.xp
        W1, b1, W2, b2 = self.params
        hits = 0
        for lo in range(0, len(x), batch):
            xb = x[lo:lo + batch].astype(np.float32) * np.float32(1 / 255)
            z = xp.maximum(xb @ W1 + b1, 0) @ W2 + b2
            hits += int((z.argmax(1) == labels[lo:lo + batch]).sum())
        return hits / len(x)


def numpy_epoch(net, x, y_onehot, order, batch_size):
    """One epoch of ``net`` over ``x`` (uint8, device array) in the given ``order`` (device array).

    Returns the epoch's mean training loss and accuracy (floats)."""
    loss_sum = hit_sum = 0
    for lo in range(0, len(x), batch_size):
        idx = order[lo:lo + batch_size]
        loss, hits = net.step(x.take(idx, axis=0), y_onehot.take(idx, axis=0))
        loss_sum = loss_sum + loss * len(idx)
        hit_sum = hit_sum + hits
    return float(loss_sum) / len(x), float(hit_sum) / len(x)


def torch_setup(weights, device="cpu"):
    import torch
    W1, b1, W2, b2 = [torch.tensor(np.asarray(w), device=device) for w in weights]
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(device)
    with torch.no_grad():
        model[0].weight.copy_(W1.T)
        model[0].bias.copy_(b1)
        model[2].weight.copy_(W2.T)
        model[2].bias.copy_(b2)
    # Keras' RMSprop puts eps inside the sqrt; with eps=1e-7 the two forms differ negligibly. PyTorch's
    # own defaults (lr=1e-2, alpha=0.99) are replaced by Keras' (lr=1e-3, rho=0.9).
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    return model, opt


def torch_convnet_setup(weights, device="cpu"):
    """The book's convnet in PyTorch (NCHW) with gpunet's initial ``weights`` (Keras layout: kernels
    (kh, kw, in, out), the first Dense's rows in channels-last (h, w, c) order), and ``torch.optim.RMSprop``
    with Keras' hyper-parameters as in :func:`torch_setup` (eps outside the square root: PyTorch's form).
    Takes NCHW uint8 batches (n, 1, 28, 28) through :func:`torch_epoch`."""
    import torch
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    w = [np.asarray(a, dtype=np.float32) for a in weights]
    w[6] = w[6].reshape(3, 3, 64, 64).transpose(2, 0, 1, 3).reshape(576, 64)    # rows (h, w, c) -> (c, h, w)
    targets = [model[0], model[3], model[6], model[9], model[11]]
    with torch.no_grad():
        for i, layer in enumerate(targets):
            kernel = w[2 * i].transpose(3, 2, 0, 1) if w[2 * i].ndim == 4 else w[2 * i].T
            layer.weight.copy_(torch.tensor(np.ascontiguousarray(kernel)))
            layer.bias.copy_(torch.tensor(w[2 * i + 1]))
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    return model, opt


def torch_epoch(model, opt, x, labels, order, batch_size):
    import torch
    f = torch.nn.functional
    loss_sum = hit_sum = 0
    for lo in range(0, len(x), batch_size):
        idx = order[lo:lo + batch_size]
        xb, yb = x[idx].float().mul_(1 / 255), labels[idx]
        out = model(xb)
        loss = f.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            loss_sum = loss_sum + loss.detach() * len(idx)
            hit_sum = hit_sum + (out.argmax(1) == yb).sum()
    return float(loss_sum) / len(x), float(hit_sum) / len(x)


def torch_accuracy(model, x, labels, batch=1024):
    import torch
    hits = 0
    with torch.no_grad():
        for lo in range(0, len(x), batch):
            z = model(x[lo:lo + batch].float() / 255)
            hits += int((z.argmax(1) == labels[lo:lo + batch]).sum())
    return hits / len(x)
