"""Small input-validation helpers shared by the library (clear errors that say what to do)."""
from __future__ import annotations

import torch

DEFAULT_DTYPE = torch.float64


def as_tensor(x, *, dtype=None, device=None, name="array") -> torch.Tensor:
    """Convert ``x`` to a floating tensor (float64 unless ``dtype`` says otherwise)."""
    if isinstance(x, torch.Tensor):
        t = x
        if dtype is not None or not t.is_floating_point():
            t = t.to(dtype=dtype or DEFAULT_DTYPE)
    else:
        try:
            t = torch.as_tensor(x, dtype=dtype or DEFAULT_DTYPE)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from err
    if device is not None:
        t = t.to(device)
    return t


def check_shape(t: torch.Tensor, shape: tuple, name: str) -> None:
    """Raise ``ValueError`` unless ``t.shape`` matches ``shape`` (``None`` entries match anything)."""
    ok = t.dim() == len(shape) and all(s is None or s == ts for s, ts in zip(shape, t.shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")


def normalize_weights(weights, n: int, *, dtype=DEFAULT_DTYPE, device=None) -> torch.Tensor:
    """Client weights q (non-negative, summing to one). ``None`` means uniform ``1/n``."""
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=dtype, device=device)
    q = as_tensor(weights, dtype=dtype, device=device, name="weights")
    check_shape(q, (n,), "weights")
    if not torch.isfinite(q).all() or (q < 0).any():
        raise ValueError("weights must be finite and non-negative")
    s = q.sum()
    if s <= 0:
        raise ValueError("weights must not all be zero")
    return q / s


def check_step_size(method: str, lr: float, L: float, *, limit: float = 2.0, what: str = "step size") -> None:
    """Reject ``lr`` with ``lr * L >= limit`` (gradient descent on an L-smooth quadratic diverges)."""
    if lr <= 0:
        raise ValueError(f"{method}: {what} must be positive, got {lr}")
    if L is not None and L > 0 and lr * L >= limit:
        raise ValueError(
            f"{method}: {what} {lr:g} is past the stability limit {limit:g}/L = {limit / L:g} "
            f"(L = {L:g}); choose a {what} below {limit / L:g}, or pass check_stability=False "
            "if you want to watch it diverge"
        )
