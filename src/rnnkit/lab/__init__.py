"""The lab: experiments that show why GRU and LSTM exist (the chapter's section 4.1.2.8).

Each experiment is a function that returns its numbers, a table printer and a plot, and an
``rnnkit lab NAME`` command that prints the table and writes its figures into ``--out DIR``
(default ``lab-NAME``), saying where:

- :mod:`~rnnkit.lab.gradients` -- ||dL/dh_t|| over 150 steps: vanishing and exploding;
- :mod:`~rnnkit.lab.memory` -- the adding and copy problems with equal parameter budgets;
- :mod:`~rnnkit.lab.agreement` -- the chapter's "The cat, which ..., was full" as data;
- :mod:`~rnnkit.lab.neurons` -- what single hidden units of a trained language model track.
"""

from .gradients import GradientNorms, gradient_norms, gradients_table, plot_gradients

__all__ = ["GradientNorms", "gradient_norms", "gradients_table", "plot_gradients"]
