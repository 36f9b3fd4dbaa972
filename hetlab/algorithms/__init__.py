"""Algorithms written once against stacked workers and the communication interface."""
from .async_sgd import AsyncSGD
from .base import Method, local_steps, sample_clients
from .gradalign import FedGA, GradAlign, LocalReshuffledSGD
from .compressed import DIANA, DQSGD, EF21, EFSGD
from .compressed_gossip import LEAD, ChocoSGD
from .gossip import DSGD, DSGDMomentum, GradientTracking, QGDSGDm, RelaySGD
from .local import FedAvg, FedProx, LocalSGD, Scaffold
from .second_order import LocalNewton
from .server_side import FedAWARE
from .robust import (EFSignSGD, MedianSGD, NoisyMedianSGD, NoisySignSGD, Perturbation, RobustAggregationSGD,
                     SignSGDMajorityVote)
from .server import ServerAdam, ServerMomentum, ServerSGD
from .sgd import GD, MinibatchSGD
from .shuffling import RandomReshuffling, WithReplacementSGD, expected_epoch

__all__ = ["Method", "local_steps", "sample_clients", "FedAvg", "LocalSGD", "FedProx", "Scaffold",
           "ServerSGD", "ServerMomentum", "ServerAdam", "GD", "MinibatchSGD",
           "DSGD", "DSGDMomentum", "QGDSGDm", "GradientTracking", "RelaySGD",
           "RandomReshuffling", "WithReplacementSGD", "expected_epoch",
           "FedGA", "GradAlign", "LocalReshuffledSGD",
           "RobustAggregationSGD", "MedianSGD", "NoisyMedianSGD", "SignSGDMajorityVote", "NoisySignSGD",
           "EFSignSGD", "Perturbation", "DQSGD", "EFSGD", "EF21", "DIANA",
           "LocalNewton", "FedAWARE", "ChocoSGD", "LEAD", "AsyncSGD"]
