"""The numbers: clinical per-class figures, detection mAP, box geometry, detection labels and
string metrics. Never imports torch."""
