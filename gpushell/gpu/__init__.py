"""GPUs: device nodes, the NVIDIA driver files, who uses which GPU, the login banner's snapshot."""
