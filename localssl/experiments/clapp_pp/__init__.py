"""The studies of CLAPP++ (Delrocq et al. 2026): Table 2 and Table A3 (with its CPU-budget companions), the
theory figures with fixed weights (Fig. 2, 3A, 4B, A1) and the alignment figures during training (Fig. 3B, 4C),
each a declaration of cells for the engine (:mod:`localssl.experiments.engine`)."""
