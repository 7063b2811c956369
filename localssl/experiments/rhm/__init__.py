"""The Random Hierarchy Model studies (Cagnetta et al. 2024; CLAPP++'s RHM claim): test accuracy against the
number of training samples P/P* per rule (:mod:`~localssl.experiments.rhm.sample_complexity`, each point a cell of
the engine), the same rules with one setting changed (:mod:`~localssl.experiments.rhm.settings`), and the training
loop they share (:mod:`~localssl.experiments.rhm.loop`)."""
