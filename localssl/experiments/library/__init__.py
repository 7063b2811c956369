"""This library's own studies, not a paper's table: accuracy at small CPU budgets (the core presets, the CPU
tables, the probe protocols, learning curves), the speedrun (time to accuracy) and the fault injection (kill -9 and
resume). Each declares its cells for the engine (:mod:`localssl.experiments.engine`), except the fault injection,
which measures this machine."""
