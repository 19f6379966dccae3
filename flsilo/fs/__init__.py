"""File-system safety: untrusted files opened once and read bounded, atomic writes and the
workspace lock, hash-chained JSON lines, exact JSON records, terminal-safe text. Never
imports torch."""
