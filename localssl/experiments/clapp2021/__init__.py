"""The studies of CLAPP (Illing et al. 2021): Table 1 (STL-10 rows) and Table 5 (gradient-isolated modules),
declared as tables of the harness. Table 1's speech column is :mod:`localssl.experiments.clapp2021.speech`."""
