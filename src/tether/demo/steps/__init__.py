"""The demo's ten steps, one module per step or per related pair, each over a ``DemoState``.

A step is a function ``step(state) -> Outcome``: it reads what earlier steps produced from
the state, adds what it makes, and returns what it observed. ``tether.demo.story`` runs them
in order and reports them.
"""
