"""`make ui`: serve the flows as deployments on a Prefect server (the one at PREFECT_API_URL,
or a local one started for the purpose) and print the UI's address. Ctrl-C stops both.
Run from the repo root: python -m flows.ui
"""

from __future__ import annotations

from hotdog.runner.prefect_server import running_server

DEPLOYMENT = "local"


def main() -> None:
    with running_server() as api_url:
        from prefect import serve
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.experiments import hotdog_experiments
        from flows.pipeline import hotdog_pipeline
        from flows.predict import hotdog_predict

        ui = api_url.rstrip("/").removesuffix("/api")
        print(f"Prefect UI: {ui}  (Deployments -> hotdog-pipeline, hotdog-experiments or hotdog-predict -> "
              f"{DEPLOYMENT} -> Run)", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            # limit=1 across both: two runs at once would collide on DVC's repo lock.
            serve(hotdog_pipeline.to_deployment(name=DEPLOYMENT, description="The hotdog DVC pipeline, one task "
                                                                             "per stage"),
                  hotdog_experiments.to_deployment(name=DEPLOYMENT, description="The chapter's exercises as DVC "
                                                                                "experiments, compared"),
                  hotdog_predict.to_deployment(name=DEPLOYMENT, description="Score a folder of photos or a list "
                                                                            "of URLs with a trained model"),
                  limit=1)


if __name__ == "__main__":
    main()
