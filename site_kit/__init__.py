"""The silo side of flsilo: site workspace, local data, training and bundle export."""
