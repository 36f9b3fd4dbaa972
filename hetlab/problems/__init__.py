"""Problems with exact constants (x_star, f_star, L, mu, zeta_star^2) and stochastic oracles."""
from .base import Problem
from .finite_sum import (LeastSquaresProblem, LogisticRegressionProblem, random_least_squares,
                         random_logistic)
from .nn import NNProblem
from .oracles import ExactOracle, GaussianNoiseOracle, MinibatchOracle, Oracle
from .pl import PLProblem, pl_family
from .polynomial import CubicQuarticProblem, random_cubic_quartic
from .quadratic import QuadraticProblem, random_quadratics

__all__ = [
    "Problem", "QuadraticProblem", "random_quadratics", "LeastSquaresProblem", "random_least_squares",
    "LogisticRegressionProblem", "random_logistic", "PLProblem", "pl_family",
    "Oracle", "ExactOracle", "GaussianNoiseOracle", "MinibatchOracle",
    "CubicQuarticProblem", "random_cubic_quartic", "NNProblem",
]
