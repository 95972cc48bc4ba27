#!/usr/bin/env bash
# The whole suite, in two pytest processes side by side (what `make test` runs once the stack is up).
#
# Some tests bring up servers of their own and never touch the shared local stack: the ha package
# (the ha profile, in network namespaces) and the chaos scenarios and nemesis (a private stack on
# ports of its own, which they SIGKILL). tests/conftest.py marks them ``own_servers`` by the fixtures
# they use. They run, one after the other, in a second process while every other test runs in the
# first, in order, on the shared stack (its ports, databases and Redis DBs), as always. The second
# part's output follows the first's; the exit status is the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .stack
rm -f .stack/pytest-hang*.txt
beside_log=.stack/pytest-beside.log
BP_TEST_PART=beside .venv/bin/pytest -q -p no:cacheprovider -m own_servers >"$beside_log" 2>&1 &
beside=$!
trap 'kill "$beside" 2>/dev/null' EXIT  # a Ctrl-C or a kill of this script takes it along
.venv/bin/pytest -q -m "not own_servers"
main_rc=$?
wait "$beside"
beside_rc=$?
trap - EXIT
echo "========== the tests on servers of their own (ran beside the rest) =========="
cat "$beside_log"
cat .stack/pytest-hang*.txt >&2 2>/dev/null
for rc in "$main_rc" "$beside_rc"; do
  if [ "$rc" -eq 5 ]; then
    echo 'test: pytest collected no tests' >&2
    exit 1
  fi
done
if [ "$main_rc" -ne 0 ]; then exit "$main_rc"; fi
exit "$beside_rc"
