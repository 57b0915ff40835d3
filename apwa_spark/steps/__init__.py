"""Step kinds, one module each. A module defines its config model and ``KIND``, an
:class:`apwa_spark.plan.step.StepKind`; :func:`apwa_spark.plan.step.step_kinds` finds it. To add a
kind, add a module here (or register one under the ``apwa_spark.steps`` entry-point group)."""
