"""The hotdog pipeline's stages. Each `stages/<name>.py` is one DVC stage, run as
`python -m stages.<name>` from the repo root; the other modules are shared helpers."""
