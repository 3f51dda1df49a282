"""letta_nb: a Letta-style stateful agent runtime inside a Jupyter kernel."""
