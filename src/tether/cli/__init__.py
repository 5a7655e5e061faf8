"""The ``tether`` command: reads configuration and secrets once, passes typed values down."""
