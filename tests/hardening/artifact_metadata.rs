//! Hardening: artifact_metadata (filled in by the change that adds its cases).
