r"""Neural-network problems on stacked workers: any ``torch.nn.Module`` as :math:`n` local objectives.

Worker :math:`i` holds :math:`m_i` samples :math:`(z_{ij},y_{ij})` and the network's parameters as one
flat row :math:`x_i\in\mathbb R^P` of the stacked tensor ``X [n, P]``:

.. math:: f_i(x)=\frac1{m_i}\sum_{j=1}^{m_i}\ell\big(h(x;z_{ij}),y_{ij}\big)+\frac\lambda2\|x\|^2,

with :math:`h(x;\cdot)` the module evaluated with parameters :math:`x` (``torch.func.functional_call``)
and :math:`\ell` the cross-entropy (integer labels) or half the squared error (float targets).
Samples are stored padded (``Z [n, m_max, *input_shape]``, ``y [n, m_max]``, ``counts [n]``), like the
finite-sum problems, so :class:`~hetlab.problems.MinibatchOracle` draws per-worker minibatches and
every method of :mod:`hetlab.algorithms` runs unchanged.

Two ways to compute the stacked gradients, chosen by ``path``:

* ``"vmap"`` (any module): ``torch.func.vmap(torch.func.grad(loss))`` over the worker dimension; the
  module's own forward runs inside, batched over the worker's samples.
* ``"mlp"`` (``nn.Sequential`` of ``Linear`` layers with ``ReLU``/``Tanh``/``Identity`` between them,
  optionally a leading ``Flatten``): forward and backward written by hand with batched matrix
  products over the worker dimension (``baddbmm``/``bmm``). It does the same arithmetic in far fewer
  kernel launches (``../shared/PERF_NOTES.md``: eager vmap spends its time in small ops).
  ``"auto"`` picks it whenever the module qualifies. Both paths agree to rounding (a test checks 1e-12
  in float64).

No model copies per worker and no Python loop over workers: memory is the stacked parameters
(``n * P`` numbers per state tensor of the method) plus the data plus the activations of one
minibatch per worker; :meth:`NNProblem.memory_estimate` predicts it before the run.
There is no closed-form minimiser: ``x_star`` raises ``NotImplementedError`` and the run loop then
records the loss instead of the suboptimality.
"""
from __future__ import annotations

import contextlib
from functools import cached_property

import torch
from torch import nn

from .._validation import as_tensor
from .base import Problem
from .finite_sum import FiniteSumMixin

__all__ = ["NNProblem", "flat_parameters", "mlp_qualifies"]

