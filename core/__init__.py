"""radpair's bottom layer: settings, the SQL archive, the instance store, small DICOM helpers.

Nothing in here imports listener, pipeline, training or the command-line shell.
"""
