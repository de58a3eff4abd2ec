# Shared set-up for the bats tests: tools from $BIN (tests/run sets it), the real data
# beside the repository, and a tiny record writer that needs no Python.
BIN=${BIN:-$BATS_TEST_DIRNAME/../../bin}
ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
DATA=$ROOT/../shared/data
BCCD=$DATA/bccd
