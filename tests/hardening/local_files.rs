//! Hardening: local_files (filled in by the change that adds its cases).
