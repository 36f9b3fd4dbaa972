"""hetlab: numerical checks of distributed, federated and decentralized optimization theory
under data heterogeneity.

Layers (see the README's architecture section):

* :mod:`hetlab.problems` – objectives with exact constants and stochastic oracles;
* :mod:`hetlab.comm` – the communication interface of stacked workers;
* :mod:`hetlab.algorithms` – methods written once against stacked ``[n, d]`` state;
* :mod:`hetlab.measures` – heterogeneity and consensus measures;
* :mod:`hetlab.exact` – exact verification machinery (affine maps, Lyapunov, flows, slopes);
* :mod:`hetlab.run` – the training loop; :mod:`hetlab.plot` – standard figures;
* :mod:`hetlab.data` – datasets shipped offline, loaders for local files, federated partitioners;
* :mod:`hetlab.models` – small networks for :class:`~hetlab.problems.NNProblem`;
* :mod:`hetlab.distributed` – the same methods on ``torch.distributed`` processes.
"""
from . import algorithms, data, exact, measures, models, problems
from .comm import SimulatedComm
from .run import DivergenceError, History, run

__version__ = "0.1.0"
__all__ = ["algorithms", "data", "exact", "measures", "models", "problems", "SimulatedComm", "run", "History",
           "DivergenceError"]
