"""Entry points into other systems' runtimes: ``ray_data`` (bulk inference on Ray Data; the `ray` extra)."""
