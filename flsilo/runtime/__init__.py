"""Runtime: the one error tree and code registry, signals, fault points, CPU count, notices
and progress. Never imports torch."""
