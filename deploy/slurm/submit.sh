#!/bin/bash
# Submit a sweep to SLURM: prepare.sbatch (creates the study once), then the sweep.sbatch array, which
# starts only after prepare succeeded (--dependency=afterok:<prepare job id>) and is cancelled if it fails
# (--kill-on-invalid-dep=yes).
#
#   deploy/slurm/submit.sh CONFIG [SBATCH OPTION ...]
#
# CONFIG is passed to both jobs as an absolute path (SWEEP_CONFIG). The options after it go to the array
# only and override its #SBATCH lines (--array=0-15, --cpus-per-task=8, --time=1-00:00:00, ...); options
# for both jobs go in sbatch's environment variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_QOS).
# SWEEPS_STORAGE and MLFLOW_TRACKING_URI (or SWEEPS_ENV_FILE) must be exported here: the jobs get this
# environment (--export=ALL,...), and SLURM keeps it with the job. So passwords (PGPASSWORD,
# MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN) must not be: they go in the file SWEEPS_ENV_FILE
# names (yours, chmod 600), which the jobs read on the node; submit.sh refuses them here.
# Prints the two job ids.
set -euo pipefail

usage="usage: $(basename "$0") CONFIG [SBATCH OPTION ...]"
if (( $# < 1 )); then
    echo "$usage" >&2
    exit 2
fi
config="$1"
shift
if [[ ! -f "$config" ]]; then
    echo "submit.sh: no sweep config at $config" >&2
    exit 2
fi
config="$(cd "$(dirname "$config")" && pwd -P)/$(basename "$config")"  # the jobs may start elsewhere
if [[ "$config" == *,* ]]; then  # --export splits its list at commas
    echo "submit.sh: the config path may not hold a comma (sbatch --export splits at commas): $config" >&2
    exit 2
fi
for var in PGPASSWORD MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN; do
    if [[ -n "${!var:-}" ]]; then
        echo "submit.sh: $var is set here: sbatch --export=ALL would give it to SLURM, which keeps a job's" \
             "environment; unset it and put it in the file SWEEPS_ENV_FILE names (chmod 600)" >&2
        exit 2
    fi
done
if [[ -z "${SWEEPS_ENV_FILE:-}" ]]; then
    for var in SWEEPS_STORAGE MLFLOW_TRACKING_URI; do
        if [[ -z "${!var:-}" ]]; then
            echo "submit.sh: $var is not set (export it, or name an env file in SWEEPS_ENV_FILE)" >&2
            exit 2
        fi
    done
fi

if [[ -n "${SWEEPS_ENV_FILE:-}" ]]; then
    if [[ ! -r "$SWEEPS_ENV_FILE" ]]; then
        echo "submit.sh: SWEEPS_ENV_FILE=$SWEEPS_ENV_FILE is not a readable file" >&2
        exit 2
    fi
    if [[ ! -O "$SWEEPS_ENV_FILE" ]] || (( 8#$(stat -L -c %a "$SWEEPS_ENV_FILE") & 8#077 )); then
        echo "submit.sh: SWEEPS_ENV_FILE=$SWEEPS_ENV_FILE may hold passwords, so it must be yours and readable by you only (chmod 600 it)" >&2
        exit 2
    fi
    SWEEPS_ENV_FILE="$(cd "$(dirname "$SWEEPS_ENV_FILE")" && pwd -P)/$(basename "$SWEEPS_ENV_FILE")"
    export SWEEPS_ENV_FILE
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
export_list="ALL,SWEEP_CONFIG=$config"

prepare_out="$(sbatch --parsable --export="$export_list" "$here/prepare.sbatch")"
prepare_id="${prepare_out%%;*}"  # --parsable prints "jobid" or "jobid;cluster"
if [[ ! "$prepare_id" =~ ^[0-9]+$ ]]; then
    echo "submit.sh: sbatch did not print a job id for prepare.sbatch: $prepare_out" >&2
    exit 1
fi

sweep_out=""
sweep_rc=0
sweep_out="$(sbatch --parsable --export="$export_list" --dependency="afterok:$prepare_id" \
                    --kill-on-invalid-dep=yes "$@" "$here/sweep.sbatch")" || sweep_rc=$?
sweep_id="${sweep_out%%;*}"
if (( sweep_rc != 0 )) || [[ ! "$sweep_id" =~ ^[0-9]+$ ]]; then
    echo "submit.sh: submitting sweep.sbatch failed (exit $sweep_rc): $sweep_out; cancelling prepare job $prepare_id" >&2
    scancel "$prepare_id" || true
    exit 1
fi

echo "prepare job $prepare_id"
echo "sweep array job $sweep_id (starts after $prepare_id succeeds): squeue -j $sweep_id; logs slurm-${sweep_id}_<task>.out"
