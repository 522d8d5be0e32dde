//! Hardening: processes (filled in by the change that adds its cases).
