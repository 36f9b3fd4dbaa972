"""Algorithms written once against stacked workers and the communication interface."""
from .base import Method, local_steps, sample_clients
from .gossip import DSGD, DSGDMomentum, GradientTracking, QGDSGDm, RelaySGD
from .local import FedAvg, FedProx, LocalSGD, Scaffold
from .server import ServerAdam, ServerMomentum, ServerSGD
from .sgd import GD, MinibatchSGD

__all__ = ["Method", "local_steps", "sample_clients", "FedAvg", "LocalSGD", "FedProx", "Scaffold",
           "ServerSGD", "ServerMomentum", "ServerAdam", "GD", "MinibatchSGD",
           "DSGD", "DSGDMomentum", "QGDSGDm", "GradientTracking", "RelaySGD"]
