#!/usr/bin/env bash
# What only a GPU can show, in one table: runs every benchmarks/gpu_checks/check_*.py.
#
#   benchmarks/gpu_check.sh              # from anywhere; uses the repository's .venv
#   PYTHON=python3 benchmarks/gpu_check.sh
#   GPU_CHECK_TIMEOUT=280 benchmarks/gpu_check.sh   # seconds per check file (default 280)
#   GPU_CHECKS_DIR=path benchmarks/gpu_check.sh      # other check files (the runner's own tests)
#
# Each check file prints result rows on stdout as
#   CHECK<TAB>name<TAB>ok|FAIL|skip|value<TAB>detail
# and exits 0 when it could only skip (no GPU, or it needs 2). Anything else a
# check prints is shown as its log. A check file that exits non-zero or times
# out adds a FAIL row. The script exits 1 if any row FAILed, else 0; on a
# machine without a CUDA GPU it finishes with "no GPU" and exits 0.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-$ROOT/.venv/bin/python}"
LIMIT="${GPU_CHECK_TIMEOUT:-280}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" PYTHONUNBUFFERED=1
rows="$(mktemp)"; out="$(mktemp)"
trap 'rm -f "$rows" "$out"' EXIT

gpus="$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)"
echo "gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname), CUDA GPUs visible to torch: $gpus" >&2
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    | sed 's/^/gpu_check:   /' >&2
fi

shopt -s nullglob
checks=("${GPU_CHECKS_DIR:-benchmarks/gpu_checks}"/check_*.py)
for check in "${checks[@]}"; do
  echo "gpu_check: --- $check" >&2
  start=$SECONDS
  timeout --kill-after=10 "$LIMIT" "$PY" "$check" >"$out"  # its stderr shows live, as its log
  rc=$?
  grep -P '^CHECK\t' "$out" >>"$rows"
  grep -vP '^CHECK\t' "$out" | sed 's/^/    /' >&2
  if [ "$rc" -ne 0 ]; then
    why="exit $rc"; [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="timed out after ${LIMIT}s"
    printf 'CHECK\t%s\tFAIL\t%s\n' "$(basename "$check" .py)" "$why" >>"$rows"
  fi
  echo "gpu_check: --- $check: ${rc}, $((SECONDS - start)) s" >&2
done

"$PY" - "$rows" "$gpus" "${#checks[@]}" <<'EOF'
import sys

path, gpus, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = []
for line in open(path, encoding="utf-8"):
    parts = line.rstrip("\n").split("\t")
    rows.append((parts + ["", "", "", ""])[1:4])
header = ("check", "result", "detail")
widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
print()
for r in [header, tuple("-" * w for w in widths) + ("-" * 6,), *rows]:
    print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
failed = [r for r in rows if r[1] == "FAIL"]
print()
if failed:
    print(f"result: {len(failed)} of {len(rows)} checks FAILED")
elif gpus == 0:
    print(f"result: no GPU on this machine: {files} check files ran and skipped; nothing was measured")
else:
    print(f"result: all {len(rows)} checks passed or measured on {gpus} GPU(s)")
sys.exit(1 if failed else 0)
EOF
