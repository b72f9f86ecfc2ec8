"""Generated samples: one class per physics sample, configured by conf/sample/<name>.yaml."""
