"""Checkpoint checker for CMU 11-667 Fall 2023 Assignment 2, question 2.6 (test PPL < 50).

    lmgrade checkpoints cmu_11667_a2 SUBMISSIONS --test-tokens test.npz -o results.csv
    python -m tools.checkpoints checkpoints cmu_11667_a2 SUBMISSIONS --test-tokens test.npz
    python -m tools.checkpoints demo -o demo-out/checkpoints

Modules: ``export`` (Gradescope export / folders), ``loader`` (safe loading and validation),
``config_file`` (the student's YAML, FLOP budget), ``reference_model`` (the reference
DecoderLM, pre-LN and post-LN), ``token_file``, ``perplexity`` (the protocol and the fast
scoring path), ``worker`` (one device: prefetching, scoring, rows), ``runner`` (workers,
shards, the variant rule), ``settings``, ``results`` (CSV/JSON rows, merge), ``cli``,
``corpus`` + ``recipe`` (synthetic data and real trained checkpoints), ``demo``.
Measured figures: ``BENCHMARKS-checkpoints.md`` at the repository root.

Splitting a large class across nodes with a Slurm job array (one GPU per task; every task
writes its shard, the last step merges and checks that no shard is missing)::

    #!/bin/bash
    #SBATCH --job-name=ppl-check
    #SBATCH --array=1-8
    #SBATCH --gres=gpu:1
    #SBATCH --cpus-per-task=8
    #SBATCH --time=00:30:00
    #SBATCH --output=logs/ppl-%A_%a.out
    source .venv/bin/activate
    lmgrade checkpoints cmu_11667_a2 /data/export --test-tokens /data/test.npz \\
        --device cuda --shard ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT} \\
        --no-progress -o results/shard-${SLURM_ARRAY_TASK_ID}.csv

    # then, after the array (sbatch --dependency=afterok:<array job id> ...):
    lmgrade checkpoints-merge results/shard-*.json -o results/all.csv \\
        --gradescope-csv results/gradescope.csv

On a node with several GPUs, ``--device cuda`` starts one worker process per GPU; shards
and workers combine (shard K of N, then split between the node's GPUs).
"""
