"""The hotdog library: every stage's logic, once. `stages/` (DVC's entry points), `flows/`
(Prefect), `benchmarks/` and the `hotdog` command call it; it imports none of them."""
