"""Theory of local vs global SSL (CLAPP++, Delrocq et al. 2026, Sec. 3 and App. A–B).

The networks are registered models (:mod:`localssl.models.mlp`: deep linear and ReLU MLPs with
orthonormal / semi-orthonormal / standard init; :mod:`localssl.models.linear_convnet`), the losses are
the common contrastive formalism (:mod:`localssl.objectives.contrastive`: type 1/2, f softplus / linear /
hinge, L2-regularised and low-rank ``B``), and the comparison with backprop is
:mod:`localssl.evaluate.alignment`. This package adds what the theorems assume on top of that:
:mod:`localssl.theory.feedback` puts every ``B`` at its optimum for the batch (L-BFGS, to a reported
tolerance), which is the separation of timescales of Theorem 3.1.
"""

from localssl.theory.feedback import FeedbackSolution, randomize_feedback, solve_feedback, solve_rule_feedback

__all__ = ["FeedbackSolution", "randomize_feedback", "solve_feedback", "solve_rule_feedback"]
