"""The ``radpair`` command-line shell: wires core, listener, pipeline and training together."""
