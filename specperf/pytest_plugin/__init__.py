"""specperf's pytest plugin: options, the session object and hookspecs. Nothing heavy until a suite is collected."""
