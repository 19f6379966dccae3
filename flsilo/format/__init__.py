"""The artifact format: strict safetensors, the versioned manifest and its JSON encoding, one
read of a file, parsing, verifying and writing a signed file. Never imports torch."""
