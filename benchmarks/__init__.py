"""Speed benchmarks: the seed's own training code against the project's training stage."""
