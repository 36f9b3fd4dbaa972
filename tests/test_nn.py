"""Neural-network problems on stacked workers (hetlab.problems.NNProblem, hetlab.models)."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from hetlab.algorithms import FedAvg, Scaffold
from hetlab.comm import SimulatedComm
from hetlab.models import logistic, mlp, resnet_small, small_cnn
from hetlab.problems import MinibatchOracle, NNProblem
from hetlab.problems.nn import mlp_qualifies

DT = torch.float64


def data(n=4, m=9, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, m, d, generator=g, dtype=DT)
    y = torch.randint(0, classes, (n, m), generator=g)
    counts = torch.tensor([9, 4, 6, 9][:n])
    return Z, y, counts


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_mlp_path_equals_vmap_path(act, lam):
    Z, y, counts = data()
    torch.manual_seed(0)
    model = mlp([6, 5, 4, 3], act)
    a = NNProblem(model, Z, y, counts, dtype=DT, path="mlp", lam=lam)
    b = NNProblem(model, Z, y, counts, dtype=DT, path="vmap", lam=lam)
    X = torch.randn(4, a.d, dtype=DT)
    assert torch.allclose(a.grad(X), b.grad(X), atol=1e-12, rtol=0)
    assert torch.allclose(a.loss(X), b.loss(X), atol=1e-12, rtol=0)
    idx = torch.tensor([0, 2])
    s = torch.tensor([[0, 3, 8], [5, 1, 2]])
    assert torch.allclose(a.minibatch_grad(X[idx], s, idx), b.minibatch_grad(X[idx], s, idx), atol=1e-12, rtol=0)


def test_mlp_path_handles_layers_without_bias_and_mse():
    Z, _, counts = data()
    Y = torch.randn(4, 9, 2, dtype=DT)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 2))
    a = NNProblem(model, Z, Y, counts, dtype=DT, loss="mse", path="mlp")
    b = NNProblem(model, Z, Y, counts, dtype=DT, loss="mse", path="vmap")
    X = torch.randn(4, a.d, dtype=DT)
    assert torch.allclose(a.grad(X), b.grad(X), atol=1e-12, rtol=0)


def test_gradients_equal_autograd_per_worker_for_a_cnn():
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(2, 5, 1, 8, 8, generator=g, dtype=DT)
    y = torch.randint(0, 10, (2, 5), generator=g)
    prob = NNProblem(small_cnn(1, 10, 8, width=4), Z, y, torch.tensor([5, 3]), dtype=DT)
    assert prob.path == "vmap"
    X = torch.stack([prob.initial_point(0), prob.initial_point(1)])
    G = prob.grad(X)
    for i, m in enumerate((5, 3)):
        model = copy.deepcopy(prob.load_into_model(X[i]))
        loss = nn.functional.cross_entropy(model(Z[i, :m]), y[i, :m])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        assert torch.allclose(G[i], torch.cat([t.reshape(-1) for t in grads]), atol=1e-12, rtol=0)


def test_fedavg_on_a_network_equals_a_per_client_loop():
    Z, y, counts = data(n=4, m=9)
    torch.manual_seed(3)
    prob = NNProblem(mlp([6, 7, 3]), Z, y, counts, dtype=DT)
    x0 = prob.initial_point()
    lr, K, b = 0.1, 3, 2
    meth, oracle = FedAvg(lr, K, check_stability=False), MinibatchOracle(prob, b)
    gen = torch.Generator().manual_seed(5)
    s = meth.step(meth.init(x0, prob), oracle, SimulatedComm(4), gen)
    gen = torch.Generator().manual_seed(5)
    samples = [oracle.sample(None, gen) for _ in range(K)]
    base = copy.deepcopy(prob.load_into_model(x0))
    avg = torch.zeros_like(x0)
    for i in range(4):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for k in range(K):
            opt.zero_grad()
            nn.functional.cross_entropy(model(Z[i, samples[k][i]]), y[i, samples[k][i]]).backward()
            opt.step()
        avg += prob.weights[i] * torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.allclose(s["x"], avg, atol=1e-12, rtol=0)
    # padding is never sampled: every index lies below its worker's count
    assert all(bool((smp < counts[:, None]).all()) for smp in samples)


def test_scaffold_runs_unchanged_on_a_network():
    Z, y, counts = data()
    prob = NNProblem(mlp([6, 4, 3]), Z, y, counts, dtype=DT)
    meth = Scaffold(0.05, 2, check_stability=False)
    s = meth.init(prob.initial_point(0), prob)
    for _ in range(3):
        s = meth.step(s, MinibatchOracle(prob, 2), SimulatedComm(4), torch.Generator().manual_seed(0))
    assert torch.isfinite(s["x"]).all() and s["c_i"].shape == (4, prob.d)


def test_minibatch_variance_equals_enumeration_over_batches():
    Z, y, counts = data(n=2, m=5)
    counts = torch.tensor([5, 4])
    prob = NNProblem(mlp([6, 3, 3]), Z, y, counts, dtype=DT)
    x = prob.initial_point(2)
    b = 2
    var = prob.minibatch_variance(x, b)
    X = prob.stack(x)
    full = prob.grad(X)
    for i in range(2):
        devs = []
        for sub in itertools.combinations(range(int(counts[i])), b):
            s = torch.tensor([list(sub)])
            g = prob.minibatch_grad(X[i:i + 1], s, torch.tensor([i]))[0]
            devs.append(float(((g - full[i]) ** 2).sum()))
        assert var[i].item() == pytest.approx(sum(devs) / len(devs), rel=1e-10)


def test_initial_point_is_seeded_and_leaves_model_and_rng_alone():
    Z, y, counts = data()
    prob = NNProblem(mlp([6, 4, 3]), Z, y, counts, dtype=DT)
    before = prob.initial_point()
    state = torch.random.get_rng_state()
    a, b, c = prob.initial_point(7), prob.initial_point(7), prob.initial_point(8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(prob.initial_point(), before)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_bad_inputs_raise_clear_errors():
    Z, y, counts = data()
    with pytest.raises(ValueError, match="BatchNorm"):
        NNProblem(nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3)), Z, y, counts)
    with pytest.raises(ValueError, match="labels must have shape"):
        NNProblem(mlp([6, 3]), Z, y[:, :3], counts)
    with pytest.raises(ValueError, match="counts"):
        NNProblem(mlp([6, 3]), Z, y, torch.tensor([9, 0, 1, 2]))
    with pytest.raises(ValueError, match="path='mlp'"):
        NNProblem(small_cnn(1, 3, 8), torch.zeros(2, 3, 1, 8, 8), torch.zeros(2, 3, dtype=torch.long), path="mlp")
    with pytest.raises(ValueError, match="integer class labels"):
        NNProblem(mlp([6, 3]), Z, y.to(DT) + 0.5, counts)
    prob = NNProblem(mlp([6, 3]), Z, y, counts, dtype=DT)
    with pytest.raises(ValueError, match="parameter count"):
        prob.load_into_model(torch.zeros(3))


def test_memory_estimate_and_check():
    Z, y, counts = data()
    prob = NNProblem(mlp([6, 4, 3]), Z, y, counts, dtype=DT)
    est = prob.memory_estimate(batch_size=2)
    assert est["parameters"] == 3 * 4 * prob.d * 8
    assert est["total"] == est["data"] + est["parameters"] + est["activations"] > 0
    with pytest.raises(MemoryError, match="GiB"):
        prob.check_memory(2, available=1000)


def test_model_zoo():
    assert mlp_qualifies(mlp([4, 3, 2])) and mlp_qualifies(logistic(4, 2))
    assert not mlp_qualifies(small_cnn(1, 2, 8)) and not mlp_qualifies(resnet_small(1, 2, 4, groups=2))
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(2, 3, 1, 8, 8, generator=g)
    y = torch.randint(0, 2, (2, 3), generator=g)
    prob = NNProblem(resnet_small(1, 2, width=4, groups=2), Z, y)
    X = prob.initial_point(0).expand(2, -1).clone()
    G = prob.grad(X)
    assert G.shape == (2, prob.d) and torch.isfinite(G).all()
    acc = prob.accuracy(X[0], Z[0], y[0])
    assert 0.0 <= acc <= 1.0
    with pytest.raises(ValueError, match="activation"):
        mlp([3, 2], "gelu")


@pytest.mark.parametrize("path", ["mlp", "vmap"])
@pytest.mark.parametrize("lam", [0.0, 0.2])
def test_fused_minibatch_step_equals_the_gradient_step(path, lam):
    """minibatch_step_ (each layer's block added straight into X) = X - lr * minibatch_grad."""
    Z, y, counts = data()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    prob = NNProblem(model, Z, y, counts, dtype=DT, path=path, lam=lam)
    X = torch.randn(4, prob.d, dtype=DT, generator=torch.Generator().manual_seed(2))
    s = torch.tensor([[0, 3], [1, 2], [5, 4], [8, 7]])
    expect = X - 0.3 * prob.minibatch_grad(X, s)
    Y = X.clone()
    out = prob.minibatch_step_(Y, s, 0.3)
    assert out is Y and torch.allclose(Y, expect, atol=1e-14, rtol=0)
    idx = torch.tensor([3, 1])
    Y2 = X[idx].clone()
    prob.minibatch_step_(Y2, s[:2], 0.3, idx)
    assert torch.allclose(Y2, X[idx] - 0.3 * prob.minibatch_grad(X[idx], s[:2], idx), atol=1e-14, rtol=0)


def test_returned_gradients_do_not_alias_the_workspace():
    """The MLP path reuses scratch tensors between calls; what it returns must stay put."""
    Z, y, counts = data()
    prob = NNProblem(mlp([6, 5, 3]), Z, y, counts, dtype=DT, path="mlp")
    X1, X2 = (torch.randn(4, prob.d, dtype=DT, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    s = torch.tensor([[0, 3], [1, 2], [5, 4], [8, 7]])
    G1 = prob.minibatch_grad(X1, s)
    keep = G1.clone()
    L1 = prob.loss(X1)
    keep_loss = L1.clone()
    prob.minibatch_grad(X2, s)
    prob.grad(X2)
    prob.loss(X2)
    assert torch.equal(G1, keep) and torch.equal(L1, keep_loss)
    assert not torch.equal(G1, prob.minibatch_grad(X2, s))


@pytest.mark.parametrize("method", ["fedavg", "scaffold"])
def test_prefetched_fused_local_steps_equal_step_by_step_oracle_calls(method):
    """local_steps draws all K minibatches at once and steps in place; the result equals K plain
    oracle.grad calls with the same generator (float64, to rounding)."""
    from hetlab.algorithms.base import local_steps
    from hetlab.problems import Oracle
    Z, y, counts = data()
    prob = NNProblem(mlp([6, 5, 3]), Z, y, counts, dtype=DT)
    oracle = MinibatchOracle(prob, 3)
    X = prob.initial_point(0).expand(4, -1)
    drift = torch.randn(4, prob.d, dtype=DT) if method == "scaffold" else None
    got = local_steps(X, oracle, None, 4, 0.2, torch.Generator().manual_seed(7), drift=drift)

    class PlainOracle(Oracle):  # no draw_steps: one sample per call
        stochastic = True

        def grad(self, X, idx=None, generator=None):
            return oracle.grad(X, idx, generator)
    want = local_steps(X, PlainOracle(prob), None, 4, 0.2, torch.Generator().manual_seed(7), drift=drift)
    assert torch.allclose(got, want, atol=1e-14, rtol=0)
    Y = X.clone()
    gen = torch.Generator().manual_seed(7)
    for _ in range(4):
        Y = Y - 0.2 * (oracle.grad(Y, None, gen) + (0 if drift is None else drift))
    assert torch.allclose(got, Y, atol=1e-14, rtol=0)


@pytest.mark.parametrize("path", ["mlp", "vmap"])
def test_autocast_bfloat16_runs_the_products_in_low_precision_and_keeps_float32_state(path):
    """Mixed precision: gradients within bf16 accuracy of the float32 ones (and measurably different,
    so the low precision is really used), both paths agree, parameters stay float32, training works."""
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(3, 40, 12, generator=g)
    y = (Z @ torch.randn(12, 4, generator=g)).argmax(-1)  # learnable labels
    torch.manual_seed(0)
    model = mlp([12, 16, 4])
    full = NNProblem(model, Z, y, path=path)
    amp = NNProblem(model, Z, y, path=path, autocast=torch.bfloat16)
    X = full.initial_point().expand(3, -1).clone()
    G32, G16 = full.grad(X), amp.grad(X)
    rel = float((G16 - G32).norm() / G32.norm())
    assert G16.dtype == torch.float32 and 1e-5 < rel < 3e-2, rel
    s = torch.tensor([[0, 5, 9]] * 3)
    assert 1e-5 < float((amp.minibatch_grad(X, s) - full.minibatch_grad(X, s)).norm()
                        / full.minibatch_grad(X, s).norm()) < 3e-2
    Y = X.clone()
    amp.minibatch_step_(Y, s, 0.1)
    assert Y.dtype == torch.float32 and torch.allclose(Y, X - 0.1 * amp.minibatch_grad(X, s), atol=1e-6)
    assert abs(float(amp.loss(X).mean() - full.loss(X).mean())) < 2e-2
    meth, oracle = FedAvg(0.2, 3, check_stability=False), MinibatchOracle(amp, 8)
    state, gen = meth.init(X[0], amp), torch.Generator().manual_seed(1)
    before = float(full.loss(full.stack(state["x"])).mean())
    ref = meth.init(X[0], full)
    gen_ref = torch.Generator().manual_seed(1)
    for _ in range(30):
        state = meth.step(state, oracle, SimulatedComm(3), gen)
        ref = meth.step(ref, MinibatchOracle(full, 8), SimulatedComm(3), gen_ref)
    after, after_ref = (float(full.loss(full.stack(s_["x"])).mean()) for s_ in (state, ref))
    assert state["x"].dtype == torch.float32 and after < 0.7 * before
    assert abs(after - after_ref) < 0.05 * before  # same minibatches: the bf16 run tracks the float32 one


def test_autocast_paths_agree_and_bad_settings_raise():
    g = torch.Generator().manual_seed(2)
    Z = torch.randn(2, 30, 8, generator=g)
    y = torch.randint(0, 3, (2, 30), generator=g)
    torch.manual_seed(1)
    model = mlp([8, 10, 3])
    a = NNProblem(model, Z, y, path="mlp", autocast=torch.bfloat16)
    b = NNProblem(model, Z, y, path="vmap", autocast=torch.bfloat16)
    X = a.initial_point().expand(2, -1).clone()
    assert float((a.grad(X) - b.grad(X)).norm() / b.grad(X).norm()) < 3e-2
    with pytest.raises(ValueError, match="autocast must be"):
        NNProblem(model, Z, y, autocast=torch.float64)
    with pytest.raises(ValueError, match="float32 parameters"):
        NNProblem(model, Z.double(), y, dtype=torch.float64, autocast=torch.bfloat16)
