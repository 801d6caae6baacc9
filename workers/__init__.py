"""Workers: the agent that polls ``/next-trial``, runs trials with a backend and reports."""
