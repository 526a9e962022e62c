"""How the project speaks HTTP, for the data and weights downloads and for predict's URLs."""

TIMEOUT = 30.0  # seconds a socket may stay silent
USER_AGENT = "hotdog-pipeline/0.1 (python-urllib)"
