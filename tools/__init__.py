"""Tools the tests and the CI use that are not tests: a real single-node SLURM cluster
(``python -m tools.slurm_cluster up|down``) and CUDA's autocast policy registered for the CPU."""
