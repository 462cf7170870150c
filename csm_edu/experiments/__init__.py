"""Studies the lessons and benchmarks run, built only from core calls.

- :mod:`~csm_edu.experiments.timing`: step timers (one objective, several in turns, against D).
- :mod:`~csm_edu.experiments.grid_cost`: the cost of a grid normaliser against D (lesson 01).
- :mod:`~csm_edu.experiments.snapshots`: training with density/score snapshots (lesson 03).
- :mod:`~csm_edu.experiments.sweeps`: DSM models over a sweep of noise levels (lesson 05).
- :mod:`~csm_edu.experiments.toy_density`: AR-CSM and MLE baselines on 2-D toys (lesson 07).
- :mod:`~csm_edu.experiments.aem_study`: importance-sampled normalisers and the AEM comparison (lesson 08).
- :mod:`~csm_edu.experiments.scaling`, :mod:`~csm_edu.experiments.stability`: cost against D and
  stability across seeds of SM, SSM, DSM and CSM (lesson 09).
- :mod:`~csm_edu.experiments.images`: AR-CSM and baselines on images: bits/dim, sampling,
  denoising, anomaly detection (lessons 10, 11).
- :mod:`~csm_edu.experiments.vae_study`: score estimators and implicit-encoder VAEs (lesson 12).
- :mod:`~csm_edu.experiments.train_images`: the image-training command
  (``python -m csm_edu.experiments.train_images CONFIG``; also under ``torchrun``).

Nothing in the core (the top-level modules, ``models``, ``data``) imports from here.
"""
