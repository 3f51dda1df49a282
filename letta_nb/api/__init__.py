"""The resources of the public API, one module each (letta_nb/client.py holds Client and connect).

``client.agents`` (agents.py) with ``.messages``, ``.blocks``, ``.passages``, ``.tools``, ``.files`` per
agent; ``client.tools`` (tools.py). Each is a thin shell over one runtime service per operation.
"""