_ACTS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Identity: "identity"}


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """The module's parameters as one flat vector (``named_parameters`` order)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def mlp_qualifies(model: nn.Module) -> bool:
    """Whether the hand-batched MLP path applies: ``Sequential`` of ``[Flatten] Linear (act Linear)*``."""
    if not isinstance(model, nn.Sequential):
        return False
    layers = list(model)
    if layers and isinstance(layers[0], nn.Flatten):
        layers = layers[1:]
    if not layers or not isinstance(layers[0], nn.Linear) or not isinstance(layers[-1], nn.Linear):
        return False
    expect_linear = True
    for m in layers:
        if expect_linear:
            if not isinstance(m, nn.Linear):
                return False
        elif type(m) not in _ACTS:
            return False
        expect_linear = not expect_linear
    return not expect_linear and len(list(model.buffers())) == 0


class NNProblem(Problem):
    """A neural network trained by ``n`` workers on their own data.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture (its current parameters give :meth:`initial_point`). Modules with buffers
        (BatchNorm running statistics) are rejected: use GroupNorm/LayerNorm, which keep no state.
    Z : tensor ``[n, m_max, *input_shape]``
        Padded inputs of every worker.
    y : tensor ``[n, m_max]``
        Integer class labels (cross-entropy) or float targets (``loss="mse"``; then ``[n, m_max, k]``
        is also accepted).
    counts : ``[n]`` samples per worker (``m_max`` each when ``None``).
    loss : ``"cross_entropy"`` or ``"mse"`` (:math:`\\frac12\\|h-y\\|^2`).
    lam : ridge weight :math:`\\lambda`.
    weights : ``"samples"`` (:math:`q_i\\propto m_i`), ``"uniform"`` or an array.
    dtype, device : where the data and every stacked tensor live (float32 by default; float64 for
        exactness tests; bfloat16 on GPUs).
    path : ``"auto"``, ``"mlp"`` or ``"vmap"`` (see the module docstring).
    autocast : ``None``, ``torch.bfloat16`` or ``torch.float16``: mixed precision. Parameters, method
        states and the loss stay in ``dtype`` (float32); the matrix products of the forward and
        backward passes run in the lower precision (``torch.autocast`` on the vmap path, explicit
        casts on the MLP path), and the gradients come back in ``dtype``. Exact tools
        (:meth:`per_sample_grads`, :meth:`minibatch_variance`) ignore it.
    """

    name = "nn"

    def __init__(self, model: nn.Module, Z, y, counts=None, *, loss: str = "cross_entropy", lam: float = 0.0,
                 weights="samples", dtype=torch.float32, device="cpu", path: str = "auto", autocast=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}")
        if path not in ("auto", "mlp", "vmap"):
            raise ValueError(f"path must be 'auto', 'mlp' or 'vmap', got {path!r}")
        if autocast is not None:
            if autocast not in (torch.bfloat16, torch.float16):
                raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast}")
            if dtype != torch.float32:
                raise ValueError(f"mixed precision keeps float32 parameters: use dtype=torch.float32 with "
                                 f"autocast={autocast} (got dtype={dtype})")
        self.autocast = autocast
        if len(list(model.buffers())):
            raise ValueError("the model has buffers (e.g. BatchNorm running statistics), which would be shared "
                             "by all workers; use GroupNorm or LayerNorm instead")
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype)
        self.loss_kind, self.lam = loss, float(lam)
        Z = as_tensor(Z, dtype=dtype, name="Z").to(self.device)
        if Z.dim() < 3:
            raise ValueError(f"Z must have shape [n, m_max, *input_shape], got {list(Z.shape)}")
        n, m = Z.shape[:2]
        if loss == "cross_entropy":
            y = torch.as_tensor(y).to(self.device)
            if y.is_floating_point():
                if not torch.equal(y, y.round()):
                    raise ValueError("cross-entropy needs integer class labels; got non-integer floats")
                y = y.long()
            y = y.long()
            if tuple(y.shape) != (n, m):
                raise ValueError(f"labels must have shape [{n}, {m}], got {list(y.shape)}")
        else:
            y = as_tensor(y, dtype=dtype, name="y").to(self.device)
            if tuple(y.shape[:2]) != (n, m):
                raise ValueError(f"targets must have shape [{n}, {m}, ...], got {list(y.shape)}")
        if counts is None:
            counts = torch.full((n,), m, dtype=torch.long)
        counts = torch.as_tensor(counts, dtype=torch.long).to(self.device)
        if tuple(counts.shape) != (n,) or (counts < 1).any() or (counts > m).any():
            raise ValueError(f"counts must have shape [{n}] with values in [1, {m}] (every worker needs a sample)")
        self.n, self.Z, self.y, self.counts = n, Z, y, counts
        self.mask = torch.arange(m, device=self.device)[None, :] < counts[:, None]
        if loss == "cross_entropy":
            self.y = torch.where(self.mask, self.y, torch.zeros_like(self.y))  # padding labels are never used
        if isinstance(weights, str):
            if weights == "samples":
                w = counts.to(torch.float64)
            elif weights == "uniform":
                w = torch.ones(n, dtype=torch.float64)
            else:
                raise ValueError(f"weights must be 'samples', 'uniform' or an array, got {weights!r}")
        else:
            w = torch.as_tensor(weights, dtype=torch.float64)
            if tuple(w.shape) != (n,) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"weights must be {n} non-negative numbers with a positive sum")
        self.weights = (w / w.sum()).to(device=self.device, dtype=dtype)
        self._names = [k for k, _ in self.model.named_parameters()]
        self._shapes = [tuple(p.shape) for p in self.model.parameters()]
        self._numels = [p.numel() for p in self.model.parameters()]
        self.d = int(sum(self._numels))
        self.input_shape = tuple(Z.shape[2:])
        if path == "auto":
            path = "mlp" if mlp_qualifies(self.model) else "vmap"
        elif path == "mlp" and not mlp_qualifies(self.model):
            raise ValueError("path='mlp' needs an nn.Sequential of [Flatten] Linear (ReLU|Tanh|Identity Linear)*; "
                             "use path='vmap' for other modules")
        self.path = path
        if path == "mlp":
            layers = [m for m in self.model if not isinstance(m, nn.Flatten)]
            self._acts = [_ACTS[type(m)] for m in layers[1::2]]
            self._bias = [m.bias is not None for m in layers[0::2]]
        self._workspace: dict[str, torch.Tensor] = {}

    # -- parameters --------------------------------------------------------------------------------
    def initial_point(self, seed: int | None = None) -> torch.Tensor:
        """Flat initial parameters: the module's current ones, or, with ``seed``, a fresh default
        initialisation drawn under ``torch.manual_seed(seed)`` (the global RNG state is restored)."""
        if seed is None:
            return flat_parameters(self.model).clone()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            fresh = [m for m in self.model.modules() if hasattr(m, "reset_parameters")]
            saved = flat_parameters(self.model).clone()
            for m in fresh:
                m.reset_parameters()
            x0 = flat_parameters(self.model).clone()
            self.load_into_model(saved)
        return x0

    def unflatten(self, X: torch.Tensor) -> dict:
        """Flat parameters ``[..., P]`` as a name -> tensor ``[..., *shape]`` dict (views, no copies)."""
        lead = X.shape[:-1]
        parts = torch.split(X, self._numels, dim=-1)
        return {k: p.reshape(*lead, *s) for k, p, s in zip(self._names, parts, self._shapes)}

    def load_into_model(self, x: torch.Tensor) -> nn.Module:
        """Copy the flat parameters ``x [P]`` into ``self.model`` (for evaluation or export)."""
        x = self._check_point(x)
        with torch.no_grad():
            for p, v in zip(self.model.parameters(), self.unflatten(x).values()):
                p.copy_(v)
        return self.model

    def _check_point(self, x):
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        if tuple(x.shape) != (self.d,):
            raise ValueError(f"x must have shape [{self.d}] (the network's parameter count), got {list(x.shape)}")
        return x

    # -- per-sample losses ---------------------------------------------------------------------------
    def _sample_losses(self, out, y):
        if self.loss_kind == "cross_entropy":
            return torch.nn.functional.cross_entropy(out, y, reduction="none")
        diff = out.reshape(out.shape[0], -1) - y.reshape(y.shape[0], -1)
        return 0.5 * (diff * diff).sum(-1)

    def _select(self, idx, samples=None):
        """Inputs, labels and per-sample weights of the selected workers: ``[k, b, ...]``, ``[k, b]``, ``[k, b]``."""
        Z, y = self._rows(self.Z, idx), self._rows(self.y, idx)
        if samples is None:
            mask = self._rows(self.mask, idx).to(self.dtype)
            return Z, y, mask / self._rows(self.counts, idx).to(self.dtype)[:, None]
        if samples.device != self.device:
            samples = samples.to(self.device)
        k, b = samples.shape
        offsets = self._workspace.get("offsets")
        if offsets is None or offsets.shape[0] != k or offsets.device != samples.device:
            offsets = self._workspace["offsets"] = torch.arange(k, device=self.device)[:, None] * Z.shape[1]
        flat = (samples + offsets).reshape(-1)
        Zs = Z.reshape(-1, *Z.shape[2:]).index_select(0, flat).reshape(k, b, *Z.shape[2:])
        ys = y.reshape(-1, *y.shape[2:]).index_select(0, flat).reshape(k, b, *y.shape[2:])
        # every sample of a minibatch weighs 1/b: a number on the MLP path, a tensor for vmap
        return Zs, ys, 1.0 / b if self.path == "mlp" else torch.full((k, b), 1.0 / b, dtype=self.dtype,
                                                                        device=self.device)

    # -- vmap path -------------------------------------------------------------------------------------
    def _worker_loss(self, x, Zb, yb, wb):
        from torch.func import functional_call
        out = functional_call(self.model, self.unflatten(x), (Zb,))
        val = (self._sample_losses(out, yb) * wb).sum()
        if self.lam:
            val = val + 0.5 * self.lam * (x * x).sum()
        return val

    @cached_property
    def _vmap_grad(self):
        from torch.func import grad, vmap
        return vmap(grad(self._worker_loss))

    @cached_property
    def _vmap_loss(self):
        from torch.func import vmap
        return vmap(self._worker_loss)

    # -- hand-batched MLP path -------------------------------------------------------------------------------
    def _mlp_layers(self, X):
        """Weights ``[k, out, in]``, biases ``[k, out]`` (or ``None``) and the flat blocks ``[k, numel]`` in
        parameter order: all views of ``X``."""
        parts = X.split(self._numels, dim=1)
        Ws, bs, i = [], [], 0
        for has_b in self._bias:
            Ws.append(parts[i].view(X.shape[0], *self._shapes[i]))
            bs.append(parts[i + 1] if has_b else None)
            i += 2 if has_b else 1
        return Ws, bs, parts

    def _work(self, name: str, shape, dtype) -> torch.Tensor:
        """A scratch tensor of the MLP path, kept between calls (never returned to the caller): a fresh
        ``[n, b, width]`` or ``[n, out, in]`` tensor per step would cost an allocation, and with glibc
        page faults, every local step."""
        t = self._workspace.get(name)
        if t is None or t.shape != shape or t.dtype != dtype:
            t = torch.empty(tuple(shape), dtype=dtype, device=self.device)
            self._workspace[name] = t
        return t

    def _mlp_forward(self, X, Zb):
        """Batched forward pass. Returns the output **class-major**, ``[k, classes, b]``, the layer inputs
        (post-activation, ``[k, b, width]``) and the weights.

        The last layer is computed as :math:`W_L H^\\top` because a batched product whose result has a
        short last dimension (10 classes) runs several times slower on CPU than its transpose.
        Activations are applied in place: the backward pass needs only the post-activation values
        (ReLU: :math:`\\mathbb 1[a>0]=\\mathbb 1[z>0]`; tanh: :math:`1-a^2`). The outputs live in the
        workspace and are overwritten by the next call."""
        Ws, bs, parts = self._mlp_layers(X)
        k, b = Zb.shape[0], Zb.shape[1]
        h = Zb if Zb.dim() == 3 else Zb.reshape(k, b, -1)
        if self.autocast is not None:  # mixed precision: the products in low precision
            Ws, h = [W.to(self.autocast) for W in Ws], h.to(self.autocast)
        acts = [h]
        last = len(Ws) - 1
        for l, (W, bias) in enumerate(zip(Ws, bs)):
            if l == last:
                h = torch.bmm(W, h.transpose(1, 2), out=self._work("out", (k, W.shape[1], b), h.dtype))
                if bias is not None:
                    h.add_(bias[:, :, None])
                break
            h = torch.bmm(h, W.transpose(1, 2), out=self._work(f"h{l}", (k, b, W.shape[1]), h.dtype))
            if bias is not None:
                h.add_(bias[:, None, :])
            a = self._acts[l]
            if a == "relu":
                h.relu_()
            elif a == "tanh":
                h.tanh_()
            acts.append(h)
        return h, acts, Ws, bs, parts

    def _mlp_out_grad(self, out, yb, wb, need_loss: bool = True):
        """Gradient of :math:`\\sum_j w_j\\ell_j` with respect to the class-major output ``out [k, C, b]``
        (overwritten by it), and the weighted loss per worker (``None`` unless ``need_loss``).
        ``wb`` is ``[k, b]`` or one number (the minibatch weight 1/b)."""
        wcol = wb[:, None, :] if torch.is_tensor(wb) else wb
        if out.dtype != self.dtype:  # mixed precision: the loss and its gradient in full precision
            out = out.to(self.dtype)
        if self.loss_kind == "cross_entropy":
            # softmax by hand, in place: several times faster than torch.log_softmax over ~10 classes on CPU
            z = out.sub_(out.amax(1, keepdim=True))
            loss = None
            if need_loss:
                lse = z.exp().sum(1).log()
                loss = ((lse - z.gather(1, yb[:, None, :])[:, 0, :]) * wb).sum(1)
            g = z.exp_()
            g.div_(g.sum(1, keepdim=True))
            g.scatter_add_(1, yb[:, None, :], g.new_full((), -1.0).expand(yb.shape[0], 1, yb.shape[1]))
        else:
            g = out.sub_(yb.reshape(out.shape[0], out.shape[2], -1).transpose(1, 2))
            loss = 0.5 * ((g * g).sum(1) * wb).sum(1) if need_loss else None
        return g.mul_(wcol), loss

    def _mlp_layer_grads(self, X, Zb, yb, wb):
        """The gradient's blocks in the flat order ``(W_1, b_1, ..., W_L, b_L)``, each ``[k, numel]``
        (weight blocks are views of the workspace), without the ridge term, and the matching blocks of ``X``."""
        out, acts, Ws, bs, parts = self._mlp_forward(X, Zb)
        g, _ = self._mlp_out_grad(out, yb, wb, need_loss=False)  # [k, C, b]
        k, last = X.shape[0], len(Ws) - 1
        per_layer = [None] * len(Ws)
        gb = g.sum(2) if bs[last] is not None else None
        if self.autocast is not None:
            g = g.to(self.autocast)
        gW = torch.bmm(g, acts[last], out=self._work(f"gW{last}", (k, *Ws[last].shape[1:]), g.dtype))
        per_layer[last] = [gW.view(k, -1)] + ([gb] if gb is not None else [])
        g = g.transpose(1, 2)  # [k, b, C]
        for l in range(last, -1, -1):
            if l < last:
                gW = torch.bmm(g.transpose(1, 2), acts[l], out=self._work(f"gW{l}", (k, *Ws[l].shape[1:]), g.dtype))
                per_layer[l] = [gW.view(k, -1)] + ([g.sum(1)] if bs[l] is not None else [])
            if l > 0:
                g = torch.bmm(g, Ws[l], out=self._work(f"g{l}", acts[l].shape, g.dtype))
                a = self._acts[l - 1]  # multiply by the activation's derivative, in place
                if a == "relu":
                    torch.ops.aten.threshold_backward.grad_input(g, acts[l], 0, grad_input=g)
                elif a == "tanh":
                    torch.ops.aten.tanh_backward.grad_input(g, acts[l], grad_input=g)
        return [t for ts in per_layer for t in ts], parts

    def _mlp_grad(self, X, Zb, yb, wb):
        blocks = self._mlp_layer_grads(X, Zb, yb, wb)[0]
        G = torch.cat([t.to(self.dtype) for t in blocks], dim=1)  # the only [k, P] allocation
        return G.add_(X, alpha=self.lam) if self.lam else G

    def _mlp_loss(self, X, Zb, yb, wb):
        out = self._mlp_forward(X, Zb)[0]
        loss = self._mlp_out_grad(out, yb, wb)[1]
        return loss + 0.5 * self.lam * (X * X).sum(1) if self.lam else loss

    # -- Problem interface ---------------------------------------------------------------------------------------
    def _grad(self, X, Zb, yb, wb):
        if self.path == "mlp":
            return self._mlp_grad(X, Zb, yb, wb)
        with self._autocast():
            return self._vmap_grad(X, Zb, yb, wb).to(self.dtype)

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def grad(self, X, idx=None):
        """Full local gradients (every sample of each selected worker) at the stacked points."""
        self._check_stacked(X, idx)
        return self._grad(X, *self._select(idx))

    def minibatch_grad(self, X, samples, idx=None):
        """Mean gradient over ``samples [k, b]`` (indices into each selected worker's data)."""
        self._check_stacked(X, idx)
        return self._grad(X, *self._select(idx, samples))

    def minibatch_step_(self, X, samples, lr: float, idx=None) -> torch.Tensor:
        r"""One SGD step in place, :math:`X\leftarrow X-\eta\,g(X)` with the minibatch gradient of
        :meth:`minibatch_grad` (equal to rounding). On the MLP path each layer's gradient block is
        added straight into its slice of ``X``: no ``[k, P]`` gradient tensor is formed."""
        self._check_stacked(X, idx)
        if self.path != "mlp":
            return X.add_(self.minibatch_grad(X, samples, idx), alpha=-lr)
        blocks, parts = self._mlp_layer_grads(X, *self._select(idx, samples))
        if self.lam:
            X.mul_(1.0 - lr * self.lam)
        for p, t in zip(parts, blocks):
            p.add_(t, alpha=-lr)
        return X

    def loss(self, X, idx=None):
        self._check_stacked(X, idx)
        args = self._select(idx)
        with torch.no_grad():
            if self.path == "mlp":
                return self._mlp_loss(X, *args)
            with self._autocast():
                return self._vmap_loss(X, *args).to(self.dtype)

    def predict(self, x, Z) -> torch.Tensor:
        """Outputs of the network with parameters ``x [P]`` on inputs ``Z [N, *input_shape]``."""
        from torch.func import functional_call
        x = self._check_point(x)
        Z = torch.as_tensor(Z, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            return functional_call(self.model, self.unflatten(x), (Z,))

    def accuracy(self, x, Z, y, batch: int = 4096) -> float:
        """Classification accuracy of the parameters ``x`` on ``(Z, y)`` (in chunks of ``batch``)."""
        y = torch.as_tensor(y, device=self.device)
        hits = 0
        for s in range(0, len(y), batch):
            hits += int((self.predict(x, Z[s:s + batch]).argmax(-1) == y[s:s + batch]).sum())
        return hits / len(y)

    def per_sample_grads(self, X, idx=None):
        """Per-sample gradients ``[k, m_max, P]`` at the stacked points (zero on padding)."""
        self._check_stacked(X, idx)
        Z, y, w = self._select(idx)
        mask = (w > 0).to(self.dtype)
        from torch.func import grad, vmap
        one = vmap(vmap(grad(self._worker_loss), in_dims=(None, 0, 0, 0)), in_dims=(0, 0, 0, 0))
        G = one(X, Z[:, :, None], y[:, :, None], torch.ones_like(w)[:, :, None])
        return G * mask[..., None]

    # exact variance of a size-b minibatch gradient from the per-sample gradients: the finite-sum formula
    minibatch_variance = FiniteSumMixin.minibatch_variance

    @property
    def x_star(self):
        raise NotImplementedError("a neural network has no closed-form minimiser")

    def constants(self) -> dict:
        return {"n": self.n, "d": self.d, "path": self.path, "samples": int(self.counts.sum())}

    # -- memory --------------------------------------------------------------------------------------------------
    def memory_estimate(self, batch_size: int, state_tensors: int = 3) -> dict:
        """Predicted bytes: data, ``state_tensors`` stacked ``[n, P]`` tensors of the method (model,
        gradient, e.g. a control variate), and the activations of one minibatch per worker
        (the widest layer, forward and backward). Compare ``total`` with the device memory before a run."""
        es = torch.finfo(self.dtype).bits // 8
        data = self.Z.numel() * self.Z.element_size() + self.y.numel() * self.y.element_size()
        params = state_tensors * self.n * self.d * es
        with torch.no_grad():
            probe = self.Z[:1, :1]
            widest = [probe.numel()]

            def hook(_m, _i, o):
                widest.append(o.numel())
            hs = [m.register_forward_hook(hook) for m in self.model.modules() if len(list(m.children())) == 0]
            try:
                self.model(probe.reshape(1, *self.input_shape))
            finally:
                for h in hs:
                    h.remove()
        act = 3 * self.n * batch_size * sum(widest) * es
        return {"data": data, "parameters": params, "activations": act, "total": data + params + act}

    def check_memory(self, batch_size: int, state_tensors: int = 3, available: int | None = None) -> dict:
        """Raise ``MemoryError`` (with the numbers) when :meth:`memory_estimate` exceeds the device's free
        memory (``torch.cuda.mem_get_info`` on GPUs; ``available`` bytes if given)."""
        est = self.memory_estimate(batch_size, state_tensors)
        if available is None and self.device.type == "cuda":
            available = torch.cuda.mem_get_info(self.device)[0]
        if available is not None and est["total"] > available:
            raise MemoryError(
                f"the run needs about {est['total'] / 2**30:.2f} GiB (data {est['data'] / 2**30:.2f}, stacked "
                f"parameters {est['parameters'] / 2**30:.2f}, activations {est['activations'] / 2**30:.2f}) but only "
                f"{available / 2**30:.2f} GiB are free; use fewer workers per process, a smaller batch or float32")
        return est

    def __repr__(self):
        return f"NNProblem(n={self.n}, P={self.d}, path={self.path!r}, loss={self.loss_kind!r}, dtype={self.dtype})"
