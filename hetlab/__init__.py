"""hetlab: numerical checks of distributed, federated and decentralized optimization theory
under data heterogeneity.

Layers (see the README's architecture section):

* :mod:`hetlab.problems` – objectives with exact constants and stochastic oracles;
* :mod:`hetlab.comm` – the communication interface of stacked workers;
* :mod:`hetlab.algorithms` – methods written once against stacked ``[n, d]`` state;
* :mod:`hetlab.measures` – heterogeneity and consensus measures;
* :mod:`hetlab.exact` – exact verification machinery (affine maps, Lyapunov, flows, slopes);
* :mod:`hetlab.run` – the training loop; :mod:`hetlab.plot` – standard figures.
"""
from . import algorithms, exact, measures, problems
from .comm import SimulatedComm
from .run import DivergenceError, History, run

__version__ = "0.1.0"
__all__ = ["algorithms", "exact", "measures", "problems", "SimulatedComm", "run", "History",
           "DivergenceError"]
