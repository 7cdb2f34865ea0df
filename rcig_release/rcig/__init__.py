"""RCIG: dataset distillation with convexified implicit gradients (Loo et al., ICML 2023).

Read in this order:

* ``linearize.py``: the centred jvp-linearisation of the network around a pool model, the flat
  vector of trainable tangents, and the support-set Jacobian.
* ``krr.py``: the kernel-ridge final layer, the inner (convex) loss and the outer loss.
* ``solvers.py``: the inner solve and the Hessian-inverse-vector product (Adam, as the authors;
  exact Woodbury solves for tests and as an option).
* ``state.py``: the distillation state (distilled set, optimisers, EMA, model pool, learning rates).
* ``step.py``: one outer iteration (one ``jax.jit`` call): inner solve, direct gradient, HVP,
  implicit gradient, clipping, AdaBelief, EMA, pool training, online learning-rate adaptation.
* ``tune.py``: the initial inner/HVP learning-rate search.
"""
