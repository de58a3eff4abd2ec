# Shared set-up for the bats tests: tools from $BIN (tests/run sets it), the real data
# beside the repository, and a tiny record writer that needs no Python.
BIN=${BIN:-$BATS_TEST_DIRNAME/../../bin}
ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
DATA=$ROOT/../shared/data
BCCD=$DATA/bccd

# under_mpi: for tests that run tools under mpirun. Open MPI's libraries keep
# allocations to the end and unload their components in MPI_Finalize, so under the
# sanitizer build LeakSanitizer would report them (from modules it can no longer name);
# leak checks stay on for every test that runs no MPI.
under_mpi() {
	export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
	[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # containers run as root
}

# exits_within PID TENTHS: 0 once PID has exited, 1 if it still runs after TENTHS/10 s
exits_within() {
	local t
	for t in $(seq "$2"); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	! kill -0 "$1" 2>/dev/null
}
