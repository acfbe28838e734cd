#!/usr/bin/env bash
# Every GPU trainer profile of one baked project on all of this machine's GPUs: `fit` for 4
# epochs (which tests the best checkpoint), then `test` and `predict` again from each sharded
# run's checkpoint in new processes. Prints one summary line per command; full logs in LOGS.
# Usage: benchmarks/strategies.sh PROJECT [LOGS]    (PROFILES="gpu ddp" picks profiles)
set -u
project=$(cd "$1" && pwd)
logs=$(mkdir -p "${2:-$project/strategy-logs}" && cd "${2:-$project/strategy-logs}" && pwd)
package=$(basename "$(dirname "$(find "$project/src" -mindepth 2 -maxdepth 2 -name __main__.py)")")
cd "$project" || exit 1
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=offline

step() {  # name, subcommand, arguments...: runs it, prints its exit status, time and result
    local name=$1 start=$SECONDS; shift
    timeout 300 python3 -m "$package" "$@" --trainer.enable_progress_bar=false >"$logs/$name.log" 2>&1
    local status=$?
    echo "== $name: exit $status, $((SECONDS - start)) s"
    grep -E "^(Test|Predictions): |MEMBER: " "$logs/$name.log" | sort -u
    [ "$status" -eq 0 ] || tail -5 "$logs/$name.log"
}

for profile in ${PROFILES:-gpu ddp fsdp deepspeed}; do
    step "fit-$profile" fit --config configs/default.yaml \
        --trainer "configs/trainer/$profile.yaml" --trainer.max_epochs 4 \
        --trainer.logger configs/logger/csv.yaml --run.root "$logs/runs" --run.name "$profile"
    run="$logs/runs/$profile"
    case $profile in fsdp | deepspeed) ;; *) continue ;; esac
    for subcommand in test predict; do
        step "$subcommand-$profile" "$subcommand" --config "$run/config.yaml" \
            --trainer "configs/trainer/$profile.yaml" --ckpt_path "$run/checkpoints/last.ckpt"
    done
done
