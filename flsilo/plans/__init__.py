"""What a federation agrees on: the plan and schedule, preprocessing, federation.toml and the
plan file of hub init --config. Never imports torch."""
