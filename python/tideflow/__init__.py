"""tideflow: an embeddable durable workflow engine for Python with a Rust core."""
