"""The ``mfms`` command: the one place that may import the library, the server and the
workers together (``serve``, ``db``, ``worker``, ``study``, ``demo``, ``data``, ``bench``)."""
