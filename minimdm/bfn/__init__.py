"""Bayesian flow networks (Graves et al. 2023, arXiv 2308.07037) and their fast SDE/ODE solvers (Xue et al. 2024,
arXiv 2404.15766).

One idea per module:

* ``continuous``  -- schedule, Bayesian update, flow distribution, losses and the original sampler
* ``discretised`` -- K-bin output distribution on [-1, 1], its losses and sampler
* ``discrete``    -- K-class BFN: schedule, update, flow, losses and sampler
* ``kl``          -- Monte-Carlo KL(Gaussian sender || mixture receiver) for the discrete-time losses
* ``sde``         -- forward SDEs, reverse SDEs and probability-flow ODEs; DSM weights; RK4 reference
* ``grids``       -- uniform-t and uniform-lambda time grids starting at eta
* ``continuous_solvers`` -- BFN-Solver++1/++2 (multistep and single-step), SDE-BFN-Solver++1/++2
* ``discrete_solvers``   -- BFN-Solver1/2 (multistep and single-step), SDE-BFN-Solver1/2
* ``probes``      -- a D-dimensional Gaussian mixture with its exact denoiser and exact moments
* ``nets``        -- small networks: an MLP for 2-D data, a conv net for 8x8 digits
* ``metrics``     -- histogram TV, energy distance, Frechet distance in digit-classifier features
* ``datasets``    -- the 2-D mixture and the 8x8 digits, scaled to [-1, 1], in bins, or binarised
* ``recipes``     -- the small training runs of notebooks 09 and 10, cached on disk

Exact denoisers live in ``minimdm.toys.gmm`` and ``minimdm.toys.enumerable_discrete``.
"""
