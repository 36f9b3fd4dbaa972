"""Worker script for tests/test_distributed.py, launched by torchrun (not collected by pytest).

Runs FedAvg (minibatch oracle on least squares), SCAFFOLD (Gaussian noise), D-SGD on a ring (Gaussian
noise), FedAvg on a small MLP (minibatches) and RelaySGD on a binary tree (Gaussian noise), each on this process's block of workers, and writes the
gathered final states to ``<out>/result.pt`` from rank 0.
"""
from __future__ import annotations

import sys

import torch

from hetlab import distributed as hd

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from dist_cases import CASES, ROUNDS, SEED  # noqa: E402


def main(out):
    rank, world = hd.init("gloo")
    torch.set_num_threads(1)
    results, sent = {}, {}
    for name, build in CASES.items():
        prob, oracle, meth, x0 = build()
        P, O, C = hd.shard(prob, oracle)
        gen = torch.Generator().manual_seed(SEED)
        s = meth.init(x0, P)
        for _ in range(ROUNDS):
            s = meth.step(s, O, C, gen)
        sent[name] = C.bytes_sent  # before the gathers below
        # row-blocked state tensors are gathered; replicated ones (RelaySGD's edge messages) are kept
        results[name] = {k: (C.gather(v) if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == len(C.rows)
                             else v) for k, v in s.items()}
    if rank == 0:
        torch.save({"world": world, "results": results, "bytes_sent_rank0": sent}, f"{out}/result.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
