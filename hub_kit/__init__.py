"""The hub side of flsilo: workspace, enrolment, intake gates, aggregation, packages, audit."""
