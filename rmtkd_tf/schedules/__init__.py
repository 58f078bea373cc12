"""Compression schedules: how analysis, surgery and distillation are ordered.

- `budgeted` (the default): analyse every layer once, allocate ranks across all layers for a
  parameter/FLOP target or the largest cut within `max_drop`, cut once, and spend the whole
  distillation budget on that final student, from the original teacher.
- `iterative`: the paper's loop, one layer (or block, or all) per step, each step distilled from
  the model before it, rolled back when validation drops too far.

Each is a `run(model, data, config, folder, state, log) -> student` over the shared steps of
`rmtkd_tf.steps`; `rmtkd_tf.compression.run` creates or resumes the run folder and calls it.
"""

SCHEDULES = ("budgeted", "iterative")
