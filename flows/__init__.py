"""Prefect orchestration of the DVC pipeline: flows/pipeline.py holds the flow, flows/ui.py
starts a local Prefect server and serves it. No stage logic lives here."""
