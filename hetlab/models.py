r"""Small reference architectures for :class:`~hetlab.problems.NNProblem`.

All are plain ``torch.nn`` modules without buffers (no BatchNorm: its running statistics would be
shared by the stacked workers; GroupNorm keeps no state), so they run under ``torch.func.vmap``.
``logistic`` and ``mlp`` also qualify for the hand-batched MLP path.

* :func:`logistic`: multinomial logistic regression (one linear layer);
* :func:`mlp`: fully connected network, e.g. ``mlp([64, 32, 10])`` (the benchmarks' 64-32-10);
* :func:`small_cnn`: two 3x3 conv layers with max-pooling and a linear head (digits 8x8, MNIST 28x28);
* :func:`resnet_small`: a ResNet-style network (residual blocks with GroupNorm) for GPU-scale runs
  (CIFAR-10 32x32).
"""
from __future__ import annotations

from torch import nn

__all__ = ["logistic", "mlp", "small_cnn", "resnet_small"]


def logistic(d_in: int, classes: int) -> nn.Sequential:
    """Multinomial logistic regression :math:`z\\mapsto Wz+b` on flattened inputs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, classes))


def mlp(sizes, activation: str = "relu") -> nn.Sequential:
    """Fully connected network with layer widths ``sizes`` (input first, classes last)."""
    sizes = list(sizes)
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must list at least an input and an output width (positive), got {sizes}")
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}.get(activation)
    if act is None:
        raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def small_cnn(in_channels: int = 1, classes: int = 10, side: int = 8, width: int = 16) -> nn.Sequential:
    """``conv3x3(width) - ReLU - maxpool2 - conv3x3(2 width) - ReLU - maxpool2 - linear`` for
    ``side x side`` images (``side`` divisible by 4)."""
    if side % 4:
        raise ValueError(f"side must be divisible by 4 (two 2x2 poolings), got {side}")
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * (side // 4) ** 2, classes))


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride, groups):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.n1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.n2 = nn.GroupNorm(groups, c_out)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(groups, c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.n1(self.conv1(x)))
        return self.act(self.n2(self.conv2(h)) + self.skip(x))


def resnet_small(in_channels: int = 3, classes: int = 10, width: int = 16, blocks=(1, 1, 1),
                 groups: int = 4) -> nn.Sequential:
    """A ResNet-style network: a stem conv, three stages of residual blocks (``width``, ``2 width``,
    ``4 width`` channels; stride 2 between stages), global average pooling and a linear head.
    GroupNorm instead of BatchNorm so that it runs on stacked workers."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.GroupNorm(groups, width),
                               nn.ReLU()]
    c = width
    for s, nb in enumerate(blocks):
        c_out = width * 2 ** s
        for b in range(nb):
            layers.append(_Block(c, c_out, 2 if (b == 0 and s > 0) else 1, groups))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]
    return nn.Sequential(*layers)
