"""Query ──► plan ──► DataFrame: the plan IR, table metadata, the planner agent and the compiler."""
